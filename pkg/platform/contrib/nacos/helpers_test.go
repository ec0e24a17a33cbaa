package nacos_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos"
	"github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos/nacostest"
	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

func serviceName(prefix string) string {
	return fmt.Sprintf("%s-%d-%08x", prefix, time.Now().UnixNano()%1e6, rand.Uint32())
}

// newClient connects to the real Nacos with its caches in dir (nacostest.Dir(t) when "").
func newClient(t testing.TB, addr, dir string) *nacos.Client {
	t.Helper()
	if dir == "" {
		dir = nacostest.Dir(t)
	}
	c, err := nacos.New(nacostest.Auth(nacos.Default(addr, dir)), testLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// instance is one loopback server with its own Nacos connection, like a separate process.
type instance struct {
	echo     *testserver.Echo
	addr     string
	lastCall atomic.Int64 // unix nanos
	byTag    sync.Map     // load tag -> *atomic.Int64
	reg      *nacos.Client
	srv      *grpc.Server
}

func startInstance(t testing.TB, nacosAddr, service string) *instance {
	t.Helper()
	in := &instance{echo: &testserver.Echo{}}
	in.echo.Unary = func(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		in.lastCall.Store(time.Now().UnixNano())
		v, _ := in.byTag.LoadOrStore(string(req.GetPayload().GetBody()), new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
		return &testgrpc.SimpleResponse{Payload: req.GetPayload()}, nil
	}
	in.srv = grpc.NewServer()
	hs := health.NewServer()
	healthgrpc.RegisterHealthServer(in.srv, hs)
	in.addr = testserver.Start(t, in.srv, in.echo)
	in.reg = newClient(t, nacosAddr, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := in.reg.Register(ctx, discovery.Instance{Service: service, Addr: in.addr}); err != nil {
		t.Fatal(err)
	}
	return in
}

// from returns how many calls the load tagged tag made here.
func (in *instance) from(tag string) int64 {
	v, ok := in.byTag.Load(tag)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

func (in *instance) deregister(t testing.TB, service string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := in.reg.Deregister(ctx, discovery.Instance{Service: service, Addr: in.addr}); err != nil {
		t.Fatal(err)
	}
}

const roundRobin = `{"loadBalancingConfig":[{"round_robin":{}}]}`

func dial(t testing.TB, c discovery.Resolver, service string) testgrpc.TestServiceClient {
	t.Helper()
	target, b, err := c.Resolve(service)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, grpc.WithResolvers(b), grpc.WithDefaultServiceConfig(roundRobin),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// load calls c in a loop (each call with a deadline) until stopped, counting calls and failures.
type load struct {
	calls, errs atomic.Int64
	lastErr     atomic.Value
	stop        chan struct{}
	once        sync.Once
	wg          sync.WaitGroup
}

func startLoad(c testgrpc.TestServiceClient, workers int, tag string) *load {
	l := &load{stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte(tag)}})
				cancel()
				l.calls.Add(1)
				if err != nil {
					l.errs.Add(1)
					l.lastErr.Store(err.Error())
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) finish() { l.once.Do(func() { close(l.stop) }); l.wg.Wait() }

// waitFor polls cond every 50 ms until it holds or bound passes.
func waitFor(t testing.TB, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %v", what, bound)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// waitQuiet waits until in has received no call for quiet, and returns when its last call happened
// relative to since.
func waitQuiet(t testing.TB, in *instance, since time.Time, quiet, bound time.Duration) time.Duration {
	t.Helper()
	waitFor(t, bound, "instance "+in.addr+" stops receiving calls", func() bool {
		return time.Since(time.Unix(0, in.lastCall.Load())) > quiet
	})
	return time.Unix(0, in.lastCall.Load()).Sub(since)
}
