package security

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/deploy/localstack"
)

// The suite's stack: every service of the list as real processes (make run's code, deploy/localstack)
// with mTLS on, the gateway in the prod profile with its own random HS256 keys. Started once, on first
// use, by the tests that need it; stopped by TestMain.
var theStack = &stackFixture{}

type stackFixture struct {
	once   sync.Once
	err    error
	dir    string
	binDir string
	s      *localstack.Stack
	info   localstack.Info
	// keys are the gateway's HS256 keys by kid (its GATEWAY_JWT_KEYS): "k2" is the current one, which
	// signs; "k1" still verifies.
	keys map[string][]byte
}

// jwtIssuer is the gateway's default GATEWAY_JWT_ISSUER.
const jwtIssuer = "shopmesh-gateway"

// stack returns the running stack, starting it on first use (the binaries are built, which takes a
// while on a cold cache). A stack that does not start fails the test: it needs no external server.
func stack(t testing.TB) *stackFixture {
	t.Helper()
	f := theStack
	f.once.Do(func() { f.err = f.start() })
	if f.err != nil {
		t.Fatalf("security stack: %v", f.err)
	}
	return f
}

func (f *stackFixture) start() error {
	root, err := localstack.FindRoot(".")
	if err != nil {
		return err
	}
	if f.dir, err = os.MkdirTemp("", "shopmesh-security-"); err != nil {
		return err
	}
	f.keys = map[string][]byte{"k2": randomKey(), "k1": randomKey()}
	policy := filepath.Join(f.dir, "order-policy.yaml")
	if err := os.WriteFile(policy, []byte(orderPolicy), 0o600); err != nil {
		return err
	}
	cfg := localstack.Default(root)
	cfg.DataDir, cfg.RunDir = filepath.Join(f.dir, "data"), filepath.Join(f.dir, "run")
	f.binDir = filepath.Join(root, "bin", "security")
	cfg.BinDir = f.binDir
	cfg.FreePorts = true
	cfg.NATSAddr, cfg.KafkaAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	cfg.StopTimeout = 20 * time.Second
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.ServiceEnv = map[string][]string{
		localstack.Gateway: {
			"GATEWAY_PROFILE=prod",
			// The API port in plain HTTP (prod's opt-out for a proxy that terminates TLS): the stack's
			// readiness probe speaks HTTP; the attacks below are the same over TLS.
			"GATEWAY_HTTPS_TERMINATED_UPSTREAM=true",
			fmt.Sprintf("GATEWAY_JWT_KEYS=k2:%s,k1:%s", f.keys["k2"], f.keys["k1"]),
		},
		// The order service's own rules, plus payment on GetOrder: lets the suite reach the x-customer-id
		// check behind the policy with a non-edge identity (see TestForgedCustomer).
		localstack.Order: {"ORDER_AUTHZ_POLICY_FILE=" + policy},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if f.s, err = localstack.Start(ctx, cfg); err != nil {
		return err
	}
	f.info = f.s.Info()
	return nil
}

// orderPolicy is the order service's policy (services/order/internal/rpc/policy.go) with payment added
// to GetOrder only.
const orderPolicy = `methods:
  /shopmesh.order.v1.OrderService/CreateOrder: [spiffe://shopmesh.local/gateway]
  /shopmesh.order.v1.OrderService/GetOrder: [spiffe://shopmesh.local/gateway, spiffe://shopmesh.local/payment]
  /shopmesh.order.v1.OrderService/CancelOrder: [spiffe://shopmesh.local/gateway]
  /shopmesh.order.v1.OrderService/WatchOrder: [spiffe://shopmesh.local/gateway]
  /shopmesh.order.v1.OrderService/Checkout: [spiffe://shopmesh.local/gateway]
`

// randomKey is a 32-byte HS256 key written as 64 hex characters.
func randomKey() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return []byte(hex.EncodeToString(b))
}

// grpcAddr is the first instance of service.
func (f *stackFixture) grpcAddr(t testing.TB, service string) string {
	t.Helper()
	for _, i := range f.info.Instances {
		if i.Service == service && i.GRPCAddr != "" {
			return i.GRPCAddr
		}
	}
	t.Fatalf("no %s instance in the stack", service)
	return ""
}

// binary is the path of service's binary, built by the stack.
func (f *stackFixture) binary(service string) string { return filepath.Join(f.binDir, service) }

// closeFixtures stops what the suite started (TestMain calls it after the tests).
func closeFixtures() {
	f := theStack
	if f.s != nil {
		f.s.Stop()
	}
	if f.dir != "" {
		_ = os.RemoveAll(f.dir)
	}
}
