package platform_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/fault"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/ratelimit"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testConfig(service string) config.Config {
	c := config.Default(config.Test)
	c.Service = service
	c.ListenAddr = "127.0.0.1:0"
	c.Server.ShutdownTimeout = 10 * time.Second
	c.Client.Retry.InitialBackoff = time.Millisecond
	c.Client.Retry.MaxBackoff = 10 * time.Millisecond
	return c
}

// running is a platform server serving on loopback.
type running struct {
	p    *platform.Platform
	addr string
	stop context.CancelFunc
	// wait returns what Serve returned, once it has.
	wait func() error
}

// serve starts p with register on a loopback listener; the server is stopped when the test ends.
func serve(t testing.TB, p *platform.Platform, register func(*grpc.Server), opts ...platform.ServerOption) *running {
	t.Helper()
	srv := p.NewServer(opts...)
	register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx, srv, lis) }()
	r := &running{p: p, addr: lis.Addr().String(), stop: cancel, wait: sync.OnceValue(func() error { return <-served })}
	t.Cleanup(func() {
		cancel()
		_ = r.wait()
	})
	return r
}

func newPlatform(t testing.TB, cfg config.Config, opts ...platform.Option) *platform.Platform {
	t.Helper()
	p, err := platform.New(context.Background(), cfg, quiet(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func echoServer(t testing.TB, cfg config.Config, echo *testserver.Echo, opts ...platform.Option) *running {
	t.Helper()
	return serve(t, newPlatform(t, cfg, opts...), func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, echo) })
}

// client dials target "echo" at addrs through a client platform.
func client(t testing.TB, cfg config.Config, addrs []string, opts ...platform.Option) (testgrpc.TestServiceClient, *platform.Platform) {
	t.Helper()
	// The echo service's proto declares no idempotency_level; declare it here so retries stay on.
	cfg.Targets = map[string]config.Target{"echo": {Addresses: addrs, Idempotent: []string{"/grpc.testing.TestService/*"}}}
	p := newPlatform(t, cfg, opts...)
	conn, err := p.Dial("echo")
	if err != nil {
		t.Fatal(err)
	}
	return testgrpc.NewTestServiceClient(conn), p
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeDialAndHealth(t *testing.T) {
	t.Parallel()
	srv := echoServer(t, testConfig("echo"), &testserver.Echo{})
	c, _ := client(t, testConfig("caller"), []string{srv.addr})
	resp, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hi")}})
	if err != nil || string(resp.GetPayload().GetBody()) != "hi" {
		t.Fatalf("echo: %v %v", resp, err)
	}
	st, err := srv.p.Health().Check(t.Context(), "")
	if err != nil || st != healthgrpc.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v", st, err)
	}
	srv.p.Health().SetServing("grpc.testing.TestService", false)
	if st, _ := srv.p.Health().Check(t.Context(), "grpc.testing.TestService"); st != healthgrpc.HealthCheckResponse_NOT_SERVING {
		t.Errorf("per-service status = %v", st)
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	t.Parallel()
	cfg := testConfig("")
	if _, err := platform.New(context.Background(), cfg, quiet()); err == nil {
		t.Error("config without a service name accepted")
	}
	prod := config.Default(config.Prod)
	prod.Service = "payment"
	prod.Fault = fault.Config{Enabled: true, Rules: map[string]fault.Rule{"*": {AbortCode: "UNAVAILABLE", AbortPercent: 100}}}
	if _, err := platform.New(context.Background(), prod, quiet()); err == nil {
		t.Error("fault injection accepted in prod")
	}
	if _, err := platform.New(context.Background(), testConfig("x"), nil); err == nil {
		t.Error("nil logger accepted")
	}
}

func TestReflectionOnlyInDev(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		profile config.Profile
		want    bool
	}{{config.Dev, true}, {config.Test, false}, {config.Prod, false}} {
		cfg := testConfig("echo")
		if tc.profile == config.Prod { // prod refuses to start without mTLS
			cfg = tlsConfig("echo", certDir(t, testCA(t, "ca"), "echo"))
		}
		cfg.Profile = tc.profile
		p := newPlatform(t, cfg)
		srv := p.NewServer()
		_, hasReflection := srv.GetServiceInfo()["grpc.reflection.v1.ServerReflection"]
		_, hasHealth := srv.GetServiceInfo()["grpc.health.v1.Health"]
		if hasReflection != tc.want || !hasHealth {
			t.Errorf("%s: reflection=%v health=%v", tc.profile, hasReflection, hasHealth)
		}
	}
}

// Recovery covers the folded stages and the handler whether or not hooks (WithInterceptors) sit
// between it and the stages (without hooks, recovery and the stages are one interceptor).
func TestPanicInStageOrHandlerIsInternalWithAndWithoutHooks(t *testing.T) {
	t.Parallel()
	for _, hooked := range []bool{false, true} {
		for _, where := range []string{"authz", "handler"} {
			t.Run(fmt.Sprintf("hooks=%v/%s", hooked, where), func(t *testing.T) {
				t.Parallel()
				var hookRan atomic.Int64
				var opts []platform.ServerOption
				if hooked {
					hook := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
						hookRan.Add(1)
						return h(ctx, req)
					}
					opts = append(opts, platform.WithInterceptors([]grpc.UnaryServerInterceptor{hook}, nil))
				}
				var boom atomic.Bool
				boom.Store(true)
				if where == "authz" {
					opts = append(opts, platform.WithAuthorizer(authz.Func(func(context.Context, string) error {
						if boom.Load() {
							panic("authorizer boom")
						}
						return nil
					})))
				}
				echo := &testserver.Echo{Unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
					if where == "handler" && boom.Load() {
						panic("handler boom")
					}
					return &testgrpc.SimpleResponse{}, nil
				}}
				srv := serve(t, newPlatform(t, testConfig("echo")), func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, echo) }, opts...)
				c := testserver.Client(t, srv.addr)
				_, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{})
				if status.Code(err) != codes.Internal || status.Convert(err).Message() != "internal error" {
					t.Fatalf("panic in %s: %v, want INTERNAL \"internal error\"", where, err)
				}
				boom.Store(false)
				if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
					t.Fatalf("next call: %v", err)
				}
				if want := map[bool]int64{false: 0, true: 2}[hooked]; hookRan.Load() != want {
					t.Fatalf("hook ran %d times, want %d", hookRan.Load(), want)
				}
			})
		}
	}
}

