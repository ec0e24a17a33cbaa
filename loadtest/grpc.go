package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bojand/ghz/runner"
	"github.com/google/uuid"

	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
)

// GHZConfig reads ghz/<name>.json (the file users pass to `ghz --config`).
func GHZConfig(root, name string) (runner.Config, error) {
	var c runner.Config
	data, err := os.ReadFile(filepath.Join(root, "loadtest", "ghz", name+".json"))
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("ghz/%s.json: %w", name, err)
	}
	return c, nil
}

// service is the service a gRPC scenario calls: the prefix of its name.
func service(scenario string) string { s, _, _ := strings.Cut(scenario, "-"); return s }

// runGRPC runs one ghz scenario for d at its configured rate times scale (open loop: ghz's constant
// pacer with enough workers). orderID replaces the placeholder order id of order-get / order-watch.
func runGRPC(t Target, sc Scenario, d time.Duration, scale float64, orderID string) Result {
	addr := t.Addr(service(sc.Name))
	fail := func(note string) Result {
		return Result{Scenario: sc.Name, Kind: GRPC, Target: addr, Note: note, Codes: map[string]int{}}
	}
	if addr == "" {
		return fail("no address for " + service(sc.Name))
	}
	c, err := GHZConfig(t.Root, sc.Name)
	if err != nil {
		return fail(err.Error())
	}
	c.Host = addr
	c.Proto = filepath.Join(t.Root, c.Proto)
	for i, p := range c.ImportPaths {
		c.ImportPaths[i] = filepath.Join(t.Root, p)
	}
	if t.TLS {
		c.RootCert = filepath.Join(t.CertsDir, filepath.Base(c.RootCert))
		c.Cert = filepath.Join(t.CertsDir, filepath.Base(c.Cert))
		c.Key = filepath.Join(t.CertsDir, filepath.Base(c.Key))
	} else {
		c.RootCert, c.Cert, c.Key, c.Insecure = "", "", "", true
	}
	c.RPS = uint(max(1, float64(c.RPS)*scale))
	// Enough workers that the pacer, not the workers, sets the rate (open loop) for calls up to ~1 s.
	c.C = max(c.C, c.RPS)
	c.Z = runner.Duration(d)
	c.X = 0
	c.N = 0
	if orderID != "" {
		if m, ok := c.Data.(map[string]any); ok {
			if _, ok := m["order_id"]; ok && !strings.Contains(fmt.Sprint(m["order_id"]), "{{") {
				m["order_id"] = orderID
			}
		}
	}
	rep, err := runner.Run(c.Call, c.Host, runner.WithConfig(&c))
	if err != nil {
		return fail(err.Error())
	}
	samples := make([]Sample, 0, len(rep.Details))
	var first time.Time
	for _, dt := range rep.Details {
		if first.IsZero() || dt.Timestamp.Before(first) {
			first = dt.Timestamp
		}
	}
	for _, dt := range rep.Details {
		samples = append(samples, Sample{At: dt.Timestamp.Sub(first), Latency: dt.Latency, Code: dt.Status, OK: dt.Error == "" || slices.Contains(sc.OKCodes, dt.Status)})
	}
	return summarize(sc, addr, float64(c.RPS), samples)
}

// createOrder places one order over gRPC (as the gateway) so order-get and order-watch have a real id.
func createOrder(ctx context.Context, t Target) (string, error) {
	conn, closeConn, err := t.dial("order", "gateway")
	if err != nil {
		return "", err
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := orderv1.NewOrderServiceClient(conn).CreateOrder(ctx, &orderv1.CreateOrderRequest{
		CustomerId: "cust-0001", IdempotencyKey: "loadtest-" + uuid.NewString(),
		Items: []*orderv1.OrderItem{{Sku: "SKU-0001", Quantity: 1}},
	})
	if err != nil {
		return "", fmt.Errorf("create order: %w", err)
	}
	return resp.GetOrder().GetId(), nil
}
