package nacos_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/configcenter"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos/nacostest"
	"github.com/shopmesh/shopmesh/pkg/platform/ratelimit"
)

// TestNacosPublishChangesRateLimit publishes configs with the SDK's config client and watches a running
// limiter follow them; a malformed one is rejected and the previous value stays.
func TestNacosPublishChangesRateLimit(t *testing.T) {
	addr := nacostest.Require(t)
	cfg := nacostest.Auth(nacos.Default(addr, nacostest.Dir(t)))
	cfg.Group = fmt.Sprintf("test-%08x", rand.Uint32())
	src, err := nacos.NewConfigSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })

	publish := nacostest.Publisher(t, cfg)
	publish("order.yaml", "rate_limit: {default: {rps: 10}}")

	f := newCenter(t, src)
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
	waitFor(t, 10*time.Second, "max_in_flight 9", func() bool { return f.limiter.Limits().MaxInFlight == 9 })
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

type centerFixture struct {
	center  *configcenter.Center
	limiter *ratelimit.Limiter
}

// newCenter is a config center over src reading the order service's layers into a limiter.
func newCenter(t *testing.T, src configcenter.Source) centerFixture {
	t.Helper()
	base := configcenter.Settings{
		LogLevel:  slog.LevelInfo,
		RateLimit: ratelimit.Limits{Default: ratelimit.Rule{RPS: 100}, MaxInFlight: 1000, RetryAfter: 100 * time.Millisecond},
		Breaker:   breaker.Config{Enabled: true, ConsecutiveFailures: 5, OpenTimeout: 5 * time.Second, HalfOpenProbes: 3},
	}
	limiter, err := ratelimit.New(base.RateLimit)
	if err != nil {
		t.Fatal(err)
	}
	center, err := configcenter.New(base, configcenter.DataIDs("order"), src, configcenter.Targets{Limiter: limiter},
		configcenter.Options{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return centerFixture{center: center, limiter: limiter}
}

func waitRPS(t testing.TB, l *ratelimit.Limiter, want float64) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("rps %v", want), func() bool { return l.Limits().Default.RPS == want })
}
