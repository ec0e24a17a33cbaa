//go:build newservicecheck

package main

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// TestMakeRunSmoke is the `make run` step of deploy/newservice-check.sh: in the copy of the repository
// NEWSERVICE_ROOT, where `make new-service NAME=$NEWSERVICE_NAME` ran, it starts the whole suite as
// `make run` does (deploy/localstack: every service of the list, mTLS on, free ports so it does not
// collide with a running `make run`) and checks that the new service is ready (grpc.health.v1 SERVING)
// and that its authorization policy is enforced: the edge (gateway) reaches GetItem, order is refused.
func TestMakeRunSmoke(t *testing.T) {
	root, name := os.Getenv("NEWSERVICE_ROOT"), os.Getenv("NEWSERVICE_NAME")
	if root == "" || name == "" {
		t.Skip("run by deploy/newservice-check.sh (NEWSERVICE_ROOT, NEWSERVICE_NAME)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cfg := localstack.Default(root)
	cfg.FreePorts, cfg.NATSAddr, cfg.KafkaAddr = true, "127.0.0.1:0", "127.0.0.1:0"
	cfg.Console = os.Stdout
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stdout, nil))
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("make run: %v", err)
	}
	defer s.Stop()
	var addr string
	for _, i := range s.Instances() {
		if i.Service == name {
			addr = i.GRPCAddr
		}
	}
	if addr == "" {
		t.Fatalf("make run started no %s instance: %+v", name, s.Instances())
	}
	certs := s.Info().CertsDir
	if certs == "" {
		t.Fatal("the stack runs without mTLS; the smoke checks the policy over mTLS")
	}
	dial := func(as string) *grpc.ClientConn {
		src, err := mtls.Load(localstack.CertFiles(certs, as))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(src.ClientCredentials(name)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	edge, order := dial("gateway"), dial("order")
	h, err := healthpb.NewHealthClient(edge).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("%s health = %v, %v; want SERVING", name, h, err)
	}
	// GetItemRequest{id: "smoke"} has StringValue's wire form (field 1, a string): the call needs no
	// generated code of the new contract here.
	method := "/shopmesh." + name + ".v1." + title(name) + "Service/GetItem"
	req := wrapperspb.String("smoke")
	err = edge.Invoke(ctx, method, req, &emptypb.Empty{})
	if status.Code(err) != codes.NotFound {
		t.Errorf("GetItem as the edge = %v, want NOT_FOUND (allowed, no such item)", err)
	}
	err = order.Invoke(ctx, method, req, &emptypb.Empty{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("GetItem as order = %v, want PERMISSION_DENIED (the policy allows only the edge)", err)
	}
	t.Logf("%s serves in make run on %s; policy enforced", name, addr)
}

func title(s string) string { return string(s[0]-'a'+'A') + s[1:] }
