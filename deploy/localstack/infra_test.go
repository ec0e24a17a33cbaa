package localstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
)

// TestInfraStack is `make run INFRA=1`: the same processes on the real servers (fresh PostgreSQL
// databases, Kafka, NATS, Nacos for registration and config, Jaeger when up). Orders placed through
// the gateway end CONFIRMED, every gRPC instance is registered in Nacos under the stack's namespace,
// and a SIGKILLed payment instance started again with StartInstance serves and registers again.
func TestInfraStack(t *testing.T) {
	pg := infratest.Shared(t, "postgres")
	kafka := infratest.Shared(t, "kafka")
	nats := infratest.Shared(t, "nats")
	nacos := infratest.Shared(t, "nacos")
	cfg, logs := testConfig(t)
	inf := localstack.InfraEndpoints{
		DatabaseURL: pg, KafkaBrokers: strings.Split(kafka, ","), NATSURL: nats, NacosAddr: nacos,
		DBPrefix:       fmt.Sprintf("lsinfra_%d", os.Getpid()),
		NacosNamespace: fmt.Sprintf("lsinfra-%d-%d", os.Getpid(), time.Now().UnixNano()),
		OTLPEndpoint:   os.Getenv(infratest.OTLPEndpoint),
	}
	cfg.Infra = &inf
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start: %v\n%s", err, logs)
	}
	defer s.Stop()
	info := s.Info()
	if info.Infra == nil || info.GatewayURL == "" {
		t.Fatalf("stack.json: infra %v, gateway %q", info.Infra, info.GatewayURL)
	}
	if !strings.Contains(info.Infra.Databases["order"], inf.DBPrefix+"_order") {
		t.Fatalf("order database %q, want %s_order", info.Infra.Databases["order"], inf.DBPrefix)
	}
	var onDisk localstack.Info
	if data, err := os.ReadFile(s.StackFile()); err != nil || json.Unmarshal(data, &onDisk) != nil || onDisk.Infra == nil {
		t.Fatalf("stack.json: %v %s", err, data)
	}

	placeConfirmed(t, ctx, info.GatewayURL, "infra-a", 5)
	for _, svc := range []string{localstack.Order, localstack.Inventory, localstack.Payment} {
		want := addrsOf(info, svc)
		waitFor(t, ctx, svc+" registered in Nacos as "+strings.Join(want, ","), func() bool {
			return sameSet(nacosInstances(ctx, nacos, inf.NacosNamespace, svc), want)
		})
	}

	// Crash payment-2, check it leaves Nacos (ephemeral instance), start it again with the same address.
	if err := s.Kill("payment-2"); err != nil {
		t.Fatal(err)
	}
	p2 := instance(t, info, localstack.Payment, 2)
	if s.Running("payment-2") || alive(p2.PID) {
		t.Fatalf("payment-2 (pid %d) still running after Kill", p2.PID)
	}
	placeConfirmed(t, ctx, info.GatewayURL, "infra-b", 3)
	if err := s.StartInstance(ctx, "payment-2"); err != nil {
		t.Fatalf("start payment-2 again: %v", err)
	}
	again := instance(t, s.Info(), localstack.Payment, 2)
	if again.PID == p2.PID || again.GRPCAddr != p2.GRPCAddr {
		t.Fatalf("payment-2 after restart: pid %d addr %s, before pid %d addr %s", again.PID, again.GRPCAddr, p2.PID, p2.GRPCAddr)
	}
	waitFor(t, ctx, "payment-2 registered again", func() bool {
		return slices.Contains(nacosInstances(ctx, nacos, inf.NacosNamespace, localstack.Payment), p2.GRPCAddr)
	})
	placeConfirmed(t, ctx, info.GatewayURL, "infra-c", 3)
	if c := s.Crashed(); len(c) > 0 {
		t.Fatalf("crashed: %v\n%s", c, logs)
	}
}

