package configcenter_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/configcenter"
	"github.com/shopmesh/shopmesh/pkg/platform/fault"
	"github.com/shopmesh/shopmesh/pkg/platform/ratelimit"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func base() configcenter.Settings {
	return configcenter.Settings{
		LogLevel:  slog.LevelInfo,
		RateLimit: ratelimit.Limits{Default: ratelimit.Rule{RPS: 100}, MaxInFlight: 1000, RetryAfter: 100 * time.Millisecond},
		Breaker:   breaker.Config{Enabled: true, ConsecutiveFailures: 5, OpenTimeout: 5 * time.Second, HalfOpenProbes: 3},
	}
}

type fixture struct {
	center  *configcenter.Center
	limiter *ratelimit.Limiter
	faults  *fault.Injector
	level   *slog.LevelVar
	mu      sync.Mutex
	breaker breaker.Config
}

func newFixture(t *testing.T, src configcenter.Source, opts configcenter.Options) *fixture {
	t.Helper()
	f := &fixture{level: new(slog.LevelVar)}
	var err error
	if f.limiter, err = ratelimit.New(base().RateLimit); err != nil {
		t.Fatal(err)
	}
	if f.faults, err = fault.New(fault.Config{}); err != nil {
		t.Fatal(err)
	}
	targets := configcenter.Targets{Limiter: f.limiter, Faults: f.faults, LogLevel: f.level,
		Breaker: func(c breaker.Config) error { f.mu.Lock(); f.breaker = c; f.mu.Unlock(); return nil }}
	f.center, err = configcenter.New(base(), configcenter.DataIDs("order"), src, targets, opts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLayersOverDefaults(t *testing.T) {
	t.Parallel()
	src := configcenter.NewStatic(map[string]string{
		"shared.yaml": "log_level: debug\nrate_limit:\n  default: {rps: 50, burst: 5}\n  retry_after: 250ms\nbreaker: {consecutive_failures: 7}\n",
		"order.yaml":  "rate_limit:\n  default: {rps: 20}\n  methods:\n    /shop.Order/Place: {rps: 2}\n",
	})
	f := newFixture(t, src, configcenter.Options{})
	f.center.Load(t.Context())

	got := f.limiter.Limits()
	if got.Default.RPS != 20 || got.Default.Burst != 5 || got.RetryAfter != 250*time.Millisecond || got.MaxInFlight != 1000 {
		t.Errorf("limits = %+v", got)
	}
	if got.Methods["/shop.Order/Place"].RPS != 2 {
		t.Errorf("method rule = %+v", got.Methods)
	}
	if f.level.Level() != slog.LevelDebug {
		t.Errorf("level = %v", f.level.Level())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.breaker.ConsecutiveFailures != 7 || f.breaker.HalfOpenProbes != 3 {
		t.Errorf("breaker = %+v", f.breaker)
	}
}

func TestInvalidUpdateKeepsPrevious(t *testing.T) {
	t.Parallel()
	src := configcenter.NewStatic(map[string]string{"order.yaml": "rate_limit: {default: {rps: 10}}"})
	f := newFixture(t, src, configcenter.Options{RefuseFault: true})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.center.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitRPS(t, f.limiter, 10)

	for _, bad := range []string{
		"rate_limit: {default: {rps: -1}}", // fails Validate
		"rate_limit: {default: {rps: [}",   // not YAML
		"rate_limit: {defualt: {rps: 5}}",  //nolint:misspell // unknown key, misspelled on purpose
		"log_level: loud",                  // bad level
		"fault: {enabled: true, rules: {'*': {delay: 1s, delay_percent: 100}}}", // refused in this profile
		"rate_limit: {retry_after: 5}",                                          // a duration needs a unit
	} {
		if err := f.center.Update("order.yaml", bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
		if rps := f.limiter.Limits().Default.RPS; rps != 10 {
			t.Fatalf("after %q rps = %v, want the previous 10", bad, rps)
		}
	}
	// A later valid change to another layer still combines with the last accepted order.yaml.
	src.Set("shared.yaml", "rate_limit: {max_in_flight: 7}")
	waitFor(t, func() bool { return f.limiter.Limits().MaxInFlight == 7 })
	if rps := f.limiter.Limits().Default.RPS; rps != 10 {
		t.Fatalf("rps = %v", rps)
	}
	src.Set("order.yaml", "rate_limit: {default: {rps: 3}}")
	waitRPS(t, f.limiter, 3)
}

func TestFaultApplied(t *testing.T) {
	t.Parallel()
	src := configcenter.NewStatic(nil)
	f := newFixture(t, src, configcenter.Options{})
	f.center.Load(t.Context())
	if err := f.center.Update("order.yaml", "fault: {enabled: true, rules: {'*': {abort_code: UNAVAILABLE, abort_percent: 100}}}"); err != nil {
		t.Fatal(err)
	}
	if err := f.faults.Inject(t.Context(), "/x.Y/Z"); err == nil {
		t.Fatal("fault rule not applied")
	}
	if got := f.center.Current().Fault.Rules["*"].AbortCode; got != "UNAVAILABLE" {
		t.Errorf("current = %q", got)
	}
}

func waitRPS(t testing.TB, l *ratelimit.Limiter, want float64) {
	t.Helper()
	waitFor(t, func() bool { return l.Limits().Default.RPS == want })
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// silentSource serves documents to Get but never pushes a change, like a watch whose push was lost.
type silentSource struct {
	mu   sync.Mutex
	docs map[string]string
}

func (s *silentSource) Get(_ context.Context, dataID string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.docs[dataID], nil
}

func (s *silentSource) Watch(ctx context.Context, _ string, _ func(string)) error {
	<-ctx.Done()
	return nil
}

func (s *silentSource) set(dataID, content string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs[dataID] = content
}

// A change nobody pushed still reaches the targets through the periodic re-read, and a rejected one is
// not re-applied (or re-logged) every round.
func TestResyncAppliesChangesWithoutPush(t *testing.T) {
	src := &silentSource{docs: map[string]string{"order.yaml": "rate_limit: {default: {rps: 10}}"}}
	f := newFixture(t, src, configcenter.Options{Resync: 20 * time.Millisecond})
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
	src.set("order.yaml", "rate_limit: {default: {rps: 33}}")
	waitRPS(t, f.limiter, 33)
	src.set("order.yaml", "rate_limit: {default: {rps: -1}}")
	time.Sleep(200 * time.Millisecond)
	if got := f.limiter.Limits().Default.RPS; got != 33 {
		t.Fatalf("after an invalid document rps = %v, want 33 kept", got)
	}
	src.set("shared.yaml", "rate_limit: {max_in_flight: 5}")
	waitFor(t, func() bool { return f.limiter.Limits().MaxInFlight == 5 })
}
