// Package platformtest serves and dials services through real platforms on loopback, for the services'
// tests: the whole server chain (mTLS, authorization policy, validation, limits) runs as in production.
// Only tests import it.
package platformtest

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// New builds a platform from cfg and opts (logging nowhere) and closes it when the test ends.
func New(t testing.TB, cfg config.Config, opts ...platform.Option) *platform.Platform {
	t.Helper()
	p, err := platform.New(context.Background(), cfg, slog.New(slog.DiscardHandler), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Serve builds a platform from cfg and opts (the service's platform.WithPolicy, so that its rules are
// enforced with mTLS on), registers the services with register on its server, serves it on a free
// loopback port until the test ends (Serve's drain included) and returns the address.
func Serve(t testing.TB, cfg config.Config, register func(*grpc.Server), opts ...platform.Option) string {
	t.Helper()
	p := New(t, cfg, opts...)
	srv := p.NewServer()
	register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Serve(ctx, srv, lis) }()
	t.Cleanup(func() { cancel(); <-done })
	return lis.Addr().String()
}

// TLSFiles names svc's identity in a `make certs` directory (ca.pem, <svc>.pem, <svc>-key.pem).
func TLSFiles(dir, svc string) config.TLS {
	return config.TLS{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, svc+".pem"), KeyFile: filepath.Join(dir, svc+"-key.pem")}
}

// Dial connects to target at addr as the service identity, through a platform client (mTLS with the
// identity's certificate from dir when dir is not empty).
func Dial(t testing.TB, identity, dir, target, addr string) *grpc.ClientConn {
	t.Helper()
	cfg := config.Default(config.Test)
	cfg.Service = identity
	if dir != "" {
		cfg.TLS = TLSFiles(dir, identity)
	}
	cfg.Targets[target] = config.Target{Addresses: []string{addr}}
	conn, err := New(t, cfg).Dial(target)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
