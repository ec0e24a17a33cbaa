package healthcheck_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/healthcheck"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// serve starts a real gRPC server with the standard health service on a loopback port.
func serve(t *testing.T, opts ...grpc.ServerOption) (addr string, hs *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	hs = health.NewServer()
	healthgrpc.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), hs
}

func TestRunPlaintext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	addr, hs := serve(t)
	if err := healthcheck.Run(ctx, addr, nil); err != nil {
		t.Fatalf("serving: %v", err)
	}
	hs.SetServingStatus("", healthgrpc.HealthCheckResponse_NOT_SERVING)
	if err := healthcheck.Run(ctx, addr, nil); !errors.Is(err, healthcheck.ErrNotServing) {
		t.Fatalf("not serving: got %v, want ErrNotServing", err)
	}
}

func TestRunNothingListening(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	start := time.Now()
	err = healthcheck.Run(context.Background(), addr, nil)
	if err == nil {
		t.Fatal("want an error with nothing listening")
	}
	t.Logf("failed after %v (bound %v): %v", time.Since(start).Round(time.Millisecond), healthcheck.Timeout, err)
}

// TestServiceMTLS checks a server requiring client certificates with the service's own identity
// (ListenAddr path) and the plaintext HealthAddr path.
func TestServiceMTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := mtls.NewCA("test CA", time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue("order", time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"ca.pem": ca.CertPEM, "order.pem": certPEM, "order-key.pem": keyPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsCfg := config.TLS{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "order.pem"), KeyFile: filepath.Join(dir, "order-key.pem")}
	src, err := mtls.Load(mtls.Config{CAFile: tlsCfg.CAFile, CertFile: tlsCfg.CertFile, KeyFile: tlsCfg.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	tlsAddr, _ := serve(t, grpc.Creds(src.ServerCredentials()))
	plainAddr, _ := serve(t)
	_, tlsPort, _ := net.SplitHostPort(tlsAddr)
	_, plainPort, _ := net.SplitHostPort(plainAddr)

	ctx := context.Background()
	cfg := config.Default(config.Compose)
	cfg.Service = "order"
	cfg.ListenAddr = ":" + tlsPort
	cfg.TLS = tlsCfg
	if err := healthcheck.Service(ctx, cfg); err != nil {
		t.Fatalf("mTLS listen addr: %v", err)
	}
	plain := cfg
	plain.TLS = config.TLS{}
	if err := healthcheck.Service(ctx, plain); err == nil {
		t.Fatal("plaintext against an mTLS server: want an error")
	}
	cfg.HealthAddr = "0.0.0.0:" + plainPort
	if err := healthcheck.Service(ctx, cfg); err != nil {
		t.Fatalf("health addr: %v", err)
	}
	cfg.HealthAddr = ":0"
	if err := healthcheck.Service(ctx, cfg); err == nil || !strings.Contains(err.Error(), "no fixed port") {
		t.Fatalf("port 0: got %v", err)
	}
}

func TestGatewayHTTP(t *testing.T) {
	t.Parallel()
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	if err := healthcheck.Gateway(context.Background(), ":"+port); err != nil {
		t.Fatalf("healthy: %v", err)
	}
	status = http.StatusServiceUnavailable
	if err := healthcheck.Gateway(context.Background(), ":"+port); !errors.Is(err, healthcheck.ErrNotServing) {
		t.Fatalf("503: got %v", err)
	}
}

func TestLoopback(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{":50051": "127.0.0.1:50051", "0.0.0.0:9090": "127.0.0.1:9090", "[::]:8080": "127.0.0.1:8080"} {
		got, err := healthcheck.Loopback(in)
		if err != nil || got != want {
			t.Errorf("Loopback(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := healthcheck.Loopback("nope"); err == nil {
		t.Error("Loopback(nope): want an error")
	}
}
