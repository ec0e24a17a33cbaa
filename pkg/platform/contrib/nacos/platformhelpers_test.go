package nacos_test

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// The helpers of pkg/platform's own facade tests, for the facade tests against Nacos.

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

func dialRaw(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
