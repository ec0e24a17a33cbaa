package localstack_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
)

// jaegerTrace is the part of Jaeger's /api/traces/<id> answer the test reads.
type jaegerTrace struct {
	Data []struct {
		Spans []struct {
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			ProcessID     string `json:"processID"`
			References    []struct {
				RefType string `json:"refType"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			Tags []struct {
				Key   string `json:"key"`
				Value any    `json:"value"`
			} `json:"tags"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
	} `json:"data"`
}

// TestOneTrace starts the stack with tracing to the real Jaeger, places one order through the
// gateway's HTTP API while a WatchStock stream is open, and reads back through Jaeger's query API one
// trace holding spans of the gateway, order, inventory and payment, the Kafka consumer spans of
// inventory and payment (the order events), the NATS consumer span of the inventory stock feed, the
// outbox relays' producer spans and SQL spans of the three databases.
// Afterwards every process's /metrics (admin port from stack.json) is checked for its families.
func TestOneTrace(t *testing.T) {
	query := infratest.Require(t, infratest.JaegerQueryURL)
	endpoint := infratest.Shared(t, "jaeger")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg, logs := testConfig(t)
	cfg.OTLPEndpoint = endpoint
	defer func() {
		if t.Failed() {
			t.Logf("stack log:\n%s", logs.String())
		}
	}()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- localstack.Run(runCtx, cfg, &out) }()
	info := waitStackFile(t, ctx, filepath.Join(cfg.RunDir, "stack.json"), done)
	for _, i := range info.Instances {
		if i.AdminAddr == "" {
			t.Fatalf("%s: no admin_addr in stack.json", i.Name())
		}
	}

	// A NATS subscriber for the stock change the order makes.
	ic := inventoryv1.NewInventoryServiceClient(dial(t, info, localstack.Inventory))
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	stock, err := ic.WatchStock(wctx, &inventoryv1.WatchStockRequest{Skus: []string{"SKU-0003"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stock.Recv(); err != nil {
		t.Fatalf("watch stock: %v", err)
	}

	// The test is the trace's root: it knows the id to ask Jaeger for.
	var tid [16]byte
	var sid [8]byte
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:])
	traceID := hex.EncodeToString(tid[:])
	traceparent := "00-" + traceID + "-" + hex.EncodeToString(sid[:]) + "-01"

	post := func(path, token, body string, want int, into any) {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
		defer rcancel()
		req, _ := http.NewRequestWithContext(rctx, http.MethodPost, info.GatewayURL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Idempotency-Key", "trace-1")
			req.Header.Set("traceparent", traceparent)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("POST %s: %s %s", path, resp.Status, data)
		}
		if err := json.Unmarshal(data, into); err != nil {
			t.Fatalf("POST %s: %v in %s", path, err, data)
		}
	}
	var tok struct{ Token string }
	post("/v1/dev/token", "", `{"customer_id":"cust-0001"}`, http.StatusOK, &tok)
	var created struct{ ID, Status string }
	post("/v1/orders", tok.Token, `{"items":[{"sku":"SKU-0003","quantity":1}]}`, http.StatusCreated, &created)
	if _, err := stock.Recv(); err != nil {
		t.Fatalf("watch stock after the order: %v", err)
	}
	stopWatch()
	t.Logf("order %s placed with trace %s", created.ID, traceID)

	// Poll Jaeger until the trace has every part (spans arrive in batches, from six processes).
	want := []string{
		"service gateway", "service order", "service inventory", "service payment",
		"kafka consumer in inventory", "kafka consumer in payment", "nats consumer in inventory",
		"producer in order", "sql in order", "sql in inventory", "sql in payment",
	}
	start := time.Now()
	var have map[string]int
	var spans int
	for {
		have, spans = readTrace(t, ctx, query, traceID)
		missing := 0
		for _, w := range want {
			if have[w] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if ctx.Err() != nil || time.Since(start) > 90*time.Second {
			t.Fatalf("trace %s after %v: %d spans, parts %v; want all of %v", traceID, time.Since(start).Round(time.Millisecond), spans, have, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
	keys := make([]string, 0, len(have))
	for k := range have {
		keys = append(keys, fmt.Sprintf("%s=%d", k, have[k]))
	}
	sort.Strings(keys)
	t.Logf("trace %s complete in Jaeger after %v: %d spans; %s", traceID, time.Since(start).Round(time.Millisecond), spans, strings.Join(keys, ", "))

	checkMetrics(t, ctx, info)
}

// readTrace returns the trace's parts (see TestOneTrace) with their span counts.
func readTrace(t *testing.T, ctx context.Context, query, traceID string) (map[string]int, int) {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, strings.TrimSuffix(query, "/")+"/api/traces/"+traceID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("jaeger query: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return map[string]int{}, 0
	}
	var tr jaegerTrace
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		t.Fatalf("jaeger answer: %v", err)
	}
	have := map[string]int{}
	n := 0
	for _, d := range tr.Data {
		for _, s := range d.Spans {
			n++
			svc := d.Processes[s.ProcessID].ServiceName
			have["service "+svc]++
			tags := map[string]string{}
			for _, tg := range s.Tags {
				tags[tg.Key] = fmt.Sprint(tg.Value)
			}
			if strings.HasPrefix(s.OperationName, "sql.") {
				have["sql in "+svc]++
			}
			switch tags["span.kind"] {
			case "consumer":
				have[tags["messaging.system"]+" consumer in "+svc]++
			case "producer":
				have["producer in "+svc]++
			}
		}
	}
	return have, n
}

var sample = regexp.MustCompile(`(?m)^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([-+0-9.eEInf]+|NaN)`)

// checkMetrics reads every running process's /metrics (admin_addr of stack.json) and checks the
// families each service must expose after some load, with sane (non-negative) values.
func checkMetrics(t *testing.T, ctx context.Context, info localstack.Info) {
	t.Helper()
	common := []string{"go_goroutines", "process_resident_memory_bytes"}
	want := map[string][]string{
		localstack.Gateway: {"gateway_http_requests_total", "grpc_client_handled_total", "shopmesh_breaker_state"},
		localstack.Order: {"grpc_server_handled_total", "grpc_client_handled_total", "shopmesh_breaker_state",
			"shopmesh_outbox_pending_events", "shopmesh_outbox_published_events_total", "shopmesh_saga_outcomes_total"},
		localstack.Inventory: {"grpc_server_handled_total", "shopmesh_outbox_pending_events", "shopmesh_consumer_messages_total", "shopmesh_consumer_lag_messages"},
		localstack.Payment:   {"grpc_server_handled_total", "shopmesh_outbox_pending_events", "shopmesh_consumer_messages_total", "shopmesh_consumer_lag_messages"},
	}
	// Per-service families may live on one instance only (the Kafka partition owner, the instance the
	// round robin picked), so they are summed over the service's instances; runtime ones are per process.
	perService := map[string]map[string]float64{}
	for _, inst := range info.Instances {
		if !alive(inst.PID) {
			t.Logf("%s is not running (killed by the test); its metrics are not read", inst.Name())
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+inst.AdminAddr+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("%s /metrics: %v", inst.Name(), err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		cancel()
		values := map[string]float64{}
		for _, m := range sample.FindAllSubmatch(body, -1) {
			name := string(m[1])
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suffix); ok && bytes.Contains(body, []byte("# TYPE "+base+" histogram")) {
					name = base
				}
			}
			v, _ := strconv.ParseFloat(string(m[3]), 64)
			values[name] += v
		}
		for _, f := range common {
			if v, ok := values[f]; !ok || v <= 0 {
				t.Errorf("%s /metrics: %s = %v (present %v)", inst.Name(), f, v, ok)
			}
		}
		if perService[inst.Service] == nil {
			perService[inst.Service] = map[string]float64{}
		}
		for k, v := range values {
			perService[inst.Service][k] += v
		}
	}
	for svc, fams := range want {
		var got []string
		for _, f := range fams {
			v, ok := perService[svc][f]
			if !ok || v < 0 || v != v {
				t.Errorf("%s /metrics: %s = %v (present %v)", svc, f, v, ok)
				continue
			}
			got = append(got, fmt.Sprintf("%s=%g", f, v))
		}
		t.Logf("%s metrics (summed over instances): %s", svc, strings.Join(got, " "))
	}
}
