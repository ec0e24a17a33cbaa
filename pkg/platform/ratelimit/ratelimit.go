// Package ratelimit protects a server from more work than it can do: a token bucket per method
// (golang.org/x/time/rate) caps the request rate, and an in-flight limit per method and per server sheds
// load once that much work is already running. Rejected calls get RESOURCE_EXHAUSTED with a
// google.rpc.RetryInfo, never a 5xx. Limits can be replaced at run time with Update (an atomic swap), so a
// config center can tune them without a restart.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

// Rule limits one method. Zero values mean unlimited.
type Rule struct {
	// RPS is the sustained rate, in requests per second, of the method's token bucket.
	RPS float64 `help:"sustained requests per second of the method (0: unlimited)"`
	// Burst is the bucket size; 0 means max(1, ceil(RPS)).
	Burst int `help:"token bucket size (0: max(1, ceil(RPS)))"`
	// MaxInFlight caps the calls of this method running at once.
	MaxInFlight int `help:"calls of the method running at once (0: unlimited)"`
}

func (r Rule) burst() int {
	if r.Burst > 0 {
		return r.Burst
	}
	return max(1, int(math.Ceil(r.RPS)))
}

// Limits is the whole rate-limit configuration of a server.
type Limits struct {
	// Default applies to each method not listed in Methods (every method gets its own bucket).
	Default Rule
	// Methods maps a full method ("/shopmesh.order.v1.OrderService/CreateOrder") or a whole service
	// ("/shopmesh.order.v1.OrderService/*") to its rule; the exact method wins.
	Methods map[string]Rule
	// MaxInFlight caps the calls running at once on the whole server (streams included).
	MaxInFlight int `help:"calls running at once on the whole server, streams included (0: unlimited)"`
	// RetryAfter is the RetryInfo delay sent when a call is shed for concurrency.
	RetryAfter time.Duration `help:"retry delay sent to a call shed for concurrency"`
}

// Validate reports limits that make no sense, naming the field.
func (l Limits) Validate() error {
	var errs []error
	check := func(name string, r Rule) {
		if r.RPS < 0 || math.IsNaN(r.RPS) || math.IsInf(r.RPS, 0) {
			errs = append(errs, fmt.Errorf("%s.rps: must be a finite number >= 0, got %v", name, r.RPS))
		}
		if r.Burst < 0 {
			errs = append(errs, fmt.Errorf("%s.burst: must be >= 0, got %d", name, r.Burst))
		}
		if r.MaxInFlight < 0 {
			errs = append(errs, fmt.Errorf("%s.max_in_flight: must be >= 0, got %d", name, r.MaxInFlight))
		}
	}
	check("default", l.Default)
	for m, r := range l.Methods {
		if !strings.HasPrefix(m, "/") || strings.Count(m, "/") != 2 {
			errs = append(errs, fmt.Errorf("methods[%q]: want \"/package.Service/Method\" or \"/package.Service/*\"", m))
		}
		check(fmt.Sprintf("methods[%q]", m), r)
	}
	if l.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("max_in_flight: must be >= 0, got %d", l.MaxInFlight))
	}
	if l.RetryAfter < 0 {
		errs = append(errs, fmt.Errorf("retry_after: must be >= 0, got %v", l.RetryAfter))
	}
	return errors.Join(errs...)
}

func (l Limits) rule(method string) (Rule, string) {
	if r, ok := l.Methods[method]; ok {
		return r, method
	}
	if i := strings.LastIndexByte(method, '/'); i > 0 {
		svc := method[:i+1] + "*"
		if r, ok := l.Methods[svc]; ok {
			// A service rule is shared by every method of the service.
			return r, svc
		}
	}
	return l.Default, method
}

// state is one immutable generation of limits plus the token buckets built from them.
type state struct {
	limits  Limits
	buckets sync.Map // bucket key -> *bucket
	// resolved caches, per method name, its rule, bucket and in-flight counter, so a call does no map
	// lookup by composed key and builds no "/pkg.Service/*" string.
	resolved sync.Map // method -> *entry
}

// entry is what one method needs on every call under one generation of limits.
type entry struct {
	rule    Rule
	key     string
	bucket  *bucket       // nil when rule.RPS is 0
	counter *atomic.Int64 // nil when rule.MaxInFlight is 0
}

type bucket struct {
	rule    Rule
	limiter *rate.Limiter
}

// Limiter enforces Limits. It is safe for concurrent use.
type Limiter struct {
	state    atomic.Pointer[state]
	inFlight atomic.Int64
	methods  sync.Map // bucket key -> *atomic.Int64, kept across updates so running calls stay counted
	now      func() time.Time
	onReject atomic.Pointer[func(method, reason string)]
}

// OnReject calls f for every refused call with the method and rpcerr reason (RATE_LIMITED for the
// token bucket, OVERLOADED for load shedding by the in-flight limits), for metrics.
func (l *Limiter) OnReject(f func(method, reason string)) { l.onReject.Store(&f) }

func (l *Limiter) rejected(method, reason string) {
	if f := l.onReject.Load(); f != nil && *f != nil {
		(*f)(method, reason)
	}
}