// A platform client accepts responses up to Client.MaxRecvMsgSize: grpc's own 4 MiB by default (the
// dialer then sets no call option), the configured size otherwise; a larger one is RESOURCE_EXHAUSTED.
func TestClientReceiveLimit(t *testing.T) {
	t.Parallel()
	scfg := testConfig("echo")
	scfg.Server.MaxSendMsgSize = 16 << 20
	echo := &testserver.Echo{Unary: func(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		return &testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
	}}
	srv := echoServer(t, scfg, echo)
	for _, tc := range []struct {
		limit      int
		ok, tooBig int32
	}{
		{limit: config.Default(config.Test).Client.MaxRecvMsgSize, ok: 4<<20 - 64, tooBig: 4<<20 + 1},
		{limit: 64 << 10, ok: 32 << 10, tooBig: 64<<10 + 1},
		{limit: 8 << 20, ok: 8<<20 - 64, tooBig: 8<<20 + 1},
	} {
		ccfg := testConfig("caller")
		ccfg.Client.MaxRecvMsgSize = tc.limit
		c, _ := client(t, ccfg, []string{srv.addr})
		call := func(size int32) error {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: size})
			return err
		}
		if err := call(tc.ok); err != nil {
			t.Errorf("limit %d: a %d-byte response: %v", tc.limit, tc.ok, err)
		}
		if err := call(tc.tooBig); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("limit %d: a %d-byte response: %v, want RESOURCE_EXHAUSTED", tc.limit, tc.tooBig, err)
		}
	}
	if got := config.Default(config.Test).Client.MaxRecvMsgSize; got != 4<<20 {
		t.Fatalf("the default Client.MaxRecvMsgSize is %d; the first case assumes 4 MiB", got)
	}
}

func TestPanicInHandlerThenNextCallSucceeds(t *testing.T) {
	t.Parallel()
	var n atomic.Int64
	echo := &testserver.Echo{Unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if n.Add(1) == 1 {
			panic("boom")
		}
		return &testgrpc.SimpleResponse{}, nil
	}}
	srv := echoServer(t, testConfig("echo"), echo)
	c := testserver.Client(t, srv.addr)
	_, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.Internal || status.Convert(err).Message() != "internal error" {
		t.Fatalf("panic: %v", err)
	}
	if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("next call: %v", err)
	}
}

