package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

// Defect 8, wired: payment on PostgreSQL turns NOT_SERVING (and leaves its clients' rotation) while its
// database is unreachable, stays live, and turns SERVING again when the database is back.
func TestReadinessFollowsDatabase(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := sqldbtest.Postgres(t)
	proxy := sqldbtest.NewProxy(t, dsn)
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	env := map[string]string{
		"PAYMENT_PROFILE":     "dev",
		"PAYMENT_LISTEN_ADDR": "127.0.0.1:0",
		"PAYMENT_DSN":         proxy.DSN(dsn),
		"KAFKA_BROKERS":       cluster.ListenAddrs()[0],
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	runCtx, stop := context.WithCancel(ctx)
	logs, logw := io.Pipe()
	serving := make(chan servingLine, 1)
	go scanServing(logs, serving)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, nil, lookup, logw)
		_ = logw.Close()
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	var target string
	select {
	case line := <-serving:
		target = line.Addr
	case err := <-done:
		t.Fatalf("run returned before serving: %v", err)
	case <-ctx.Done():
		t.Fatal("service never served")
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthgrpc.NewHealthClient(conn)
	status := func(service string) healthgrpc.HealthCheckResponse_ServingStatus {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		resp, err := hc.Check(cctx, &healthgrpc.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health %q: %v", service, err)
		}
		return resp.GetStatus()
	}
	waitFor := func(what string, want healthgrpc.HealthCheckResponse_ServingStatus) {
		t.Helper()
		for status("") != want {
			select {
			case <-ctx.Done():
				t.Fatalf("gave up waiting for %s", what)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	waitFor("SERVING at start", healthgrpc.HealthCheckResponse_SERVING)
	proxy.Down()
	waitFor("NOT_SERVING with the database down", healthgrpc.HealthCheckResponse_NOT_SERVING)
	if st := status("shopmesh.payment.v1.PaymentService"); st != healthgrpc.HealthCheckResponse_NOT_SERVING {
		t.Errorf("PaymentService with the database down: %v", st)
	}
	if st := status(platform.LivenessService); st != healthgrpc.HealthCheckResponse_SERVING {
		t.Errorf("liveness with the database down: %v", st)
	}
	proxy.Up()
	waitFor("SERVING with the database back", healthgrpc.HealthCheckResponse_SERVING)
}
