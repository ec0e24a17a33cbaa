package main

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shopmesh/shopmesh/services/order/internal/app"
)

// The recovery worker's passes reach the metrics: follow-ups counted by kind and outcome, the gauges
// set from the last pass that could read them.
func TestRecoveryMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	record, err := recoveryMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	record(app.RecoveryStats{Settled: 3, SettlementsFailed: 1, CompensationsRefused: 2, BacklogRead: true, Unsettled: 4, StuckCompensations: 2})
	record(app.RecoveryStats{Settled: 2}) // backlog not read: the gauges keep their values
	want := `
# HELP shopmesh_order_stuck_compensations Cancelled orders whose compensation is pending longer than ORDER_STUCK_AFTER or failed ORDER_STUCK_ATTEMPTS times.
# TYPE shopmesh_order_stuck_compensations gauge
shopmesh_order_stuck_compensations 2
# HELP shopmesh_order_unsettled_orders Confirmed orders older than ORDER_SETTLE_AFTER whose stock commit and payment capture are not known to be done.
# TYPE shopmesh_order_unsettled_orders gauge
shopmesh_order_unsettled_orders 4
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "shopmesh_order_stuck_compensations", "shopmesh_order_unsettled_orders"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "shopmesh_order_followups_total"); err != nil || n != 6 {
		t.Fatalf("follow-up series: %d %v, want 6 (2 kinds x 3 outcomes)", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "shopmesh_order_followups_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetValue() + " "
			}
			got[strings.TrimSpace(key)] = m.GetCounter().GetValue()
		}
	}
	want2 := map[string]float64{"settlement done": 5, "settlement failed": 1, "compensation refused": 2, "compensation done": 0}
	for k, v := range want2 {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}
