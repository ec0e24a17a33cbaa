package platform_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
)

// Through the facade, with the default client configuration (outlier ejection on, the default breaker):
// one of two instances answers INTERNAL to everything. It is ejected (and the ejection logged), the
// target's breaker stays closed although half of the first calls failed, and the other instance serves.
// Before ejection and the breaker's hold, the breaker opened and cut the healthy instance off too.
func TestDialEjectsFailingInstanceBreakerStaysClosed(t *testing.T) {
	t.Parallel()
	goodEcho := &testserver.Echo{}
	good := echoServer(t, testConfig("payment"), goodEcho)
	var isSick atomic.Bool
	sickEcho := &testserver.Echo{Unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		if isSick.Load() {
			return nil, status.Error(codes.Internal, "sick replica")
		}
		return &testgrpc.SimpleResponse{}, nil
	}}
	sick := echoServer(t, testConfig("payment"), sickEcho)

	var logs lockedBuffer
	cfg := testConfig("order")
	cfg.Client.Outlier.Interval = 200 * time.Millisecond
	cfg.Client.Outlier.BaseEjection = 5 * time.Second
	cfg.Targets = map[string]config.Target{"echo": {Addresses: []string{good.addr, sick.addr}}}
	p, err := platform.New(context.Background(), cfg, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	conn, err := p.Dial("echo")
	if err != nil {
		t.Fatal(err)
	}
	c := testgrpc.NewTestServiceClient(conn)
	// Both instances serve first; then one falls sick.
	eventually(t, "both instances receive calls", func() bool {
		if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
		return goodEcho.Calls.Load() > 0 && sickEcho.Calls.Load() > 0
	})
	isSick.Store(true)

	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 250 {
				_, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{})
				calls.Add(1)
				if err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b, _ := p.Breaker("echo")
	t.Logf("%d calls, %d failed (INTERNAL is not retried); breaker %v", calls.Load(), failed.Load(), b.State())
	if b.State() != breaker.StateClosed {
		t.Errorf("breaker %v: one bad replica of two opened it", b.State())
	}
	if n := failed.Load(); n > 50 {
		t.Errorf("%d calls failed: the sick instance should be ejected after a few", n)
	}
	if !strings.Contains(logs.String(), `"msg":"outlier ejected"`) || !strings.Contains(logs.String(), sick.addr) {
		t.Errorf("no ejection of %s logged:\n%s", sick.addr, logs.String())
	}
}
