package loadtest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// Target is what the scenarios run against.
type Target struct {
	// Root is the repository root: ghz/ configs and proto/ are read from it.
	Root string
	// GatewayURL is the gateway's base URL ("http://127.0.0.1:8080"); "" skips the HTTP scenarios.
	GatewayURL string
	// Order, Inventory and Payment are gRPC addresses (one instance each); "" skips that service's
	// gRPC scenarios.
	Order, Inventory, Payment string
	// CertsDir holds ca.pem and <service>.pem / <service>-key.pem (make certs). With TLS set, gRPC
	// scenarios present the certificate named in their ghz config from this directory.
	CertsDir string
	TLS      bool
}

// Addr returns the gRPC address of service ("order", "inventory", "payment").
func (t Target) Addr(service string) string {
	switch service {
	case localstack.Order:
		return t.Order
	case localstack.Inventory:
		return t.Inventory
	case localstack.Payment:
		return t.Payment
	}
	return ""
}

// DetectTLS reports whether addr completes a TLS handshake with the dev certificates in certsDir (a
// service started with <P>_TLS_* set); false when it speaks plaintext or the files are missing.
func DetectTLS(addr, certsDir string) bool {
	src, err := loadCerts(certsDir, localstack.Gateway)
	if err != nil {
		return false
	}
	defer func() { _ = src.Close() }()
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, src.ClientConfig(""))
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

func loadCerts(dir, service string) (*mtls.Source, error) {
	return mtls.Load(mtls.Config{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, service+".pem"),
		KeyFile:  filepath.Join(dir, service+"-key.pem"),
	})
}

// dial connects to a service as caller (its certificate when TLS is on).
func (t Target) dial(service, caller string) (*grpc.ClientConn, func(), error) {
	creds := insecure.NewCredentials()
	closeSrc := func() {}
	if t.TLS {
		src, err := loadCerts(t.CertsDir, caller)
		if err != nil {
			return nil, nil, err
		}
		closeSrc = func() { _ = src.Close() }
		creds = src.ClientCredentials(service)
	}
	conn, err := grpc.NewClient(t.Addr(service), grpc.WithTransportCredentials(creds))
	if err != nil {
		closeSrc()
		return nil, nil, err
	}
	return conn, func() { _ = conn.Close(); closeSrc() }, nil
}

// StackOptions configure StartStack.
type StackOptions struct {
	Root string
	// Env is the children's base environment (main passes os.Environ()).
	Env    []string
	Logger *slog.Logger
	// ServiceEnv adds "KEY=VALUE" per service (after the stack's own, so it wins: e.g. a PostgreSQL DSN).
	ServiceEnv map[string][]string
	// Replicas is the number of inventory and of payment instances (default 2, as `make run`).
	Replicas int
}

// StartStack starts the `make run` stack (every service of services/*/service.yaml with its
// dev_instances — order ×1, gateway ×1 — but inventory and payment ×o.Replicas, default 2) on free loopback
// ports with its data and logs in a fresh temporary directory, and returns it with the matching
// Target. The gateway's per-client rate limit is raised so it measures the services, not the limiter.
// Stop the stack and remove dir when done.
func StartStack(ctx context.Context, o StackOptions) (*localstack.Stack, Target, string, error) {
	dir, err := os.MkdirTemp("", "shopmesh-loadtest-")
	if err != nil {
		return nil, Target{}, "", err
	}
	cfg := localstack.Default(o.Root)
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.RunDir = filepath.Join(dir, "run")
	replicas := o.Replicas
	if replicas <= 0 {
		replicas = 2
	}
	// Every service of the list on free ports (the gateway included), inventory and payment with
	// replicas instances each.
	cfg.FreePorts = true
	cfg.Instances = map[string][]string{
		localstack.Inventory: localstack.Addrs("127.0.0.1", 0, replicas),
		localstack.Payment:   localstack.Addrs("127.0.0.1", 0, replicas),
	}
	cfg.NATSAddr = "127.0.0.1:0"
	cfg.KafkaAddr = "127.0.0.1:0"
	cfg.Env = o.Env
	cfg.Logger = o.Logger
	cfg.ServiceEnv = map[string][]string{
		localstack.Gateway: {"GATEWAY_RATE_LIMIT_RPS=1000000", "GATEWAY_RATE_LIMIT_BURST=1000000"},
	}
	for k, v := range o.ServiceEnv {
		cfg.ServiceEnv[k] = append(cfg.ServiceEnv[k], v...)
	}
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, Target{}, "", fmt.Errorf("start stack: %w", err)
	}
	t, err := TargetFromInfo(o.Root, s.Info())
	if err != nil {
		s.Stop()
		_ = os.RemoveAll(dir)
		return nil, Target{}, "", err
	}
	return s, t, dir, nil
}

// TargetFromInfo builds a Target from a stack's stack.json content (first instance of each service).
func TargetFromInfo(root string, info localstack.Info) (Target, error) {
	t := Target{Root: root, GatewayURL: info.GatewayURL, CertsDir: info.CertsDir, TLS: info.CertsDir != ""}
	for _, i := range info.Instances {
		switch {
		case i.Service == localstack.Order && t.Order == "":
			t.Order = i.GRPCAddr
		case i.Service == localstack.Inventory && t.Inventory == "":
			t.Inventory = i.GRPCAddr
		case i.Service == localstack.Payment && t.Payment == "":
			t.Payment = i.GRPCAddr
		}
	}
	if t.Order == "" || t.Inventory == "" || t.Payment == "" {
		return t, errors.New("stack info: order, inventory and payment instances expected")
	}
	return t, nil
}

// ReadStackFile reads a stack.json written by a running stack (make run writes .run/stack.json).
func ReadStackFile(path string) (localstack.Info, error) {
	var info localstack.Info
	data, err := os.ReadFile(path)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(data, &info); err != nil {
		return info, fmt.Errorf("%s: %w", path, err)
	}
	return info, nil
}
