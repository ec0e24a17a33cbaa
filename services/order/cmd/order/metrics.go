package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// sagaMetrics registers the saga outcome counter and returns what records one saga run (app.Deps.Outcome).
func sagaMetrics(reg prometheus.Registerer) (func(domain.Status, string), error) {
	sagas := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shopmesh_saga_outcomes_total",
		Help: "Order saga runs by the status they left the order in and the cancel reason (RETRY_LATER: left PENDING for recovery).",
	}, []string{"status", "reason"})
	if err := reg.Register(sagas); err != nil {
		return nil, fmt.Errorf("saga metrics: %w", err)
	}
	return func(s domain.Status, reason string) { sagas.WithLabelValues(string(s), reason).Inc() }, nil
}

// recoveryMetrics registers the recovery worker's metrics and returns what records one pass
// (app.Deps.Recovered).
func recoveryMetrics(reg prometheus.Registerer) (func(app.RecoveryStats), error) {
	followups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shopmesh_order_followups_total",
		Help: "Follow-up work of terminal orders run by the recovery worker, by kind (compensation: release stock and void payment of a cancelled order; settlement: commit stock and capture payment of a confirmed order) and outcome (done, failed: retried after a backoff, refused: refused for good, retried at the slowest rate).",
	}, []string{"kind", "outcome"})
	unsettled := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "shopmesh_order_unsettled_orders",
		Help: "Confirmed orders older than ORDER_SETTLE_AFTER whose stock commit and payment capture are not known to be done.",
	})
	stuck := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "shopmesh_order_stuck_compensations",
		Help: "Cancelled orders whose compensation is pending longer than ORDER_STUCK_AFTER or failed ORDER_STUCK_ATTEMPTS times.",
	})
	for _, c := range []prometheus.Collector{followups, unsettled, stuck} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("recovery metrics: %w", err)
		}
	}
	return func(st app.RecoveryStats) {
		for kind, n := range map[app.FollowupKind][3]int{
			app.Compensation: {st.Compensated, st.CompensationsFailed, st.CompensationsRefused},
			app.Settlement:   {st.Settled, st.SettlementsFailed, st.SettlementsRefused},
		} {
			for i, outcome := range []string{"done", "failed", "refused"} {
				followups.WithLabelValues(string(kind), outcome).Add(float64(n[i]))
			}
		}
		if st.BacklogRead {
			unsettled.Set(float64(st.Unsettled))
			stuck.Set(float64(st.StuckCompensations))
		}
	}, nil
}