type orders struct {
	orderv1.UnimplementedOrderServiceServer
	calls atomic.Int64
}

func (o *orders) CreateOrder(context.Context, *orderv1.CreateOrderRequest) (*orderv1.CreateOrderResponse, error) {
	o.calls.Add(1)
	return &orderv1.CreateOrderResponse{Order: &orderv1.Order{}}, nil
}

func TestValidationWithOrderContract(t *testing.T) {
	t.Parallel()
	svc := &orders{}
	srv := serve(t, newPlatform(t, testConfig("order")), func(s *grpc.Server) { orderv1.RegisterOrderServiceServer(s, svc) })
	cfg := testConfig("gateway")
	cfg.Targets = map[string]config.Target{"order": {Addresses: []string{srv.addr}}}
	p := newPlatform(t, cfg)
	conn, err := p.Dial("order")
	if err != nil {
		t.Fatal(err)
	}
	c := orderv1.NewOrderServiceClient(conn)

	_, err = c.CreateOrder(t.Context(), &orderv1.CreateOrderRequest{
		Items: []*orderv1.OrderItem{{Sku: "SKU-1001", Quantity: 1}},
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("code = %v (%v), want INVALID_ARGUMENT", status.Code(err), err)
	}
	found := false
	for _, v := range rpcerr.Violations(err) {
		found = found || v.Field == "customer_id"
	}
	if !found {
		t.Errorf("violations %+v do not name customer_id", rpcerr.Violations(err))
	}
	body := rpcerr.ToHTTP(err)
	if body.Status != 400 || body.Code != "VALIDATION_ERROR" || len(body.Details) == 0 {
		t.Errorf("HTTP body = %+v", body)
	}
	if svc.calls.Load() != 0 {
		t.Error("handler ran for an invalid request")
	}
	if _, err := c.CreateOrder(t.Context(), &orderv1.CreateOrderRequest{
		CustomerId: "cust-0001", IdempotencyKey: "k-1",
		Items: []*orderv1.OrderItem{{Sku: "SKU-1001", Quantity: 2}},
	}); err != nil {
		t.Fatalf("valid order: %v", err)
	}
	// An invalid request is the caller's fault: the breaker must not count it.
	if b, ok := p.Breaker("order"); !ok || b.Counts().Failures != 0 || b.Counts().Excluded != 1 {
		t.Errorf("breaker counts = %+v", b.Counts())
	}
}

// TestDeadlinePropagates: caller (3s) → front (platform server, 10s default) → back via p.Dial (5s client
// default). back must see about the caller's 3s, not a fresh budget.
func TestDeadlinePropagates(t *testing.T) {
	t.Parallel()
	seen := make(chan time.Time, 1)
	back := echoServer(t, testConfig("back"), &testserver.Echo{Unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		dl, _ := ctx.Deadline()
		seen <- dl
		return &testgrpc.SimpleResponse{}, nil
	}})
	toBack, _ := client(t, testConfig("front"), []string{back.addr})
	front := echoServer(t, testConfig("front"), &testserver.Echo{Unary: func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		return toBack.UnaryCall(ctx, req)
	}})
	c := testserver.Client(t, front.addr)

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	callerDL, _ := ctx.Deadline()
	if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if dl := <-seen; dl.After(callerDL.Add(time.Second)) {
		t.Errorf("back's deadline is %v after the caller's: a fresh budget was started", dl.Sub(callerDL))
	}

	// Without a caller deadline, front's server default (10s) applies and back sees it too (not 10s+5s).
	before := time.Now()
	if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	if dl := <-seen; dl.IsZero() || dl.After(before.Add(11*time.Second)) {
		t.Errorf("back saw %v, want front's 10s default", dl.Sub(before))
	}
}

