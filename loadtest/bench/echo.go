package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// echo answers UnaryCall with the request's payload.
type echo struct {
	testgrpc.UnimplementedTestServiceServer
}

func (echo) UnaryCall(_ context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: in.GetPayload()}, nil
}

var payload = &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 64)}}

// unaryOp calls UnaryCall with a 5 s deadline, as every shopmesh call carries one.
func unaryOp(c testgrpc.TestServiceClient) Op {
	return func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := c.UnaryCall(ctx, payload)
		return err
	}
}

// Cleanup collects teardown steps, run in reverse.
type Cleanup []func()

// Add registers a teardown step.
func (c *Cleanup) Add(f func()) { *c = append(*c, f) }

// Run runs the steps in reverse order (a pointer receiver: `defer cl.Run()` must see steps added later).
func (c *Cleanup) Run() {
	steps := *c
	*c = nil
	for i := len(steps) - 1; i >= 0; i-- {
		steps[i]()
	}
}

// bareEcho serves echo on a plain grpc-go server with creds and dials it with dialCreds.
func bareEcho(cl *Cleanup, serverCreds, dialCreds credentials.TransportCredentials) (testgrpc.TestServiceClient, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer(grpc.Creds(serverCreds))
	testgrpc.RegisterTestServiceServer(srv, echo{})
	go func() { _ = srv.Serve(lis) }()
	cl.Add(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(dialCreds))
	if err != nil {
		return nil, err
	}
	cl.Add(func() { _ = conn.Close() })
	c := testgrpc.NewTestServiceClient(conn)
	return c, unaryOp(c)(context.Background())
}

// platformEcho serves echo through the platform facade (New + NewServer + Serve, dev profile: the
// whole server chain) and calls it through a second platform's Dial (client chain: deadline, breaker,
// retries in service config, health-checked round robin). tune edits both configs (tracing, TLS).
func platformEcho(ctx context.Context, cl *Cleanup, tune func(*config.Config)) (testgrpc.TestServiceClient, error) {
	logger := slog.New(slog.DiscardHandler)
	scfg := config.Default(config.Dev)
	scfg.Service, scfg.ListenAddr = "echo", "127.0.0.1:0"
	if tune != nil {
		tune(&scfg)
	}
	sp, err := platform.New(ctx, scfg, logger)
	if err != nil {
		return nil, fmt.Errorf("server platform: %w", err)
	}
	srv := sp.NewServer()
	testgrpc.RegisterTestServiceServer(srv, echo{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() { _ = sp.Serve(sctx, srv, lis); close(served) }()
	cl.Add(func() { stop(); <-served; _ = sp.Close() })

	ccfg := config.Default(config.Dev)
	ccfg.Service = "bench"
	ccfg.Targets = map[string]config.Target{"echo": {Addresses: []string{lis.Addr().String()}}}
	if tune != nil {
		tune(&ccfg)
	}
	cp, err := platform.New(ctx, ccfg, logger)
	if err != nil {
		return nil, fmt.Errorf("client platform: %w", err)
	}
	cl.Add(func() { _ = cp.Close() })
	conn, err := cp.Dial("echo")
	if err != nil {
		return nil, err
	}
	c := testgrpc.NewTestServiceClient(conn)
	return c, waitUp(ctx, unaryOp(c))
}

// waitUp retries op until it succeeds (health checking makes the first calls wait for SERVING).
func waitUp(ctx context.Context, op Op) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := op(ctx)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// devCerts issues a CA and leaves for the named services into dir (in process, like `make certs`).
func devCerts(dir string, services ...string) error {
	ca, err := mtls.NewCA("shopmesh bench CA", time.Now().Add(-time.Hour), 24*time.Hour)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o644); err != nil {
		return err
	}
	for _, s := range services {
		cert, key, err := ca.Issue(s, time.Now().Add(-time.Hour), 24*time.Hour)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, s+".pem"), cert, 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, s+"-key.pem"), key, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func source(dir, svc string) (*mtls.Source, error) {
	return mtls.Load(mtls.Config{
		CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, svc+".pem"), KeyFile: filepath.Join(dir, svc+"-key.pem"),
	})
}

var (
	_ = insecure.NewCredentials
	_ tls.Config
)