// New returns a Limiter enforcing l, which must be valid.
func New(l Limits) (*Limiter, error) {
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("rate limits: %w", err)
	}
	lim := &Limiter{now: time.Now}
	l.Methods = maps.Clone(l.Methods) // the caller may keep editing its map
	lim.state.Store(&state{limits: l})
	return lim, nil
}

// Update atomically replaces the limits. Buckets whose rule did not change keep their tokens; the others
// start full under the new rule. Calls already running are not affected.
func (l *Limiter) Update(limits Limits) error {
	if err := limits.Validate(); err != nil {
		return fmt.Errorf("rate limits: %w", err)
	}
	limits.Methods = maps.Clone(limits.Methods)
	next := &state{limits: limits}
	old := l.state.Load()
	old.buckets.Range(func(k, v any) bool {
		b := v.(*bucket)
		if r, key := limits.rule(k.(string)); key == k && r == b.rule {
			next.buckets.Store(k, b)
		}
		return true
	})
	l.state.Store(next)
	return nil
}

// Limits returns the limits in force.
func (l *Limiter) Limits() Limits { return l.state.Load().limits }

// Acquire admits one call of method or returns a RESOURCE_EXHAUSTED error with RetryInfo. On success the
// caller must call release when the call ends.
func (l *Limiter) Acquire(method string) (release func(), err error) {
	t, err := l.Admit(method)
	if err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(t.Release) }, nil
}

// Ticket is one admitted call; Release it exactly once when the call ends. It is what Acquire's release
// wraps, without the allocation, for the interceptors.
type Ticket struct {
	l       *Limiter
	counter *atomic.Int64
}

// Release gives back the call's in-flight slots.
func (t Ticket) Release() {
	if t.counter != nil {
		t.counter.Add(-1)
	}
	t.l.inFlight.Add(-1)
}

// Admit is Acquire returning a Ticket: admits one call of method or returns a RESOURCE_EXHAUSTED error
// with RetryInfo.
func (l *Limiter) Admit(method string) (Ticket, error) {
	st := l.state.Load()
	e := l.entry(st, method)

	if e.bucket != nil {
		now := l.now()
		res := e.bucket.limiter.ReserveN(now, 1)
		if d := res.DelayFrom(now); !res.OK() || d > 0 {
			res.CancelAt(now)
			if !res.OK() {
				d = time.Second
			}
			l.rejected(method, rpcerr.ReasonRateLimited)
			return Ticket{}, rpcerr.RetryAfter(codes.ResourceExhausted, rpcerr.ReasonRateLimited,
				"rate limit exceeded for "+method, d)
		}
	}

	if limit := st.limits.MaxInFlight; limit > 0 {
		if n := l.inFlight.Add(1); n > int64(limit) {
			l.inFlight.Add(-1)
			l.rejected(method, rpcerr.ReasonOverloaded)
			return Ticket{}, l.overloaded(st, "server is at its concurrency limit")
		}
	} else {
		l.inFlight.Add(1)
	}
	if e.counter != nil {
		if n := e.counter.Add(1); n > int64(e.rule.MaxInFlight) {
			e.counter.Add(-1)
			l.inFlight.Add(-1)
			l.rejected(method, rpcerr.ReasonOverloaded)
			return Ticket{}, l.overloaded(st, "concurrency limit reached for "+method)
		}
	}
	return Ticket{l: l, counter: e.counter}, nil
}

// entry resolves method under st once; later calls of the same method reuse it.
func (l *Limiter) entry(st *state, method string) *entry {
	if v, ok := st.resolved.Load(method); ok {
		return v.(*entry)
	}
	rule, key := st.limits.rule(method)
	e := &entry{rule: rule, key: key}
	if rule.RPS > 0 {
		v, ok := st.buckets.Load(key)
		if !ok {
			v, _ = st.buckets.LoadOrStore(key, &bucket{rule: rule, limiter: rate.NewLimiter(rate.Limit(rule.RPS), rule.burst())})
		}
		e.bucket = v.(*bucket)
	}
	if rule.MaxInFlight > 0 {
		v, ok := l.methods.Load(key)
		if !ok {
			v, _ = l.methods.LoadOrStore(key, new(atomic.Int64))
		}
		e.counter = v.(*atomic.Int64)
	}
	v, _ := st.resolved.LoadOrStore(method, e)
	return v.(*entry)
}

func (l *Limiter) overloaded(st *state, msg string) error {
	d := st.limits.RetryAfter
	if d <= 0 {
		d = 100 * time.Millisecond
	}
	return rpcerr.RetryAfter(codes.ResourceExhausted, rpcerr.ReasonOverloaded, msg, d)
}

// InFlight returns the number of calls currently admitted on the server.
func (l *Limiter) InFlight() int { return int(l.inFlight.Load()) }

// UnaryServerInterceptor enforces the limits on unary calls.
func (l *Limiter) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		t, err := l.Admit(info.FullMethod)
		if err != nil {
			return nil, err
		}
		defer t.Release()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor enforces the limits on streams; a stream holds its in-flight slot until it ends.
func (l *Limiter) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		t, err := l.Admit(info.FullMethod)
		if err != nil {
			return err
		}
		defer t.Release()
		return handler(srv, ss)
	}
}
