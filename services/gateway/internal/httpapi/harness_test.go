package httpapi_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/shopmesh/shopmesh/pkg/platform"
	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/gateway/internal/auth"
	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
	"github.com/shopmesh/shopmesh/services/gateway/internal/httpapi"
)

const (
	secret = "test-secret-test-secret-test-secret"
	issuer = "shopmesh-gateway"
)

type harness struct {
	t       testing.TB
	url     string
	fakes   *fakes.Backends
	tokens  *auth.Tokens
	api     *httpapi.Server
	metrics *prometheus.Registry
	logs    *logBuffer
}

// logBuffer holds the JSON log lines of the API and the platform under it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the log records that have the attribute key with the value.
func (b *logBuffer) lines(key, value string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for l := range strings.Lines(b.buf.String()) {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m[key] == value {
			out = append(out, m)
		}
	}
	return out
}

// metric reads a metric of the API's registry (what the admin port's /metrics serves) in the text
// format, e.g. gateway_http_requests_total{code="200",route="GET /healthz"}; ok is false if absent.
func (h *harness) metric(name string) (float64, bool) {
	h.t.Helper()
	mfs, err := h.metrics.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	base, labels, _ := strings.Cut(strings.TrimSuffix(name, "}"), "{")
	for _, mf := range mfs {
		if mf.GetName() != base {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			n := 0
			for kv := range strings.SplitSeq(labels, ",") {
				if kv == "" {
					continue
				}
				k, v, _ := strings.Cut(kv, "=")
				if got[k] != strings.Trim(v, `"`) {
					continue metrics
				}
				n++
			}
			if n != len(got) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func settings() httpapi.Settings {
	return httpapi.Settings{
		CallTimeout: 5 * time.Second, CreateTimeout: 5 * time.Second, StreamMaxDuration: 30 * time.Second,
		ImportTimeout: 30 * time.Second, WriteTimeout: 5 * time.Second, MaxBodyBytes: 64 << 10,
		MaxImportBytes: 1 << 20, MaxImportLineBytes: 4096, RateLimitRPS: 1000, RateLimitBurst: 1000,
		TokenTTL: time.Hour, DevTokens: true,
	}
}

// newHarness serves the API over loopback in front of fake backends reached through platform.Dial.
func newHarness(t testing.TB, tune func(*httpapi.Settings)) *harness {
	t.Helper()
	return harnessOn(t, fakes.Start(t), tune)
}

// newHarnessWithOrder is newHarness with the order service served through wrap (to script faults
// around the fake order service).
func newHarnessWithOrder(t testing.TB, wrap func(*fakes.Order) orderv1.OrderServiceServer) *harness {
	t.Helper()
	b := fakes.Start(t)
	b.Addrs["order"], b.Health["order"] = fakes.Serve(t, func(s *grpc.Server) { orderv1.RegisterOrderServiceServer(s, wrap(b.Order)) })
	return harnessOn(t, b, nil)
}

// harnessOn serves the API in front of b; tuneDeps, when given, changes its dependencies.
func harnessOn(t testing.TB, b *fakes.Backends, tune func(*httpapi.Settings), tuneDeps ...func(*httpapi.Deps)) *harness {
	t.Helper()
	cfg := platformcfg.Default(platformcfg.Test)
	cfg.Service = "gateway"
	for name, addr := range b.Addrs {
		cfg.Targets[name] = platformcfg.Target{Addresses: []string{addr}}
	}
	logs := &logBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	p, err := platform.New(context.Background(), cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	deps := httpapi.Deps{Logger: logger, Backends: map[string]httpapi.Backend{}, Metrics: prometheus.NewRegistry()}
	for name := range b.Addrs {
		conn, err := p.Dial(name)
		if err != nil {
			t.Fatal(err)
		}
		deps.Backends[name] = conn
		switch name {
		case "order":
			deps.Orders = orderv1.NewOrderServiceClient(conn)
		case "inventory":
			deps.Inventory = inventoryv1.NewInventoryServiceClient(conn)
		case "payment":
			deps.Payment = paymentv1.NewPaymentServiceClient(conn)
		}
	}
	deps.Tokens, err = auth.New(secret, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tuneDeps {
		f(&deps)
	}
	set := settings()
	if tune != nil {
		tune(&set)
	}
	api, err := httpapi.New(deps, set)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	t.Cleanup(api.Close)
	return &harness{t: t, url: srv.URL, fakes: b, tokens: deps.Tokens, api: api, metrics: deps.Metrics, logs: logs}
}

func (h *harness) token(sub string, scopes ...string) string {
	h.t.Helper()
	tok, err := h.tokens.Issue(sub, scopes, time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// do sends one request; token "" sends none; headers are "Name: value" strings.
func (h *harness) do(method, path, token string, body io.Reader, headers ...string) reply {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, h.url+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, hv := range headers {
		k, v, _ := strings.Cut(hv, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

func str(s string) io.Reader { return strings.NewReader(s) }

// wantError checks the error body shape, status and code.
func wantError(t *testing.T, r reply, status int, code string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	m := r.json(t)
	if m["code"] != code || m["status"] != float64(status) || m["message"] == "" {
		t.Fatalf("error body %s, want code %s status %d", r.body, code, status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if id := r.header.Get("X-Request-Id"); id == "" || m["request_id"] != id {
		t.Fatalf("error body %s: request_id is not the X-Request-Id header %q", r.body, id)
	}
	return m
}

// forge builds a token signed with key, with any header alg and claims (for the 401 cases).
func forge(key, alg string, claims map[string]any) string {
	enc := base64.RawURLEncoding
	hb, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	cb, _ := json.Marshal(claims)
	signing := enc.EncodeToString(hb) + "." + enc.EncodeToString(cb)
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(m.Sum(nil))
}

// eventually polls cond (bounded in count, not asserted on time).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}
