// Package breaker is a per-target client circuit breaker: after a run of server-side failures it opens
// and fails calls fast with UNAVAILABLE (reason CIRCUIT_OPEN) instead of piling more load on a sick
// dependency, then lets a bounded number of probes through to see whether it recovered.
//
// Why our own and not sony/gobreaker v2 or the SRE adaptive throttle: the state machine below is
// gobreaker's (closed → open after ReadyToTrip, open for Timeout, half-open admitting MaxRequests probes,
// closed after MaxRequests consecutive successes, caller errors excluded), but gobreaker v2.4.0 reads
// time.Now directly and its own tests reach into unexported fields to move time; we need an injected clock
// so tests assert every transition without sleeping. The SRE throttle was rejected because it never fails
// everything fast and has no half-open probe bound, which the R4 fault test ("at most the configured probes
// reach it") asserts. The interceptors sit above grpc's retry layer, so the breaker counts logical calls:
// a call that succeeded on its third attempt is one success.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

// State is the breaker's state.
type State int

// The states of a breaker.
const (
	StateClosed State = iota
	StateHalfOpen
	StateOpen
)

func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half-open"
	case StateOpen:
		return "open"
	}
	return fmt.Sprintf("unknown(%d)", int(s))
}

// Errors returned by Allow.
var (
	ErrOpen            = errors.New("circuit breaker is open")
	ErrTooManyRequests = errors.New("circuit breaker is half-open and its probes are all in flight")
)

// Counts are the outcomes recorded in the current generation (reset on every state change and, when
// closed, every Interval). Excluded outcomes are counted in Requests and Excluded only.
type Counts struct {
	Requests             uint32
	Successes            uint32
	Failures             uint32
	Excluded             uint32
	ConsecutiveSuccesses uint32
	ConsecutiveFailures  uint32
}

