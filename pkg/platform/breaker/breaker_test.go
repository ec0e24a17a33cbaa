package breaker_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type transitions struct {
	mu  sync.Mutex
	log []string
}

func (tr *transitions) record(_ string, from, to breaker.State) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.log = append(tr.log, from.String()+">"+to.String())
}

func (tr *transitions) get() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]string(nil), tr.log...)
}

var errDown = status.Error(codes.Unavailable, "down")

func call(t *testing.T, b *breaker.Breaker, err error) error {
	t.Helper()
	done, aerr := b.Allow()
	if aerr != nil {
		return aerr
	}
	done(err)
	return nil
}

func TestStateMachine(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var tr transitions
	b := breaker.New(breaker.Settings{
		Name: "payment", MaxRequests: 2, Timeout: 5 * time.Second, Interval: 10 * time.Second,
		ReadyToTrip: breaker.Trip(3, 0, 0), Now: clk.Now, OnStateChange: tr.record,
	})

	// Closed: two failures and a success do not trip (not consecutive).
	for _, err := range []error{errDown, errDown, nil, errDown, errDown} {
		if e := call(t, b, err); e != nil {
			t.Fatalf("closed breaker refused a call: %v", e)
		}
	}
	if b.State() != breaker.StateClosed {
		t.Fatalf("state = %v after 2 consecutive failures, want closed", b.State())
	}
	// Third consecutive failure trips it.
	_ = call(t, b, errDown)
	if b.State() != breaker.StateOpen {
		t.Fatalf("state = %v, want open", b.State())
	}
	// Open: everything fails fast until the timeout.
	for range 10 {
		if err := call(t, b, nil); !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("open breaker admitted a call: %v", err)
		}
	}
	clk.Advance(5*time.Second - time.Nanosecond)
	if b.State() != breaker.StateOpen {
		t.Fatal("opened too early")
	}
	clk.Advance(time.Nanosecond)
	if b.State() != breaker.StateHalfOpen {
		t.Fatalf("state = %v after the timeout, want half-open", b.State())
	}

	// Half-open: exactly MaxRequests probes at once.
	d1, err1 := b.Allow()
	d2, err2 := b.Allow()
	_, err3 := b.Allow()
	if err1 != nil || err2 != nil || !errors.Is(err3, breaker.ErrTooManyRequests) {
		t.Fatalf("half-open admitted: %v %v %v, want 2 probes then ErrTooManyRequests", err1, err2, err3)
	}
	// A failed probe reopens it.
	d1(errDown)
	d2(nil) // late outcome of the old generation: ignored
	if b.State() != breaker.StateOpen {
		t.Fatalf("state = %v after a failed probe, want open", b.State())
	}
	clk.Advance(5 * time.Second)
	// Two successful probes close it.
	for range 2 {
		if err := call(t, b, nil); err != nil {
			t.Fatal(err)
		}
	}
	if b.State() != breaker.StateClosed {
		t.Fatalf("state = %v after 2 successful probes, want closed", b.State())
	}

	want := []string{"closed>open", "open>half-open", "half-open>open", "open>half-open", "half-open>closed"}
	if got := tr.get(); !slices.Equal(got, want) {
		t.Errorf("transitions = %v, want %v", got, want)
	}
}

func TestExcludedErrorsNeverTrip(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := breaker.New(breaker.Settings{ReadyToTrip: breaker.Trip(1, 0, 0), Now: clk.Now})
	for _, c := range []codes.Code{codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition,
		codes.PermissionDenied, codes.Unauthenticated, codes.Canceled, codes.OutOfRange} {
		for range 10 {
			if err := call(t, b, status.Error(c, "caller's fault")); err != nil {
				t.Fatalf("%v: %v", c, err)
			}
		}
	}
	if b.State() != breaker.StateClosed {
		t.Fatalf("caller errors tripped the breaker")
	}
	if c := b.Counts(); c.Excluded != 80 || c.Failures != 0 {
		t.Errorf("counts = %+v", c)
	}
	_ = call(t, b, status.Error(codes.DeadlineExceeded, "slow"))
	if b.State() != breaker.StateOpen {
		t.Error("DEADLINE_EXCEEDED is a server-side failure and should trip")
	}
}

