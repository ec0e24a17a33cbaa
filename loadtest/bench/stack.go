package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/loadtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
)

// Stack is a running stack the stack cases drive.
type Stack struct {
	Target loadtest.Target
	Pids   []int
	// Procs names each pid ("order-1").
	Procs map[int]string
	// Admin is each pid's admin HTTP address (/metrics, /debug/pprof/).
	Admin map[int]string
	// ProfileDir, when set, makes the order cases save a CPU profile of every stack process there
	// (<label>-<instance>.pprof), taken over the closed-loop rounds.
	ProfileDir string
	// SKUs is how many catalogue products orders pick from at random (the seeded SKU-0001…; default 24,
	// the dev catalogue). Few SKUs make concurrent orders wait on the same product rows.
	SKUs int
	// OpenRate, when > 0, replaces half the closed-loop maximum as the order cases' open-loop rate.
	OpenRate float64
	// Infra are servers the stack uses whose CPU the order cases report too (name → pid, see InfraPids).
	Infra map[string]int
	// Stop stops the stack's processes (idempotent; the cleanup stops them too).
	Stop   func()
	client *http.Client
	tokens []string
}

// StartStack starts the `make run` stack on free ports (serviceEnv adds per-service variables, e.g. a
// PostgreSQL DSN; replicas is the number of inventory and payment instances, 0 = 2) and mints customer
// tokens.
func StartStack(ctx context.Context, cl *Cleanup, root string, serviceEnv map[string][]string, replicas int) (*Stack, error) {
	s, t, dir, err := loadtest.StartStack(ctx, loadtest.StackOptions{Root: root, Env: environ(), ServiceEnv: serviceEnv, Replicas: replicas})
	if err != nil {
		return nil, err
	}
	cl.Add(func() { s.Stop(); removeAll(dir) })
	st := &Stack{Target: t, client: &http.Client{
		Transport: &http.Transport{MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000}, Timeout: 30 * time.Second}}
	st.Stop = s.Stop
	st.Procs, st.Admin = map[int]string{}, map[int]string{}
	for _, i := range s.Instances() {
		st.Pids = append(st.Pids, i.PID)
		st.Procs[i.PID] = i.Name()
		st.Admin[i.PID] = i.AdminAddr
	}
	for i := 1; i <= 200; i++ {
		tok, err := st.token(ctx, fmt.Sprintf("cust-%04d", i))
		if err != nil {
			return nil, err
		}
		st.tokens = append(st.tokens, tok)
	}
	return st, nil
}

func (s *Stack) token(ctx context.Context, customer string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.Target.GatewayURL+"/v1/dev/token",
		bytes.NewReader(fmt.Appendf(nil, `{"customer_id":%q}`, customer)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		return "", fmt.Errorf("dev token: %s: %w", resp.Status, err)
	}
	if tok.Token == "" {
		return "", fmt.Errorf("dev token: %s: no token", resp.Status)
	}
	return tok.Token, nil
}

func (s *Stack) do(ctx context.Context, method, path string, body []byte, hdr map[string]string, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.Target.GatewayURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.tokens[rand.IntN(len(s.tokens))])
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return nil
}

// GatewayCase compares GET /v1/products/{sku} through the gateway (HTTP/JSON → gRPC → inventory) with
// the same GetProduct called over gRPC straight at an inventory instance, at concurrency 50. CPU
// includes every stack process.
func GatewayCase(s *Stack) (Case, func(), error) {
	creds := insecure.NewCredentials()
	closeSrc := func() {}
	if s.Target.TLS {
		src, err := source(s.Target.CertsDir, localstack.Gateway)
		if err != nil {
			return Case{}, nil, err
		}
		creds, closeSrc = src.ClientCredentials(localstack.Inventory), func() { _ = src.Close() }
	}
	conn, err := grpc.NewClient(s.Target.Inventory, grpc.WithTransportCredentials(creds))
	if err != nil {
		closeSrc()
		return Case{}, nil, err
	}
	inv := inventoryv1.NewInventoryServiceClient(conn)
	direct := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := inv.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: fmt.Sprintf("SKU-%04d", 1+rand.IntN(24))})
		return err
	}
	viaGateway := func(ctx context.Context) error {
		return s.do(ctx, http.MethodGet, fmt.Sprintf("/v1/products/SKU-%04d", 1+rand.IntN(24)), nil, nil, http.StatusOK)
	}
	return Case{Name: "Gateway/GetProduct/conc=50", Conc: 50, Variants: []Variant{
		{Name: "grpc-direct", Op: direct, Pids: s.Pids}, {Name: "gateway-http", Op: viaGateway, Pids: s.Pids},
	}}, func() { _ = conn.Close(); closeSrc() }, nil
}

// PlaceOrder is POST /v1/orders for one unit of a random SKU through the gateway (201 expected).
func (s *Stack) PlaceOrder(ctx context.Context) error {
	return s.do(ctx, http.MethodPost, "/v1/orders", fmt.Appendf(nil, `{"items":[{"sku":"SKU-%04d","quantity":1}]}`, 1+rand.IntN(s.skus())),
		map[string]string{"Content-Type": "application/json", "Idempotency-Key": uuid.NewString()}, http.StatusCreated)
}

// ProfileProcs fetches a CPU profile of d from every stack process's /debug/pprof/profile into
// s.ProfileDir/<label>-<instance>.pprof; the returned function waits for them and reports failures.
func (s *Stack) ProfileProcs(ctx context.Context, label string, d time.Duration) func() error {
	if s.ProfileDir == "" {
		return func() error { return nil }
	}
	secs := max(1, int(d.Round(time.Second)/time.Second))
	errs := make(chan error, len(s.Pids))
	for _, pid := range s.Pids {
		go func() { errs <- s.fetchProfile(ctx, pid, label, secs) }()
	}
	return func() error {
		var all []error
		for range s.Pids {
			if err := <-errs; err != nil {
				all = append(all, err)
			}
		}
		return errors.Join(all...)
	}
}

func (s *Stack) fetchProfile(ctx context.Context, pid int, label string, secs int) error {
	name := s.Procs[pid]
	if s.Admin[pid] == "" {
		return fmt.Errorf("profile %s: no admin address", name)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.Admin[pid], secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", name, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: %s (is %s_ADMIN_PPROF on?)", name, resp.Status, strings.ToUpper(strings.SplitN(name, "-", 2)[0]))
	}
	if err := os.MkdirAll(s.ProfileDir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(s.ProfileDir, label+"-"+name+".pprof")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("profile %s: %w", name, err)
	}
	return f.Close()
}

func (s *Stack) skus() int {
	if s.SKUs > 0 {
		return s.SKUs
	}
	return 24
}

func environ() []string { return os.Environ() }

func removeAll(dir string) { _ = os.RemoveAll(dir) }
