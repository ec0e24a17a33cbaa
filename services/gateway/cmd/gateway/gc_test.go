package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"testing"

	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
)

// TestGCPercentIsTheProcessGCTarget: GATEWAY_GC_PERCENT becomes the process's garbage collection
// target (what the runtime reports as /gc/gogc:percent). Not parallel: the target is the process's,
// and the parallel tests' gateways set the default; they wait until this one has ended.
func TestGCPercentIsTheProcessGCTarget(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })
	b := fakes.Start(t)
	ctx, stop := context.WithCancel(context.Background())
	gw := startGateway(ctx, t, map[string]string{
		"GATEWAY_PROFILE":                     "dev",
		"GATEWAY_HTTP_ADDR":                   "127.0.0.1:0",
		"GATEWAY_TARGETS_ORDER_ADDRESSES":     b.Addrs["order"],
		"GATEWAY_TARGETS_INVENTORY_ADDRESSES": b.Addrs["inventory"],
		"GATEWAY_TARGETS_PAYMENT_ADDRESSES":   b.Addrs["payment"],
		"GATEWAY_GC_PERCENT":                  "250",
	})
	defer func() { stop(); <-gw.done }()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if got := s[0].Value.Uint64(); got != 250 {
		t.Fatalf("GC target %d%%, want GATEWAY_GC_PERCENT's 250%%", got)
	}
}