func TestFailureRatioAndInterval(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := breaker.New(breaker.Settings{ReadyToTrip: breaker.Trip(0, 10, 0.5), Interval: time.Minute, Now: clk.Now})
	for i := range 9 {
		err := error(nil)
		if i%2 == 0 {
			err = errDown
		}
		_ = call(t, b, err)
	}
	if b.State() != breaker.StateClosed {
		t.Fatal("tripped below MinRequests")
	}
	// The window resets: the 5 failures so far are forgotten.
	clk.Advance(time.Minute)
	if c := b.Counts(); c.Requests != 0 {
		t.Fatalf("counts not cleared after Interval: %+v", c)
	}
	for range 5 {
		_ = call(t, b, nil)
	}
	for range 5 {
		_ = call(t, b, errDown)
	}
	if b.State() != breaker.StateOpen {
		t.Errorf("state = %v at 50%% failures of 10, want open", b.State())
	}
}

// TestInterceptorProtectsDependency runs a real server and counts what reaches it.
func TestInterceptorProtectsDependency(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var tr transitions
	b := breaker.New(breaker.Settings{
		Name: "payment", MaxRequests: 2, Timeout: 10 * time.Second,
		ReadyToTrip: breaker.Trip(5, 0, 0), Now: clk.Now, OnStateChange: tr.record,
	})
	var healthy atomic.Bool
	release := make(chan struct{})
	var block atomic.Bool
	entered := make(chan struct{}, 100)
	echo := &testserver.Echo{Unary: func(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
		if req.GetFillOauthScope() {
			return nil, status.Error(codes.InvalidArgument, "bad")
		}
		if block.Load() {
			entered <- struct{}{}
			<-release
		}
		if !healthy.Load() {
			return nil, errDown
		}
		return &testpb.SimpleResponse{}, nil
	}}
	addr := testserver.Start(t, grpc.NewServer(), echo)
	client := testserver.Client(t, addr,
		grpc.WithChainUnaryInterceptor(breaker.UnaryClientInterceptor(b)),
		grpc.WithChainStreamInterceptor(breaker.StreamClientInterceptor(b)))
	ctx := t.Context()

	// Caller errors, however many, never trip it.
	for range 20 {
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{FillOauthScope: true})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatal(err)
		}
	}
	// Five server failures trip it.
	for range 5 {
		if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); status.Code(err) != codes.Unavailable {
			t.Fatal(err)
		}
	}
	if b.State() != breaker.StateOpen {
		t.Fatalf("state = %v, want open", b.State())
	}
	reached := echo.Calls.Load()
	if reached != 25 {
		t.Fatalf("dependency saw %d calls, want 25", reached)
	}
	// While open: fast UNAVAILABLE with reason CIRCUIT_OPEN, nothing reaches the dependency.
	for range 50 {
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
		if status.Code(err) != codes.Unavailable || rpcerr.Reason(err) != rpcerr.ReasonCircuitOpen {
			t.Fatalf("open breaker: %v", err)
		}
	}
	if got := echo.Calls.Load(); got != reached {
		t.Fatalf("open breaker let %d calls through", got-reached)
	}

	// Half-open with the dependency still down and 10 concurrent callers: only 2 probes reach it.
	clk.Advance(10 * time.Second)
	block.Store(true)
	var wg sync.WaitGroup
	var fastFails atomic.Int64
	for range 10 {
		wg.Go(func() {
			_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
			if rpcerr.Reason(err) == rpcerr.ReasonCircuitOpen {
				fastFails.Add(1)
			}
		})
	}
	<-entered
	<-entered
	// The 8 others must have been refused; wait for them without sleeping.
	for fastFails.Load() < 8 {
		select {
		case <-entered:
			t.Fatal("a third probe reached the dependency")
		default:
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if got := echo.Calls.Load() - reached; got != 2 {
		t.Fatalf("dependency saw %d probes, want 2", got)
	}
	if b.State() != breaker.StateOpen {
		t.Fatalf("failed probes: state = %v, want open", b.State())
	}

	// Recovery: after the timeout, 2 successful probes close it and traffic flows again.
	block.Store(false)
	healthy.Store(true)
	clk.Advance(10 * time.Second)
	for range 10 {
		if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}
	if b.State() != breaker.StateClosed {
		t.Fatalf("state = %v, want closed", b.State())
	}
	want := []string{"closed>open", "open>half-open", "half-open>open", "open>half-open", "half-open>closed"}
	if got := tr.get(); !slices.Equal(got, want) {
		t.Errorf("transitions = %v, want %v", got, want)
	}
}

func TestStreamOutcomeCounts(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := breaker.New(breaker.Settings{ReadyToTrip: breaker.Trip(2, 0, 0), Now: clk.Now})
	echo := &testserver.Echo{BeforeStreamSend: func(context.Context, int) error { return errDown }}
	client := testserver.Client(t, testserver.Start(t, grpc.NewServer(), echo),
		grpc.WithChainStreamInterceptor(breaker.StreamClientInterceptor(b)))
	for range 2 {
		s, err := client.StreamingOutputCall(t.Context(), &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 1}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
			t.Fatal(err)
		}
	}
	if b.State() != breaker.StateOpen {
		t.Fatalf("two failed streams: state = %v, want open", b.State())
	}
	_, err := client.StreamingOutputCall(t.Context(), &testpb.StreamingOutputCallRequest{})
	if rpcerr.Reason(err) != rpcerr.ReasonCircuitOpen {
		t.Errorf("stream on open breaker: %v", err)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	if err := (breaker.Config{Enabled: true}).Validate(); err == nil {
		t.Error("an enabled breaker without trip rule or timeout must be refused")
	}
	if err := (breaker.Config{}).Validate(); err != nil {
		t.Errorf("a disabled breaker needs nothing: %v", err)
	}
	c := breaker.Config{Enabled: true, ConsecutiveFailures: 3, OpenTimeout: time.Second, HalfOpenProbes: 1}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s := c.Settings("inventory")
	if s.Name != "inventory" || s.MaxRequests != 1 || s.Timeout != time.Second {
		t.Errorf("settings = %+v", s)
	}
}

// While a hold reports the target healthy (some instance serves well), failures do not open the breaker;
// once no hold does, the next failure that meets a trip rule opens it. A failed half-open probe reopens
// it whatever the holds say.
func TestHoldWhileKeepsBreakerClosed(t *testing.T) {
	t.Parallel()
	clk := newClock()
	var tr transitions
	b := breaker.New(breaker.Settings{
		Name: "payment", MaxRequests: 1, Timeout: 5 * time.Second,
		ReadyToTrip: breaker.Trip(3, 0, 0), Now: clk.Now, OnStateChange: tr.record,
	})
	var healthy atomic.Bool
	healthy.Store(true)
	b.HoldWhile(func() bool { return false }) // another connection with nothing healthy
	b.HoldWhile(healthy.Load)
	for range 10 {
		if err := call(t, b, errDown); err != nil {
			t.Fatalf("held breaker refused a call: %v", err)
		}
	}
	if b.State() != breaker.StateClosed {
		t.Fatalf("state = %v with a healthy instance, want closed", b.State())
	}
	healthy.Store(false)
	_ = call(t, b, errDown)
	if b.State() != breaker.StateOpen {
		t.Fatalf("state = %v once nothing is healthy, want open", b.State())
	}
	clk.Advance(5 * time.Second)
	healthy.Store(true)
	_ = call(t, b, errDown) // the probe fails
	if got := tr.get(); !slices.Equal(got, []string{"closed>open", "open>half-open", "half-open>open"}) {
		t.Fatalf("transitions = %v", got)
	}
}
