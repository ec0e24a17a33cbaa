package composetest_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/deploy/composetest"
)

// The token is what the gateway verifies: HS256 over header.payload with the first key's secret, the
// key's kid in the header, the issuer, audience, subject, iat and exp claims.
func TestSignTokenWithFirstKey(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tok, err := composetest.SignToken("k2:s3cr:et,k1:old\n", "cust-0001", []string{"admin"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q: want three parts", tok)
	}
	mac := hmac.New(sha256.New, []byte("s3cr:et"))
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if want := base64.RawURLEncoding.EncodeToString(mac.Sum(nil)); parts[2] != want {
		t.Fatalf("signature %s, want HMAC-SHA256 with the first key's secret %s", parts[2], want)
	}
	var header map[string]string
	var claims map[string]any
	decode(t, parts[0], &header)
	decode(t, parts[1], &claims)
	if header["alg"] != "HS256" || header["kid"] != "k2" {
		t.Fatalf("header %v: want alg HS256, kid k2", header)
	}
	want := map[string]any{"iss": "shopmesh-gateway", "aud": "shopmesh", "sub": "cust-0001", "scope": "admin",
		"iat": float64(now.Unix()), "exp": float64(now.Add(time.Hour).Unix())}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %v, want %v", k, claims[k], v)
		}
	}
	for _, bad := range []string{"", "nokey", ":secret", "kid:"} {
		if _, err := composetest.SignToken(bad, "c", nil, now, time.Hour); err == nil {
			t.Errorf("keys %q: want an error", bad)
		}
	}
}

func decode(t *testing.T, part string, out any) {
	t.Helper()
	data, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatal(err)
	}
}

// orderServer answers POST /v1/orders with the codes of answers in turn (then 201), recording the
// idempotency keys and tokens.
type orderServer struct {
	mu      sync.Mutex
	answers []int
	keys    []string
	auth    []string
	n       atomic.Int64
}