func TestLoadBalancingFollowsHealth(t *testing.T) {
	t.Parallel()
	var servers []*running
	var echoes []*testserver.Echo
	var addrs []string
	for range 3 {
		e := &testserver.Echo{}
		s := echoServer(t, testConfig("echo"), e)
		servers, echoes, addrs = append(servers, s), append(echoes, e), append(addrs, s.addr)
	}
	c, _ := client(t, testConfig("caller"), addrs)
	spread := func(n int) []int64 {
		before := make([]int64, 3)
		for i, e := range echoes {
			before[i] = e.Calls.Load()
		}
		for range n {
			if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
				t.Fatalf("call: %v", err)
			}
		}
		out := make([]int64, 3)
		for i, e := range echoes {
			out[i] = e.Calls.Load() - before[i]
		}
		return out
	}
	eventually(t, "all three get traffic", func() bool { s := spread(30); return s[0] > 0 && s[1] > 0 && s[2] > 0 })

	servers[2].p.Health().SetServing("", false)
	eventually(t, "NOT_SERVING instance drained", func() bool { return spread(30)[2] == 0 })
	if s := spread(60); s[2] != 0 || s[0] == 0 || s[1] == 0 {
		t.Errorf("spread with instance 2 NOT_SERVING = %v", s)
	}
	servers[2].p.Health().SetServing("", true)
	eventually(t, "instance 2 back in rotation", func() bool { return spread(30)[2] > 0 })
}

func TestGracefulShutdownFinishesInFlightCalls(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	echo := &testserver.Echo{
		Unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			started <- struct{}{}
			<-release
			return &testgrpc.SimpleResponse{}, nil
		},
		BeforeStreamSend: func(_ context.Context, i int) error {
			if i == 1 {
				started <- struct{}{}
				<-release
			}
			return nil
		},
	}
	srv := echoServer(t, testConfig("echo"), echo)
	c := testserver.Client(t, srv.addr)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	const unaries, streams = 3, 2
	var wg sync.WaitGroup
	errs := make(chan error, unaries+streams)
	for range unaries {
		wg.Go(func() {
			_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			errs <- err
		})
	}
	for range streams {
		wg.Go(func() {
			s, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
				ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}, {Size: 2}, {Size: 3}},
			})
			if err != nil {
				errs <- err
				return
			}
			got := 0
			for {
				_, err := s.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					errs <- err
					return
				}
				got++
			}
			if got != 3 {
				errs <- status.Errorf(codes.DataLoss, "stream got %d of 3 messages", got)
				return
			}
			errs <- nil
		})
	}
	for range unaries + streams {
		<-started
	}

	srv.stop() // begin shutdown while 5 calls are in flight

	// New calls are refused once GracefulStop runs (the in-flight ones are still blocked).
	eventually(t, "new calls refused", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		defer ccancel()
		_, err := c.EmptyCall(cctx, &testgrpc.Empty{})
		return status.Code(err) == codes.Unavailable
	})
	if st, _ := srv.p.Health().Check(ctx, ""); st != healthgrpc.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health during shutdown = %v", st)
	}

	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("in-flight call failed: %v", err)
		}
	}
	if err := srv.wait(); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestGracefulShutdownWithHealthWatchers(t *testing.T) {
	t.Parallel()
	// A health Watch never ends by itself; shutdown must end it rather than wait for the timeout.
	cfg := testConfig("echo")
	cfg.Server.ShutdownTimeout = time.Hour
	srv := echoServer(t, cfg, &testserver.Echo{})
	hc := healthgrpc.NewHealthClient(dialRaw(t, srv.addr))
	w, err := hc.Watch(t.Context(), &healthgrpc.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v", m, err)
	}
	srv.stop()
	if err := srv.wait(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	sawNotServing := false
	for {
		m, err := w.Recv()
		if err != nil {
			break
		}
		sawNotServing = sawNotServing || m.GetStatus() == healthgrpc.HealthCheckResponse_NOT_SERVING
	}
	if !sawNotServing {
		t.Error("watcher was not told NOT_SERVING before the stream ended")
	}
}

func dialRaw(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestShutdownTimeoutCutsStuckCalls(t *testing.T) {
	t.Parallel()
	cfg := testConfig("echo")
	cfg.Server.ShutdownTimeout = 100 * time.Millisecond
	started := make(chan struct{})
	echo := &testserver.Echo{Unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		close(started)
		<-ctx.Done() // only Stop (or the caller) ends this
		return nil, ctx.Err()
	}}
	srv := echoServer(t, cfg, echo)
	c := testserver.Client(t, srv.addr)
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
		defer cancel()
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		errc <- err
	}()
	<-started
	srv.stop()
	if err := srv.wait(); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := <-errc; status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Errorf("stuck call: %v, want it cut by Stop", err)
	}
}