// placeConfirmed places n orders through the gateway and waits until each is CONFIRMED.
func placeConfirmed(t *testing.T, ctx context.Context, base, keyPrefix string, n int) {
	t.Helper()
	do := func(method, path, token, key string, body any) (int, map[string]any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			data, _ := json.Marshal(body)
			rd = bytes.NewReader(data)
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(cctx, method, base+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		out := map[string]any{}
		data, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(data, &out)
		return resp.StatusCode, out
	}
	code, tok := do(http.MethodPost, "/v1/dev/token", "", "", map[string]string{"customer_id": "cust-0002"})
	token, _ := tok["token"].(string)
	if code != http.StatusOK || token == "" {
		t.Fatalf("dev token: %d %v", code, tok)
	}
	for i := range n {
		key := fmt.Sprintf("%s-%d-%d", keyPrefix, os.Getpid(), i)
		var id string
		// Placement right after a fault may meet a 503 with Retry-After: retry with the same key.
		waitFor(t, ctx, "order "+key+" accepted", func() bool {
			code, o := do(http.MethodPost, "/v1/orders", token, key,
				map[string]any{"items": []map[string]any{{"sku": fmt.Sprintf("SKU-%04d", 1+i%8), "quantity": 1}}})
			id, _ = o["id"].(string)
			return (code == http.StatusCreated || code == http.StatusOK) && id != ""
		})
		waitFor(t, ctx, "order "+id+" CONFIRMED", func() bool {
			code, o := do(http.MethodGet, "/v1/orders/"+id, token, "", nil)
			st, _ := o["status"].(string)
			if strings.Contains(st, "CANCELLED") {
				t.Fatalf("order %s cancelled: %v", id, o)
			}
			return code == http.StatusOK && strings.Contains(st, "CONFIRMED")
		})
	}
}

// nacosInstances lists the healthy instances of service in namespace over Nacos's v1 open API.
func nacosInstances(ctx context.Context, nacosAddr, namespace, service string) []string {
	q := url.Values{"serviceName": {service}, "namespaceId": {namespace}, "groupName": {"DEFAULT_GROUP"}, "healthyOnly": {"true"}}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, "http://"+nacosAddr+"/nacos/v1/ns/instance/list?"+q.Encode(), nil)
	if err != nil {
		return nil
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Hosts []struct {
			IP      string `json:"ip"`
			Port    int    `json:"port"`
			Healthy bool   `json:"healthy"`
		} `json:"hosts"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	var out []string
	for _, h := range body.Hosts {
		out = append(out, fmt.Sprintf("%s:%d", h.IP, h.Port))
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestReadInfraEnv reads infra.sh's env file; a missing server is named, Nacos and Jaeger are optional.
func TestReadInfraEnv(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, fmt.Sprintf("infra-%d.env", time.Now().UnixNano()))
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	full := `# generated by deploy/infra/infra.sh
export DATABASE_URL=postgres://shopmesh:shopmesh@127.0.0.1:55432/shopmesh?sslmode=disable
export PG_PORT=55432
export KAFKA_BROKERS=127.0.0.1:19092
export NATS_URL=nats://127.0.0.1:14222
export NACOS_ADDR=127.0.0.1:18848
export OTLP_ENDPOINT=127.0.0.1:4317
`
	e, err := localstack.ReadInfraEnv(write(full))
	if err != nil {
		t.Fatal(err)
	}
	if e.NacosAddr != "127.0.0.1:18848" || e.OTLPEndpoint != "127.0.0.1:4317" || len(e.KafkaBrokers) != 1 || e.NATSURL != "nats://127.0.0.1:14222" {
		t.Fatalf("%+v", e)
	}
	if got := e.DSN(localstack.Order); got != "postgres://shopmesh:shopmesh@127.0.0.1:55432/order_svc?sslmode=disable" {
		t.Fatalf("order DSN %s", got)
	}
	e.DBPrefix = "chaos_r1"
	if got := e.DSN(localstack.Payment); !strings.Contains(got, "/chaos_r1_payment?") {
		t.Fatalf("payment DSN with a prefix: %s", got)
	}
	if _, err := localstack.ReadInfraEnv(write(strings.ReplaceAll(full, "export KAFKA_BROKERS=127.0.0.1:19092\n", ""))); err == nil || !strings.Contains(err.Error(), "KAFKA_BROKERS") {
		t.Fatalf("without Kafka: %v", err)
	}
	noNacos, err := localstack.ReadInfraEnv(write(strings.ReplaceAll(full, "export NACOS_ADDR=127.0.0.1:18848\n", "")))
	if err != nil || noNacos.NacosAddr != "" {
		t.Fatalf("without Nacos: %+v %v", noNacos, err)
	}
}