func (s *orderServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.keys = append(s.keys, r.Header.Get("Idempotency-Key"))
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	code := http.StatusCreated
	if len(s.answers) > 0 {
		code, s.answers = s.answers[0], s.answers[1:]
	}
	s.mu.Unlock()
	switch code {
	case http.StatusCreated:
		w.WriteHeader(code)
		_, _ = fmt.Fprintf(w, `{"id":"o-%d","status":"CONFIRMED"}`, s.n.Add(1))
	default:
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"code":"X","message":"x"}`))
	}
}

func newAPI(t *testing.T, s *orderServer) *composetest.API {
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &composetest.API{Base: srv.URL, AttemptTimeout: 5 * time.Second,
		Token: func(c string) (string, error) { return "tok-" + c, nil }}
}

// 503 and 429 are retried with the same key until the order is accepted, and so is a refused
// connection; a 409 is final.
func TestPlaceRetriesWithTheSameKey(t *testing.T) {
	ctx := context.Background()
	s := &orderServer{answers: []int{http.StatusServiceUnavailable, http.StatusTooManyRequests}}
	api := newAPI(t, s)
	o := api.Place(ctx, composetest.Retry{MaxAttempts: 5, Budget: 10 * time.Second}, "cust-0007", "key-1", "SKU-0001", 1)
	if !o.Accepted || o.Attempts != 3 || o.Status != "201" || o.OrderID == "" || len(s.keys) != 3 {
		t.Fatalf("outcome %+v after %d requests: want accepted on the 3rd attempt", o, len(s.keys))
	}
	for i, k := range s.keys {
		if k != "key-1" || s.auth[i] != "Bearer tok-cust-0007" {
			t.Fatalf("attempt %d: key %q, auth %q", i+1, k, s.auth[i])
		}
	}

	s = &orderServer{answers: []int{http.StatusConflict}}
	api = newAPI(t, s)
	o = api.Place(ctx, composetest.Retry{MaxAttempts: 5, Budget: 10 * time.Second}, "cust-0007", "key-2", "SKU-0001", 1)
	if o.Accepted || o.Attempts != 1 || o.Status != "409" {
		t.Fatalf("outcome %+v: want a failed order after one attempt", o)
	}

	s = &orderServer{answers: []int{503, 503, 503}}
	api = newAPI(t, s)
	o = api.Place(ctx, composetest.Retry{MaxAttempts: 3, Budget: 10 * time.Second}, "cust-0007", "key-3", "SKU-0001", 1)
	if o.Accepted || o.Attempts != 3 || o.Status != "503" {
		t.Fatalf("outcome %+v: want a failed order after 3 attempts", o)
	}
	if c := composetest.Count([]composetest.Outcome{o}); c.Failed != 1 || c.FailedBy["503"] != 1 || c.Retried != 1 {
		t.Fatalf("tally %+v", c)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String()
	_ = l.Close()
	api = &composetest.API{Base: refused, Token: func(string) (string, error) { return "t", nil }}
	o = api.Place(ctx, composetest.Retry{MaxAttempts: 3, Budget: 10 * time.Second}, "cust-0007", "key-4", "SKU-0001", 1)
	if o.Accepted || o.Attempts != 3 || o.Status != "net" {
		t.Fatalf("outcome %+v: want 3 attempts ending in a connection error", o)
	}
}

// The load sends orders until stopped, each with its own key, and every one is counted.
func TestLoadCountsEveryOrder(t *testing.T) {
	s := &orderServer{answers: []int{503}}
	api := newAPI(t, s)
	l := &composetest.Load{API: api, Rate: 50, Customers: 3, SKUs: 2, KeyPrefix: "t",
		Retry: composetest.Retry{MaxAttempts: 5, Budget: 10 * time.Second}}
	stop := make(chan struct{})
	go func() { time.Sleep(300 * time.Millisecond); close(stop) }()
	outs := l.Run(context.Background(), stop)
	c := composetest.Count(outs)
	if c.Sent < 2 || c.Accepted != c.Sent || c.Failed != 0 || c.Retried != 1 {
		t.Fatalf("tally %s: want every order accepted, one retried", c)
	}
	seen := map[string]bool{}
	for _, o := range outs {
		if seen[o.Key] {
			t.Fatalf("key %s used twice", o.Key)
		}
		seen[o.Key] = true
	}
}

func TestParsePSAndUnready(t *testing.T) {
	ndjson := `{"Name":"p-postgres-1","Service":"postgres","State":"running","Health":"healthy","ExitCode":0}
{"Name":"p-order-migrate-1","Service":"order-migrate","State":"exited","Health":"","ExitCode":0}
{"Name":"p-inventory-2","Service":"inventory","State":"running","Health":"starting","ExitCode":0}
{"Name":"p-payment-migrate-1","Service":"payment-migrate","State":"exited","Health":"","ExitCode":1}
`
	cs, err := composetest.ParsePS([]byte(ndjson))
	if err != nil || len(cs) != 4 {
		t.Fatalf("ParsePS: %d containers, %v", len(cs), err)
	}
	jobs, err := composetest.OneShots([]byte(`{"services":{"postgres":{"restart":"unless-stopped"},
		"order-migrate":{"restart":"no"},"payment-migrate":{"restart":"no"},"inventory":{}}}`))
	if err != nil || len(jobs) != 2 || !jobs["order-migrate"] || !jobs["payment-migrate"] {
		t.Fatalf("OneShots: %v %v", jobs, err)
	}
	bad := composetest.Unready(cs, jobs)
	if len(bad) != 2 || !strings.Contains(bad[0], "p-inventory-2") || !strings.Contains(bad[1], "p-payment-migrate-1") {
		t.Fatalf("Unready %q: want the starting inventory and the failed migration", bad)
	}
	arr, err := composetest.ParsePS([]byte(`[{"Name":"a","Service":"nats","State":"running","Health":"healthy"}]`))
	if err != nil || len(arr) != 1 || len(composetest.Unready(arr, nil)) != 0 {
		t.Fatalf("array form: %v %v", arr, err)
	}
	if cs, err := composetest.ParsePS([]byte("\n")); err != nil || cs != nil {
		t.Fatalf("empty: %v %v", cs, err)
	}
}

func TestFreePortMovesATakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	taken := l.Addr().(*net.TCPAddr).Port
	got, err := composetest.FreePort(taken)
	if err != nil || got == taken || got == 0 {
		t.Fatalf("FreePort(%d) = %d, %v: want another port", taken, got, err)
	}
	l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", got))
	if err != nil {
		t.Fatalf("port %d is not free: %v", got, err)
	}
	_ = l2.Close()
	if again, err := composetest.FreePort(got); err != nil || again != got {
		t.Fatalf("FreePort(%d) of a free port = %d, %v", got, again, err)
	}
}

// The compose .env names every port the harness reads.
func TestDotEnvHasThePublishedPorts(t *testing.T) {
	env, err := composetest.ReadDotEnv("../compose/.env")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range append([]string{"COMPOSE_PROJECT_NAME"}, publishedPorts...) {
		if env[k] == "" {
			t.Errorf("deploy/compose/.env has no %s", k)
		}
	}
}
