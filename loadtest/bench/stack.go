package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
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
	Procs  map[int]string
	client *http.Client
	tokens []string
}

// StartStack starts the `make run` stack on free ports (serviceEnv adds per-service variables, e.g. a
// PostgreSQL DSN) and mints customer tokens.
func StartStack(ctx context.Context, cl *Cleanup, root string, serviceEnv map[string][]string) (*Stack, error) {
	s, t, dir, err := loadtest.StartStack(ctx, loadtest.StackOptions{Root: root, Env: environ(), ServiceEnv: serviceEnv})
	if err != nil {
		return nil, err
	}
	cl.Add(func() { s.Stop(); removeAll(dir) })
	st := &Stack{Target: t, client: &http.Client{
		Transport: &http.Transport{MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000}, Timeout: 30 * time.Second}}
	st.Procs = map[int]string{}
	for _, i := range s.Instances() {
		st.Pids = append(st.Pids, i.PID)
		st.Procs[i.PID] = i.Name()
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
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.Token == "" {
		return "", fmt.Errorf("dev token: %s %v", resp.Status, err)
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
	return s.do(ctx, http.MethodPost, "/v1/orders", fmt.Appendf(nil, `{"items":[{"sku":"SKU-%04d","quantity":1}]}`, 1+rand.IntN(24)),
		map[string]string{"Content-Type": "application/json", "Idempotency-Key": uuid.NewString()}, http.StatusCreated)
}

func environ() []string { return os.Environ() }

func removeAll(dir string) { _ = os.RemoveAll(dir) }