// Settings configure a Breaker. Zero values take the documented defaults.
type Settings struct {
	// Name identifies the breaker (the target) in errors and callbacks.
	Name string
	// MaxRequests is the number of probes admitted at once while half-open, and the number of consecutive
	// successes that closes the breaker again. Default 1.
	MaxRequests uint32
	// Interval is how often the closed state clears its counts; 0 never clears them.
	Interval time.Duration
	// Timeout is how long the breaker stays open before going half-open. Default 60s.
	Timeout time.Duration
	// ReadyToTrip decides, after each failure while closed, whether to open. Default: 5 consecutive failures.
	ReadyToTrip func(Counts) bool
	// IsExcluded reports errors that are not counted at all. Default: rpcerr.IsCallerError.
	IsExcluded func(error) bool
	// OnStateChange is called (with the breaker's lock held: keep it short, don't call back) on every transition.
	OnStateChange func(name string, from, to State)
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Trip returns a ReadyToTrip that opens after consecutive failures, or once at least minRequests calls
// were seen in the window and the failure ratio reached ratio (ratio 0 disables the ratio rule).
func Trip(consecutive uint32, minRequests uint32, ratio float64) func(Counts) bool {
	return func(c Counts) bool {
		if consecutive > 0 && c.ConsecutiveFailures >= consecutive {
			return true
		}
		counted := c.Successes + c.Failures
		return ratio > 0 && counted >= minRequests && counted > 0 && float64(c.Failures)/float64(counted) >= ratio
	}
}

// Breaker is a circuit breaker. It is safe for concurrent use.
type Breaker struct {
	s Settings

	mu         sync.Mutex
	disabled   bool // set by Update with a disabled Config: every call passes, nothing is counted
	state      State
	generation uint64
	counts     Counts
	inFlight   uint32    // probes admitted in the current half-open generation and not yet done
	started    time.Time // when the current generation began
	expiry     time.Time
	holds      []func() bool
}

// New returns a closed breaker.
func New(s Settings) *Breaker {
	if s.MaxRequests == 0 {
		s.MaxRequests = 1
	}
	if s.Timeout <= 0 {
		s.Timeout = 60 * time.Second
	}
	if s.ReadyToTrip == nil {
		s.ReadyToTrip = Trip(5, 0, 0)
	}
	if s.IsExcluded == nil {
		s.IsExcluded = rpcerr.IsCallerError
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	b := &Breaker{s: s}
	b.newGeneration(s.Now())
	return b
}

// Update replaces the thresholds with those of c (validated first; nothing changes on error), atomically
// with respect to calls. The state and the counts of the current generation are kept, so a change never
// closes an open breaker or forgets failures:
//
//   - the trip rules decide at the next failure while closed (a lowered threshold that the counts already
//     reach trips on that next failure, not during Update);
//   - the half-open probe count bounds the next admissions and the successes needed to close;
//   - Interval and OpenTimeout are measured from the start of the current window or open period, so a
//     shortened OpenTimeout can make the breaker half-open at the next call.
//
// A disabled c turns the breaker into a pass-through (every call admitted, nothing counted) and resets it
// to closed, so enabling it again starts from clean counts.
func (b *Breaker) Update(c Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("breaker %s: %w", b.s.Name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.s.Now()
	if !c.Enabled {
		if !b.disabled {
			b.disabled = true
			b.setState(StateClosed, now)
			b.newGeneration(now)
		}
		return nil
	}
	next := c.Settings(b.s.Name)
	if next.MaxRequests == 0 {
		next.MaxRequests = 1
	}
	if next.Timeout <= 0 {
		next.Timeout = 60 * time.Second
	}
	b.s.MaxRequests, b.s.Interval, b.s.Timeout, b.s.ReadyToTrip = next.MaxRequests, next.Interval, next.Timeout, next.ReadyToTrip
	if b.disabled {
		b.disabled = false
		b.newGeneration(now)
		return nil
	}
	switch b.state {
	case StateClosed:
		b.expiry = time.Time{}
		if b.s.Interval > 0 {
			b.expiry = b.started.Add(b.s.Interval)
		}
	case StateOpen:
		b.expiry = b.started.Add(b.s.Timeout)
	}
	return nil
}

// HoldWhile keeps the closed breaker from opening while healthy reports true, whatever its trip rules
// say: the dialer passes its outlier ejection's view, "some instance of the target still serves well",
// so failures confined to one bad replica (which ejection takes out of rotation) never cut the whole
// target off. healthy is asked only when a trip rule fires; it must not call back into the breaker.
// Half-open probes are not held: a failed probe reopens the breaker as before.
func (b *Breaker) HoldWhile(healthy func() bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.holds = append(b.holds, healthy)
}

func (b *Breaker) held() bool {
	for _, h := range b.holds {
		if h() {
			return true
		}
	}
	return false
}

// Name returns the breaker's name.
func (b *Breaker) Name() string { return b.s.Name }

// State returns the current state (an open breaker whose timeout passed reports half-open).
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current(b.s.Now())
}

// Counts returns the counts of the current generation.
func (b *Breaker) Counts() Counts {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.current(b.s.Now())
	return b.counts
}

// Allow asks to make one call. If admitted, done must be called exactly once with the call's outcome;
// later calls of done are ignored. If not, err is ErrOpen or ErrTooManyRequests.
func (b *Breaker) Allow() (done func(error), err error) {
	p, err := b.Admit()
	if err != nil {
		return nil, err
	}
	var once sync.Once
	return func(err error) { once.Do(func() { p.Done(err) }) }, nil
}

// Pass is one admitted call: Allow's done without its allocations, for the interceptors. Call Done
// exactly once.
type Pass struct {
	b   *Breaker // nil while the breaker is disabled: nothing to record
	gen uint64
}

// Done records the call's outcome.
func (p Pass) Done(err error) {
	if p.b != nil {
		p.b.done(p.gen, err)
	}
}

// Admit is Allow returning a Pass; err is ErrOpen or ErrTooManyRequests when the call is refused.
func (b *Breaker) Admit() (Pass, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.disabled {
		return Pass{}, nil
	}
	now := b.s.Now()
	switch b.current(now) {
	case StateOpen:
		return Pass{}, ErrOpen
	case StateHalfOpen:
		if b.inFlight+b.counts.ConsecutiveSuccesses >= b.s.MaxRequests {
			return Pass{}, ErrTooManyRequests
		}
		b.inFlight++
	}
	b.counts.Requests++
	return Pass{b: b, gen: b.generation}, nil
}

func (b *Breaker) done(gen uint64, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.s.Now()
	state := b.current(now)
	if gen != b.generation {
		return // the outcome belongs to a state that is gone
	}
	if state == StateHalfOpen && b.inFlight > 0 {
		b.inFlight--
	}
	switch {
	case err != nil && b.s.IsExcluded(err):
		b.counts.Excluded++
	case err == nil:
		b.counts.Successes++
		b.counts.ConsecutiveSuccesses++
		b.counts.ConsecutiveFailures = 0
		if state == StateHalfOpen && b.counts.ConsecutiveSuccesses >= b.s.MaxRequests {
			b.setState(StateClosed, now)
		}
	default:
		b.counts.Failures++
		b.counts.ConsecutiveFailures++
		b.counts.ConsecutiveSuccesses = 0
		switch state {
		case StateClosed:
			if b.s.ReadyToTrip(b.counts) && !b.held() {
				b.setState(StateOpen, now)
			}
		case StateHalfOpen:
			b.setState(StateOpen, now)
		}
	}
}

// current advances time-driven transitions and returns the state.
func (b *Breaker) current(now time.Time) State {
	switch b.state {
	case StateClosed:
		if !b.expiry.IsZero() && !now.Before(b.expiry) {
			b.newGeneration(now)
		}
	case StateOpen:
		if !now.Before(b.expiry) {
			b.setState(StateHalfOpen, now)
		}
	}
	return b.state
}

func (b *Breaker) setState(to State, now time.Time) {
	if b.state == to {
		return
	}
	from := b.state
	b.state = to
	b.newGeneration(now)
	if b.s.OnStateChange != nil {
		b.s.OnStateChange(b.s.Name, from, to)
	}
}

func (b *Breaker) newGeneration(now time.Time) {
	b.generation++
	b.counts = Counts{}
	b.inFlight = 0
	b.started = now
	switch b.state {
	case StateClosed:
		b.expiry = time.Time{}
		if b.s.Interval > 0 {
			b.expiry = now.Add(b.s.Interval)
		}
	case StateOpen:
		b.expiry = now.Add(b.s.Timeout)
	default:
		b.expiry = time.Time{}
	}
}

// rejected is the error a caller sees when the breaker refuses a call.
func (b *Breaker) rejected(method string) error {
	return rpcerr.WithReason(codes.Unavailable, rpcerr.ReasonCircuitOpen,
		b.s.Name+" is unavailable (circuit open)", map[string]string{"target": b.s.Name, "method": method})
}

// UnaryClientInterceptor guards unary calls with b.
func UnaryClientInterceptor(b *Breaker) grpc.UnaryClientInterceptor { return b.Invoke }

// Invoke is b's unary client interceptor: it calls invoker if b admits the call and records the outcome,
// or fails fast with UNAVAILABLE (reason CIRCUIT_OPEN). Callers that fold several client stages into one
// interceptor call it directly.
func (b *Breaker) Invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	p, err := b.Admit()
	if err != nil {
		return b.rejected(method)
	}
	err = invoker(ctx, method, req, reply, cc, opts...)
	p.Done(err)
	return err
}

// StreamClientInterceptor guards streams with b. A stream's outcome is its final status: recorded when
// RecvMsg returns io.EOF (success) or an error, or when the caller's context ends first.
func StreamClientInterceptor(b *Breaker) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		done, err := b.Allow()
		if err != nil {
			return nil, b.rejected(method)
		}
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			done(err)
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { done(ctx.Err()) })
		return &trackedStream{ClientStream: cs, done: func(err error) { stop(); done(err) }}, nil
	}
}

type trackedStream struct {
	grpc.ClientStream
	done func(error)
}

func (s *trackedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	switch {
	case errors.Is(err, io.EOF):
		s.done(nil)
	case err != nil:
		s.done(err)
	}
	return err
}
