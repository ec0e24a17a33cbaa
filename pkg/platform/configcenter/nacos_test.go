package configcenter_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/configcenter"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/nacos"
	"github.com/shopmesh/shopmesh/pkg/platform/registry/nacostest"
)

// TestNacosPublishChangesRateLimit publishes configs with the SDK's config client and watches a running
// limiter follow them; a malformed one is rejected and the previous value stays.
func TestNacosPublishChangesRateLimit(t *testing.T) {
	addr := nacostest.Require(t)
	cfg := nacos.Default(addr, nacostest.Dir(t))
	cfg.Group = fmt.Sprintf("test-%08x", rand.Uint32())
	src, err := configcenter.NewNacos(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })

	publish := nacostest.Publisher(t, cfg)
	publish("order.yaml", "rate_limit: {default: {rps: 10}}")

	f := newFixture(t, src, configcenter.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.center.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	waitRPS(t, f.limiter, 10)

	start := time.Now()
	publish("order.yaml", "rate_limit: {default: {rps: 42}}")
	waitRPS(t, f.limiter, 42)
	t.Logf("published rps 42 reached the running limiter in %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	publish("shared.yaml", "rate_limit: {max_in_flight: 9}")
	waitFor(t, func() bool { return f.limiter.Limits().MaxInFlight == 9 })
	t.Logf("shared.yaml layer applied in %v", time.Since(start).Round(time.Millisecond))

	publish("order.yaml", "rate_limit: {default: {rps: -5}}")
	publish("order.yaml", "rate_limit: {default: {rps: [}")
	// Give the rejected versions time to arrive, then check nothing changed; a valid one follows to prove
	// the listener is still delivering.
	time.Sleep(3 * time.Second)
	if got := f.limiter.Limits(); got.Default.RPS != 42 || got.MaxInFlight != 9 {
		t.Fatalf("after malformed configs limits = %+v, want rps 42, max_in_flight 9", got)
	}
	publish("order.yaml", "rate_limit: {default: {rps: 7}}")
	waitRPS(t, f.limiter, 7)
}
