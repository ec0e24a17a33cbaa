package nacos_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/configcenter"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos/nacostest"
)

// TestConfigCenterFollowsNacos runs a server with <P>_CONFIG_CENTER_BACKEND=nacos against the real
// Nacos and publishes documents the way an operator would: the running limiter, the breaker settings
// and the log level follow valid ones, an invalid one is refused and the previous settings stay.
func TestConfigCenterFollowsNacos(t *testing.T) {
	addr := nacostest.Require(t)
	svc := uniqueService("cc")
	cfg := testConfig(svc)
	cfg.Registry.Nacos = nacostest.Auth(nacos.Default(addr, nacostest.Dir(t)))
	cfg.Registry.Nacos.Group = fmt.Sprintf("cc-%08x", rand.Uint32())
	cfg.ConfigCenter.Backend = config.ConfigCenterNacos

	// The publisher is a separate SDK client, as an operator's console or CI would be.
	publish := nacostest.Publisher(t, cfg.Registry.Nacos)
	publish(svc+".yaml", "rate_limit: {default: {rps: 25}}")

	var level slog.LevelVar
	p, err := platform.New(t.Context(), cfg, quiet(), platform.WithBackends(nacos.Backend()), platform.WithLogLevel(&level))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, p.NewServer(), lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})

	waitConfig(t, "rps 25 from the document present at start", func() bool { return p.RateLimiter().Limits().Default.RPS == 25 })

	publish(configcenter.SharedDataID, "log_level: debug\nbreaker: {consecutive_failures: 11}")
	waitConfig(t, "the shared layer (log level, breaker)", func() bool {
		s, ok := p.ConfigCenter()
		return ok && level.Level() == slog.LevelDebug && s.Breaker.ConsecutiveFailures == 11
	})
	publish(svc+".yaml", "rate_limit: {default: {rps: 40}, max_in_flight: 77}")
	waitConfig(t, "rps 40 and max_in_flight 77", func() bool {
		l := p.RateLimiter().Limits()
		return l.Default.RPS == 40 && l.MaxInFlight == 77
	})

	// Refused: a negative rate. Then a valid document proves the watch still delivers, and the refused
	// one never showed in between.
	publish(svc+".yaml", "rate_limit: {default: {rps: -1}}")
	time.Sleep(2 * time.Second)
	if l := p.RateLimiter().Limits(); l.Default.RPS != 40 || l.MaxInFlight != 77 {
		t.Fatalf("after an invalid document: %+v, want rps 40 and max_in_flight 77", l)
	}
	publish(svc+".yaml", "rate_limit: {default: {rps: 9}}")
	waitConfig(t, "rps 9", func() bool { return p.RateLimiter().Limits().Default.RPS == 9 })
}

// waitConfig waits for cond: within the Nacos push, or at worst the center's 30 s re-read.
func waitConfig(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(errors.New("timed out waiting for " + what))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
