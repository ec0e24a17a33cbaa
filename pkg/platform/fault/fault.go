// Package fault injects latency and errors into chosen methods of a server, driven by config, so the
// reliability tests (R3, R4) can degrade one instance on purpose. It is off by default and the config
// package refuses it in the prod profile.
package fault

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

// Rule describes the faults injected into one method. Percentages are 0-100.
type Rule struct {
	// Delay is added before the handler runs, for DelayPercent of the calls.
	Delay        time.Duration `help:"delay added before the handler runs"`
	DelayPercent float64       `help:"share of calls delayed, percent (0-100)"`
	// AbortCode (a gRPC code name such as "UNAVAILABLE") is returned instead of running the handler, for
	// AbortPercent of the calls.
	AbortCode    string  `help:"gRPC code name (UNAVAILABLE) returned instead of running the handler"`
	AbortPercent float64 `help:"share of calls aborted, percent (0-100)"`
}

// Config switches injection on and lists the rules.
type Config struct {
	Enabled bool `help:"inject the configured faults (refused in the prod profile)"`
	// Rules maps a full method ("/pkg.Service/Method"), a service ("/pkg.Service/*") or "*" to a rule;
	// the most specific match wins.
	Rules map[string]Rule
}

// Validate reports rules that make no sense, naming the field.
func (c Config) Validate() error {
	var errs []error
	for m, r := range c.Rules {
		name := fmt.Sprintf("rules[%q]", m)
		if m != "*" && (!strings.HasPrefix(m, "/") || strings.Count(m, "/") != 2) {
			errs = append(errs, fmt.Errorf("%s: want \"/package.Service/Method\", \"/package.Service/*\" or \"*\"", name))
		}
		if r.Delay < 0 {
			errs = append(errs, fmt.Errorf("%s.delay: must be >= 0", name))
		}
		if r.DelayPercent < 0 || r.DelayPercent > 100 {
			errs = append(errs, fmt.Errorf("%s.delay_percent: must be within 0-100, got %v", name, r.DelayPercent))
		}
		if r.AbortPercent < 0 || r.AbortPercent > 100 {
			errs = append(errs, fmt.Errorf("%s.abort_percent: must be within 0-100, got %v", name, r.AbortPercent))
		}
		if r.AbortPercent > 0 {
			if c, ok := ParseCode(r.AbortCode); !ok || c == codes.OK {
				errs = append(errs, fmt.Errorf("%s.abort_code: %q is not a gRPC error code name", name, r.AbortCode))
			}
		}
	}
	return errors.Join(errs...)
}

func (c Config) rule(method string) (Rule, bool) {
	if r, ok := c.Rules[method]; ok {
		return r, true
	}
	if i := strings.LastIndexByte(method, '/'); i > 0 {
		if r, ok := c.Rules[method[:i+1]+"*"]; ok {
			return r, true
		}
	}
	r, ok := c.Rules["*"]
	return r, ok
}

// ParseCode parses a gRPC code name such as "UNAVAILABLE" or "DEADLINE_EXCEEDED".
func ParseCode(name string) (codes.Code, bool) {
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(`"` + strings.ToUpper(name) + `"`)); err != nil {
		return 0, false
	}
	return c, true
}

// Injector applies a Config. It is safe for concurrent use.
type Injector struct {
	cfg   atomic.Pointer[Config]
	rand  func() float64
	sleep func(context.Context, time.Duration) error
}

// Option customizes an Injector.
type Option func(*Injector)

// WithRand sets the source of uniform numbers in [0, 1) that decides which calls are hit (for tests).
func WithRand(f func() float64) Option { return func(i *Injector) { i.rand = f } }

// WithSleep sets how delays are waited out (for tests).
func WithSleep(f func(context.Context, time.Duration) error) Option {
	return func(i *Injector) { i.sleep = f }
}

// New returns an Injector for cfg, which must be valid.
func New(cfg Config, opts ...Option) (*Injector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("fault injection: %w", err)
	}
	i := &Injector{rand: rand.Float64, sleep: sleepCtx}
	for _, o := range opts {
		o(i)
	}
	cfg.Rules = maps.Clone(cfg.Rules) // the caller may keep editing its map
	i.cfg.Store(&cfg)
	return i, nil
}

// Update atomically replaces the configuration.
func (i *Injector) Update(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("fault injection: %w", err)
	}
	cfg.Rules = maps.Clone(cfg.Rules)
	i.cfg.Store(&cfg)
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Inject applies the faults configured for method: it may wait, and returns a non-nil error when the call
// must be aborted.
func (i *Injector) Inject(ctx context.Context, method string) error {
	cfg := i.cfg.Load()
	if !cfg.Enabled {
		return nil
	}
	r, ok := cfg.rule(method)
	if !ok {
		return nil
	}
	if r.Delay > 0 && r.DelayPercent > 0 && i.rand()*100 < r.DelayPercent {
		if err := i.sleep(ctx, r.Delay); err != nil {
			return status.Error(rpcerr.Code(err), err.Error()) // the caller's deadline or cancellation
		}
	}
	if r.AbortPercent > 0 && i.rand()*100 < r.AbortPercent {
		code, _ := ParseCode(r.AbortCode)
		return rpcerr.WithReason(code, rpcerr.ReasonFault, "fault injected", map[string]string{"method": method})
	}
	return nil
}

// UnaryServerInterceptor injects faults into unary calls.
func (i *Injector) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := i.Inject(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor injects faults at the start of streams.
func (i *Injector) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := i.Inject(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}