func TestRateLimitsLiveThroughPlatform(t *testing.T) {
	t.Parallel()
	cfg := testConfig("echo")
	cfg.RateLimit.Methods = map[string]ratelimit.Rule{"/grpc.testing.TestService/UnaryCall": {RPS: 0.001, Burst: 2}}
	srv := echoServer(t, cfg, &testserver.Echo{})
	c := testserver.Client(t, srv.addr)
	codesSeen := map[codes.Code]int{}
	for range 5 {
		_, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{})
		codesSeen[status.Code(err)]++
	}
	if codesSeen[codes.OK] != 2 || codesSeen[codes.ResourceExhausted] != 3 {
		t.Errorf("codes = %v", codesSeen)
	}
	// Health checks are never rate limited.
	for range 10 {
		if _, err := healthgrpc.NewHealthClient(dialRaw(t, srv.addr)).Check(t.Context(), &healthgrpc.HealthCheckRequest{}); err != nil {
			t.Fatalf("health check limited: %v", err)
		}
	}
	lim := srv.p.RateLimiter().Limits()
	lim.Methods = nil
	if err := srv.p.RateLimiter().Update(lim); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
		t.Errorf("after lifting the limit: %v", err)
	}
}

func TestFaultInjectionThroughPlatform(t *testing.T) {
	t.Parallel()
	cfg := testConfig("payment")
	cfg.Fault = fault.Config{Enabled: true, Rules: map[string]fault.Rule{
		"/grpc.testing.TestService/UnaryCall": {AbortCode: "UNAVAILABLE", AbortPercent: 25},
	}}
	var i atomic.Int64
	rnd := func() float64 { return float64((i.Add(1)-1)%4) / 4 } // 0, .25, .5, .75: exactly 1 in 4 < .25
	srv := echoServer(t, cfg, &testserver.Echo{}, platform.WithFaultRand(rnd))
	c := testserver.Client(t, srv.addr)
	aborted := 0
	for range 40 {
		if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); rpcerr.Reason(err) == rpcerr.ReasonFault {
			aborted++
		}
	}
	if aborted != 10 {
		t.Errorf("aborted %d of 40, want 10", aborted)
	}
}

func TestBreakerPerTargetThroughPlatform(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	srv := echoServer(t, testConfig("payment"), &testserver.Echo{Unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		calls.Add(1)
		return nil, status.Error(codes.Internal, "db down")
	}})
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var transitions []string
	cfg := testConfig("order")
	c, p := client(t, cfg, []string{srv.addr},
		platform.WithClock(clock),
		platform.WithBreakerObserver(func(target string, from, to breaker.State) {
			mu.Lock()
			defer mu.Unlock()
			transitions = append(transitions, target+":"+from.String()+">"+to.String())
		}))
	for range 5 {
		if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); status.Code(err) != codes.Internal {
			t.Fatal(err)
		}
	}
	b, ok := p.Breaker("echo")
	if !ok || b.State() != breaker.StateOpen {
		t.Fatalf("breaker after 5 failures: %v", b.State())
	}
	_, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.Unavailable || rpcerr.Reason(err) != rpcerr.ReasonCircuitOpen {
		t.Fatalf("open breaker: %v", err)
	}
	if calls.Load() != 5 {
		t.Errorf("dependency saw %d calls, want 5", calls.Load())
	}
	mu.Lock()
	now = now.Add(cfg.Client.Breaker.OpenTimeout)
	got := append([]string(nil), transitions...)
	mu.Unlock()
	if b.State() != breaker.StateHalfOpen {
		t.Errorf("after the open timeout: %v", b.State())
	}
	if len(got) != 1 || got[0] != "echo:closed>open" {
		t.Errorf("transitions = %v", got)
	}
}

type fakeRegistry struct {
	mu     sync.Mutex
	events []string
}

func (r *fakeRegistry) Register(_ context.Context, in discovery.Instance) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "register "+in.Service)
	return nil
}

func (r *fakeRegistry) Deregister(_ context.Context, in discovery.Instance) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "deregister "+in.Service)
	return nil
}

func (r *fakeRegistry) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

func TestRegistryLifecycle(t *testing.T) {
	t.Parallel()
	reg := &fakeRegistry{}
	srv := echoServer(t, testConfig("inventory"), &testserver.Echo{}, platform.WithRegistry(reg))
	eventually(t, "registered", func() bool { return len(reg.get()) == 1 })
	srv.stop()
	if err := srv.wait(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(reg.get()); got != "[register inventory deregister inventory]" {
		t.Errorf("registry events = %s", got)
	}
}
