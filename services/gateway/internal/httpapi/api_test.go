package httpapi_test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"

	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
	"github.com/shopmesh/shopmesh/services/gateway/internal/httpapi"
)

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestCreateOrderReturns201WithTheOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r := h.do("POST", "/v1/orders", h.token("cust-1"), str(`{"items":[{"sku":"SKU-1","quantity":2}]}`))
	if r.status != http.StatusCreated {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	o := r.json(t)
	if got, want := keys(o), []string{"cancel_reason", "created_at", "currency", "id", "items", "status", "total_cents"}; !slices.Equal(got, want) {
		t.Fatalf("order keys %v, want %v", got, want)
	}
	if o["status"] != "CONFIRMED" || o["cancel_reason"] != "" || o["total_cents"] != float64(2*fakes.UnitPrice) || o["currency"] != "EUR" {
		t.Fatalf("order %s", r.body)
	}
	items := o["items"].([]any)
	line := items[0].(map[string]any)
	if len(items) != 1 || !slices.Equal(keys(line), []string{"quantity", "sku", "unit_price_cents"}) || line["sku"] != "SKU-1" {
		t.Fatalf("items %v", items)
	}
	if _, err := time.Parse(time.RFC3339, o["created_at"].(string)); err != nil {
		t.Fatalf("created_at: %v", err)
	}
	if loc := r.header.Get("Location"); loc != "/v1/orders/"+o["id"].(string) {
		t.Fatalf("Location %q", loc)
	}
	if got := h.fakes.Order.Customers(); !slices.Equal(got, []string{"cust-1"}) {
		t.Fatalf("x-customer-id seen by order service: %v", got)
	}
}

func TestCreateOrderTakesTheCustomerFromTheTokenOnly(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r := h.do("POST", "/v1/orders", h.token("cust-1"), str(`{"customer_id":"cust-2","items":[{"sku":"SKU-1","quantity":1}]}`))
	m := wantError(t, r, http.StatusBadRequest, "VALIDATION_ERROR")
	if d := m["details"].([]any)[0].(map[string]any); d["field"] != "customer_id" {
		t.Fatalf("details %v", m["details"])
	}
	if n := h.fakes.Order.Calls("CreateOrder"); n != 0 {
		t.Fatalf("CreateOrder reached the backend %d times", n)
	}
}

func TestCreateOrderOutcomes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tests := []struct {
		name, customer, sku string
		status              int
		code                string
	}{
		{"out of stock", "cust-1", "OOS-1", http.StatusConflict, "OUT_OF_STOCK"},
		{"unknown product", "cust-1", "GHOST-1", http.StatusConflict, "OUT_OF_STOCK"},
		{"payment declined", "cust-poor", "SKU-1", http.StatusPaymentRequired, "PAYMENT_DECLINED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := h.do("POST", "/v1/orders", h.token(tt.customer), str(`{"items":[{"sku":"`+tt.sku+`","quantity":1}]}`))
			m := wantError(t, r, tt.status, tt.code)
			id, _ := m["order_id"].(string)
			if id == "" {
				t.Fatalf("no order_id in %s", r.body)
			}
			// The cancelled order is the caller's and can be read.
			if g := h.do("GET", "/v1/orders/"+id, h.token(tt.customer), nil); g.status != http.StatusOK || g.json(t)["status"] != "CANCELLED" {
				t.Fatalf("GET cancelled order: %d %s", g.status, g.body)
			}
		})
	}
}

func TestCreateOrderIsIdempotentPerKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.token("cust-1")
	body := `{"items":[{"sku":"SKU-1","quantity":1}]}`
	first := h.do("POST", "/v1/orders", tok, str(body), "Idempotency-Key: key-1")
	again := h.do("POST", "/v1/orders", tok, str(body), "Idempotency-Key: key-1")
	for _, r := range []reply{first, again} {
		if r.status != http.StatusCreated && r.status != http.StatusOK {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	}
	if first.json(t)["id"] != again.json(t)["id"] {
		t.Fatalf("retry returned another order: %s vs %s", first.body, again.body)
	}
	if calls, created := h.fakes.Order.Calls("CreateOrder"), h.fakes.Order.Created(); calls != 2 || created != 1 {
		t.Fatalf("CreateOrder calls %d (want 2, same key), orders created %d (want 1)", calls, created)
	}
}

// diesAfterCommit is the order service of a replica that dies after its first CreateOrder committed:
// the order exists, but the caller sees UNAVAILABLE (and the platform retries it).
type diesAfterCommit struct {
	*fakes.Order
	died atomic.Bool
}

func (d *diesAfterCommit) CreateOrder(ctx context.Context, req *orderv1.CreateOrderRequest) (*orderv1.CreateOrderResponse, error) {
	resp, err := d.Order.CreateOrder(ctx, req)
	if err == nil && d.died.CompareAndSwap(false, true) {
		return nil, status.Error(codes.Unavailable, "connection reset after commit")
	}
	return resp, err
}

// A request without an Idempotency-Key gets one from the gateway: the platform's retry of
// CreateOrder after the replica died behind the commit finds the order the first attempt placed, so
// one order exists, and the key comes back in the response header so the client can retry with it.
func TestCreateOrderWithoutKeyGetsOneTheRetriesReuse(t *testing.T) {
	t.Parallel()
	h := newHarnessWithOrder(t, func(o *fakes.Order) orderv1.OrderServiceServer { return &diesAfterCommit{Order: o} })
	tok := h.token("cust-1")
	body := `{"items":[{"sku":"SKU-1","quantity":1}]}`
	r := h.do("POST", "/v1/orders", tok, str(body))
	if r.status != http.StatusCreated {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	key := r.header.Get("Idempotency-Key")
	if _, err := uuid.Parse(key); err != nil {
		t.Fatalf("Idempotency-Key response header %q is not a UUID: %v", key, err)
	}
	if calls, created := h.fakes.Order.Calls("CreateOrder"), h.fakes.Order.Created(); calls != 2 || created != 1 {
		t.Fatalf("CreateOrder calls %d (want 2: the platform retried), orders created %d (want 1)", calls, created)
	}
	// The client retries with the key it was given: still the same order.
	again := h.do("POST", "/v1/orders", tok, str(body), "Idempotency-Key: "+key)
	if again.status != http.StatusCreated || again.json(t)["id"] != r.json(t)["id"] || again.header.Get("Idempotency-Key") != key {
		t.Fatalf("retry with the echoed key: %d %s (key %q), first %s", again.status, again.body, again.header.Get("Idempotency-Key"), r.body)
	}
	// Another request without a key is another order with another key.
	other := h.do("POST", "/v1/orders", tok, str(body))
	if other.status != http.StatusCreated || other.json(t)["id"] == r.json(t)["id"] || other.header.Get("Idempotency-Key") == key {
		t.Fatalf("a new request reused the order or key: %d %s (key %q)", other.status, other.body, other.header.Get("Idempotency-Key"))
	}
	if created := h.fakes.Order.Created(); created != 2 {
		t.Fatalf("orders created %d, want 2", created)
	}
	// A client's own key is used and echoed as sent.
	mine := h.do("POST", "/v1/orders", tok, str(body), "Idempotency-Key: my-key-1")
	if mine.status != http.StatusCreated || mine.header.Get("Idempotency-Key") != "my-key-1" {
		t.Fatalf("client key: %d %s (key %q)", mine.status, mine.body, mine.header.Get("Idempotency-Key"))
	}
}

func TestOtherCustomersOrdersAreNotFound(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r := h.do("POST", "/v1/orders", h.token("cust-a"), str(`{"items":[{"sku":"SLOW-1","quantity":1}]}`))
	id := r.json(t)["id"].(string)
	intruder := h.token("cust-b")
	wantError(t, h.do("GET", "/v1/orders/"+id, intruder, nil), http.StatusNotFound, "ORDER_NOT_FOUND")
	wantError(t, h.do("POST", "/v1/orders/"+id+":cancel", intruder, nil), http.StatusNotFound, "ORDER_NOT_FOUND")
	wantError(t, h.do("GET", "/v1/orders/"+id+"/events", intruder, nil), http.StatusNotFound, "ORDER_NOT_FOUND")
	if n := h.fakes.Order.Calls("CancelOrder"); n != 0 {
		t.Fatalf("CancelOrder reached the backend %d times for another customer", n)
	}
	if g := h.do("GET", "/v1/orders/"+id, h.token("cust-a"), nil); g.status != http.StatusOK || g.json(t)["status"] != "PENDING" {
		t.Fatalf("owner GET: %d %s", g.status, g.body)
	}
	wantError(t, h.do("GET", "/v1/orders/00000000-0000-4000-8000-000000000000", intruder, nil), http.StatusNotFound, "ORDER_NOT_FOUND")
}

func TestCancelOrder(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.token("cust-1")
	pending := h.do("POST", "/v1/orders", tok, str(`{"items":[{"sku":"SLOW-1","quantity":1}]}`)).json(t)["id"].(string)
	r := h.do("POST", "/v1/orders/"+pending+":cancel", tok, str(`{"reason":"changed my mind"}`))
	if r.status != http.StatusOK || r.json(t)["status"] != "CANCELLED" || r.json(t)["cancel_reason"] != "CUSTOMER_REQUESTED" {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	// Again, without a body: idempotent.
	if r := h.do("POST", "/v1/orders/"+pending+":cancel", tok, nil); r.status != http.StatusOK {
		t.Fatalf("second cancel: %d %s", r.status, r.body)
	}
	confirmed := h.do("POST", "/v1/orders", tok, str(`{"items":[{"sku":"SKU-1","quantity":1}]}`)).json(t)["id"].(string)
	wantError(t, h.do("POST", "/v1/orders/"+confirmed+":cancel", tok, nil), http.StatusBadRequest, "ORDER_CONFIRMED")
	// ".../<id>:frobnicate" is the path /v1/orders/{id}, which has GET only.
	wantError(t, h.do("POST", "/v1/orders/"+confirmed+":frobnicate", tok, nil), http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
	wantError(t, h.do("POST", "/v1/orders/"+pending+":cancel", tok, str(`{"why":"x"}`)), http.StatusBadRequest, "VALIDATION_ERROR")
}

func TestOrderEventsStreamUntilTerminal(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.token("cust-1")
	id := h.do("POST", "/v1/orders", tok, str(`{"items":[{"sku":"SLOW-1","quantity":1}]}`)).json(t)["id"].(string)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/v1/orders/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := sseEvents(resp.Body)
	first := <-events
	if !strings.Contains(first, `"status":"PENDING"`) || !strings.Contains(first, id) {
		t.Fatalf("first event %q", first)
	}
	h.fakes.Order.Confirm(id)
	second := <-events
	if !strings.Contains(second, `"status":"CONFIRMED"`) {
		t.Fatalf("second event %q", second)
	}
	if extra, open := <-events; open {
		t.Fatalf("stream went on after CONFIRMED: %q", extra)
	}
	eventually(t, "the watch to end at the order service", func() bool { return h.fakes.Order.Watchers(id) == 0 })
}

// sseEvents yields the data of each event until the stream ends.
func sseEvents(body io.Reader) <-chan string {
	out := make(chan string, 16)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				out <- data
			}
		}
	}()
	return out
}

func TestOrderEventsEndWhenTheClientLeaves(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.token("cust-1")
	id := h.do("POST", "/v1/orders", tok, str(`{"items":[{"sku":"SLOW-1","quantity":1}]}`)).json(t)["id"].(string)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/v1/orders/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-sseEvents(resp.Body)
	if n := h.fakes.Order.Watchers(id); n != 1 {
		t.Fatalf("watchers %d, want 1", n)
	}
	cancel()
	_ = resp.Body.Close()
	eventually(t, "the backend watch to be cancelled", func() bool { return h.fakes.Order.Watchers(id) == 0 })
}

func TestOrderEventsEndOnClose(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.token("cust-1")
	id := h.do("POST", "/v1/orders", tok, str(`{"items":[{"sku":"SLOW-1","quantity":1}]}`)).json(t)["id"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/v1/orders/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := sseEvents(resp.Body)
	<-events
	h.api.Close() // what http.Server.Shutdown triggers
	for range events {
	}
	eventually(t, "the backend watch to be cancelled", func() bool { return h.fakes.Order.Watchers(id) == 0 })
}

// The drain (Deps.Stopping closed) ends the open event streams, as Close does, so the graceful
// shutdown does not wait for them; the backend watch is cancelled too.
func TestOrderEventsEndWhenStopping(t *testing.T) {
	t.Parallel()
	stopping := make(chan struct{})
	h := harnessOn(t, fakes.Start(t), nil, func(d *httpapi.Deps) { d.Stopping = stopping })
	tok := h.token("cust-1")
	id := h.do("POST", "/v1/orders", tok, str(`{"items":[{"sku":"SLOW-1","quantity":1}]}`)).json(t)["id"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/v1/orders/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := sseEvents(resp.Body)
	<-events
	close(stopping)
	for range events {
	}
	if ctx.Err() != nil {
		t.Fatal("the stream did not end when the server began stopping")
	}
	eventually(t, "the backend watch to be cancelled", func() bool { return h.fakes.Order.Watchers(id) == 0 })
	if r := h.do("GET", "/readyz", "", nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("readyz after the drain began: %d %s", r.status, r.body)
	}
}

// /readyz follows the instance's health (Deps.Serving): NOT_READY as soon as the drain starts, while
// the API still serves (load balancers stop sending before the server refuses requests).
func TestReadinessFollowsServing(t *testing.T) {
	t.Parallel()
	var serving atomic.Bool
	serving.Store(true)
	h := harnessOn(t, fakes.Start(t), nil, func(d *httpapi.Deps) {
		d.Serving = func(context.Context) bool { return serving.Load() }
	})
	if r := h.do("GET", "/readyz", "", nil); r.status != http.StatusOK {
		t.Fatalf("readyz while serving: %d %s", r.status, r.body)
	}
	serving.Store(false)
	wantError(t, h.do("GET", "/readyz", "", nil), http.StatusServiceUnavailable, "NOT_READY")
	if r := h.do("GET", "/v1/products", h.token("cust-1"), nil); r.status != http.StatusOK {
		t.Fatalf("products while draining: %d %s", r.status, r.body)
	}
	serving.Store(true)
	if r := h.do("GET", "/readyz", "", nil); r.status != http.StatusOK {
		t.Fatalf("readyz serving again: %d %s", r.status, r.body)
	}
}

func TestStockImport(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	body := strings.Join([]string{
		`{"sku":"SKU-1","quantity":5}`,
		`{"sku":"NEW-1","quantity":7,"name":"New thing","price_cents":990,"currency":"EUR"}`,
		``,
		`{"sku":"SKU-2","quantity":`,
		`{"sku":"SKU-2","quantity":1,"colour":"red"}`,
		`{"sku":"SKU-3","quantity":0}`,
	}, "\n")
	r := h.do("POST", "/v1/stock:import", h.token("ops-1", "admin"), str(body), "Content-Type: application/x-ndjson")
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	m := r.json(t)
	if m["lines_received"] != 5.0 || m["lines_applied"] != 2.0 || m["lines_rejected"] != 3.0 || m["units_added"] != 12.0 {
		t.Fatalf("summary %s", r.body)
	}
	errs := m["errors"].([]any)
	reasons := map[float64]string{}
	for _, e := range errs {
		e := e.(map[string]any)
		reasons[e["line"].(float64)] = e["reason"].(string)
	}
	if !strings.Contains(reasons[3], "JSON") || !strings.Contains(reasons[4], "colour") || !strings.Contains(reasons[5], "quantity") {
		t.Fatalf("rejections %v", reasons)
	}
	if got := h.fakes.Inventory.OnHand("SKU-1"); got != 15 {
		t.Fatalf("SKU-1 on hand %d, want 15", got)
	}
}

func TestStockImportNeedsAdmin(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	wantError(t, h.do("POST", "/v1/stock:import", h.token("cust-1"), str(`{"sku":"SKU-1","quantity":5}`)), http.StatusForbidden, "FORBIDDEN")
	wantError(t, h.do("POST", "/v1/stock:import", "", str(`{"sku":"SKU-1","quantity":5}`)), http.StatusUnauthorized, "UNAUTHENTICATED")
	if n := h.fakes.Inventory.Calls("ImportStock"); n != 0 {
		t.Fatalf("ImportStock reached the backend %d times", n)
	}
}

// TestStockImportStreamsLinesAsRead writes the second line only after inventory has received the first:
// a gateway that buffered the body would deadlock here (bounded by the wait below).
func TestStockImportStreamsLinesAsRead(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	pr, pw := io.Pipe()
	done := make(chan reply, 1)
	go func() { done <- h.do("POST", "/v1/stock:import", h.token("ops-1", "admin"), pr) }()
	_, _ = io.WriteString(pw, `{"sku":"SKU-1","quantity":1}`+"\n")
	eventually(t, "inventory to receive line 1 before line 2 is written", func() bool { return h.fakes.Inventory.Received() == 1 })
	_, _ = io.WriteString(pw, `{"sku":"SKU-2","quantity":2}`+"\n")
	_ = pw.Close()
	r := <-done
	if r.status != http.StatusOK || r.json(t)["lines_applied"] != 2.0 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
}

func TestStockImportTooLarge(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(s *httpapi.Settings) { s.MaxImportBytes = 100 })
	body := strings.Repeat(`{"sku":"SKU-1","quantity":1}`+"\n", 10)
	wantError(t, h.do("POST", "/v1/stock:import", h.token("ops-1", "admin"), str(body)), http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE")
}

func TestAccountsMe(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r := h.do("GET", "/v1/accounts/me", h.token("cust-1"), nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	m := r.json(t)
	if !slices.Equal(keys(m), []string{"balance_cents", "currency", "customer_id", "held_cents"}) || m["customer_id"] != "cust-1" {
		t.Fatalf("account %s", r.body)
	}
	wantError(t, h.do("GET", "/v1/accounts/me", h.token("cust-ghost"), nil), http.StatusNotFound, "ACCOUNT_NOT_FOUND")
}

func TestDevToken(t *testing.T) {
	t.Parallel()
	dev := newHarness(t, nil)
	r := dev.do("POST", "/v1/dev/token", "", str(`{"customer_id":"cust-9","scopes":["admin"]}`))
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	tok := r.json(t)["token"].(string)
	if me := dev.do("GET", "/v1/accounts/me", tok, nil); me.status != http.StatusOK || me.json(t)["customer_id"] != "cust-9" {
		t.Fatalf("token does not work: %d %s", me.status, me.body)
	}
	m := wantError(t, dev.do("POST", "/v1/dev/token", "", str(`{"customer_id":"Not Valid","scopes":["root"]}`)), http.StatusBadRequest, "VALIDATION_ERROR")
	if len(m["details"].([]any)) != 2 {
		t.Fatalf("details %v", m["details"])
	}

	prod := newHarness(t, func(s *httpapi.Settings) { s.DevTokens = false })
	wantError(t, prod.do("POST", "/v1/dev/token", "", str(`{"customer_id":"cust-9"}`)), http.StatusNotFound, "NOT_FOUND")
}

func TestUnauthenticated(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	exp := time.Now().Add(time.Hour).Unix()
	claims := func(aud string, exp int64) map[string]any {
		return map[string]any{"iss": issuer, "aud": aud, "sub": "cust-1", "exp": exp, "iat": time.Now().Unix()}
	}
	good := forge(secret, "HS256", claims("shopmesh", exp))
	parts := strings.Split(good, ".")
	tests := []struct{ name, header string }{
		{"no token", ""},
		{"not bearer", "Basic Y3VzdDox"},
		{"bad signature", "Bearer " + forge("some-other-secret-some-other-secret", "HS256", claims("shopmesh", exp))},
		{"expired", "Bearer " + forge(secret, "HS256", claims("shopmesh", time.Now().Add(-time.Minute).Unix()))},
		{"wrong audience", "Bearer " + forge(secret, "HS256", claims("billing", exp))},
		{"alg none", "Bearer " + strings.Split(forge(secret, "none", claims("shopmesh", exp)), ".")[0] + "." + parts[1] + "."},
		{"alg HS384", "Bearer " + forge(secret, "HS384", claims("shopmesh", exp))},
		{"garbage", "Bearer not-a-jwt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var hs []string
			if tt.header != "" {
				hs = append(hs, "Authorization: "+tt.header)
			}
			r := h.do("GET", "/v1/accounts/me", "", nil, hs...)
			wantError(t, r, http.StatusUnauthorized, "UNAUTHENTICATED")
			if r.header.Get("WWW-Authenticate") == "" {
				t.Fatal("no WWW-Authenticate")
			}
		})
	}
	if r := h.do("GET", "/v1/accounts/me", good, nil); r.status != http.StatusOK {
		t.Fatalf("the well-formed control token was refused: %d %s", r.status, r.body)
	}
	if n := h.fakes.Payment.Calls("GetAccount"); n != 1 {
		t.Fatalf("GetAccount calls %d, want 1 (only the control)", n)
	}
}

func TestStrictJSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.token("cust-1")
	tests := []struct {
		name, body, code, field string
	}{
		{"unknown field", `{"items":[{"sku":"SKU-1","quantity":1}],"bogus":1}`, "VALIDATION_ERROR", "bogus"},
		{"unknown nested field", `{"items":[{"sku":"SKU-1","quantity":1,"price":1}]}`, "VALIDATION_ERROR", "price"},
		{"trailing garbage", `{"items":[{"sku":"SKU-1","quantity":1}]} {"x":1}`, "INVALID_JSON", "body"},
		{"trailing junk", `{"items":[]}xyz`, "INVALID_JSON", "body"},
		{"wrong type", `{"items":[{"sku":"SKU-1","quantity":"two"}]}`, "VALIDATION_ERROR", "items.quantity"},
		{"out of int32 range", `{"items":[{"sku":"SKU-1","quantity":99999999999}]}`, "VALIDATION_ERROR", "items.quantity"},
		{"not JSON", `items=1`, "INVALID_JSON", "body"},
		{"empty", ``, "INVALID_JSON", "body"},
		{"truncated", `{"items":[`, "INVALID_JSON", "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := wantError(t, h.do("POST", "/v1/orders", tok, str(tt.body)), http.StatusBadRequest, tt.code)
			d := m["details"].([]any)[0].(map[string]any)
			if d["field"] != tt.field {
				t.Fatalf("details %v, want field %s", m["details"], tt.field)
			}
		})
	}
	if n := h.fakes.Order.Calls("CreateOrder"); n != 0 {
		t.Fatalf("CreateOrder reached the backend %d times", n)
	}
}

func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(s *httpapi.Settings) { s.MaxBodyBytes = 1024 })
	body := `{"items":[` + strings.Repeat(`{"sku":"SKU-1","quantity":1},`, 100) + `{"sku":"SKU-1","quantity":1}]}`
	wantError(t, h.do("POST", "/v1/orders", h.token("cust-1"), str(body)), http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE")
}

func TestRateLimitPerClient(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(s *httpapi.Settings) { s.RateLimitRPS, s.RateLimitBurst = 0.01, 2 })
	greedy := h.token("cust-greedy")
	for i := range 2 {
		if r := h.do("GET", "/v1/accounts/me", greedy, nil); r.status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	r := h.do("GET", "/v1/accounts/me", greedy, nil)
	wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if r := h.do("GET", "/v1/accounts/me", h.token("cust-modest"), nil); r.status != http.StatusOK {
		t.Fatalf("another customer was limited: %d %s", r.status, r.body)
	}
	if n := h.fakes.Payment.Calls("GetAccount"); n != 3 {
		t.Fatalf("GetAccount calls %d, want 3", n)
	}
}

func TestBackendValidationErrorNamesTheField(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	m := wantError(t, h.do("POST", "/v1/orders", h.token("cust-1"), str(`{"items":[{"sku":"SKU-1","quantity":0}]}`)),
		http.StatusBadRequest, "VALIDATION_ERROR")
	d := m["details"].([]any)
	if len(d) != 1 || d[0].(map[string]any)["field"] != "items[0].quantity" || d[0].(map[string]any)["issue"] == "" {
		t.Fatalf("details %v", d)
	}
	if n := h.fakes.Order.Calls("CreateOrder"); n != 1 {
		t.Fatalf("CreateOrder calls %d, want 1 (the backend validates)", n)
	}
}

func TestBackendInternalErrorIsGeneric(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r := h.do("POST", "/v1/orders", h.token("cust-1"), str(`{"items":[{"sku":"BOOM","quantity":1}]}`))
	m := wantError(t, r, http.StatusInternalServerError, "INTERNAL")
	if m["message"] != "internal error" || strings.Contains(string(r.body), "password") || strings.Contains(string(r.body), fakes.LeakyMessage) {
		t.Fatalf("internal details leaked: %s", r.body)
	}
}

func TestProducts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r := h.do("GET", "/v1/products", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	ps := r.json(t)["products"].([]any)
	var skus []string
	for _, p := range ps {
		skus = append(skus, p.(map[string]any)["sku"].(string))
	}
	if !slices.Equal(skus, []string{"SKU-1", "SKU-2", "SKU-3", "SKU-4", "SKU-5"}) {
		t.Fatalf("skus %v", skus)
	}
	if n := h.fakes.Inventory.Calls("ListProducts"); n != 3 {
		t.Fatalf("ListProducts calls %d, want 3 pages of 2", n)
	}
	p := h.do("GET", "/v1/products/SKU-2", "", nil)
	if p.status != http.StatusOK || !slices.Equal(keys(p.json(t)), []string{"available", "currency", "name", "price_cents", "sku"}) ||
		p.json(t)["price_cents"] != 200.0 {
		t.Fatalf("product: %d %s", p.status, p.body)
	}
	wantError(t, h.do("GET", "/v1/products/NOPE-1", "", nil), http.StatusNotFound, "UNKNOWN_PRODUCT")
	wantError(t, h.do("GET", "/v1/products/bad%20sku", "", nil), http.StatusBadRequest, "VALIDATION_ERROR")
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	wantError(t, h.do("GET", "/v2/nothing", "", nil), http.StatusNotFound, "NOT_FOUND")
	r := h.do("DELETE", "/v1/products", "", nil)
	wantError(t, r, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
	if r.header.Get("Allow") == "" {
		t.Fatal("no Allow header")
	}
}

func TestHealthReadinessMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	if r := h.do("GET", "/healthz", "", nil); r.status != http.StatusOK {
		t.Fatalf("healthz %d", r.status)
	}
	r := h.do("GET", "/readyz", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("readyz %d %s", r.status, r.body)
	}
	// The metrics are served by the admin port from this registry (TestAPIPortHasNoInternals: not here).
	if v, ok := h.metric(`gateway_http_requests_total{code="200",route="GET /healthz"}`); !ok || v != 1 {
		t.Fatalf("gateway_http_requests_total for /healthz: %v %v", v, ok)
	}
	if v, ok := h.metric(`shopmesh_gateway_backend_up{backend="payment"}`); !ok || v != 1 {
		t.Fatalf("shopmesh_gateway_backend_up for payment: %v %v", v, ok)
	}
}

// Defect 11: one backend down must not take the gateway out of its load balancer (and the catalogue
// with it). Payment without a healthy instance: the gateway stays ready, the catalogue answers, the
// account route answers 503 with Retry-After; payment back: the account route answers again.
func TestBackendDownDegradesItsRoutesOnly(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.token("cust-1")
	if r := h.do("GET", "/v1/accounts/me", tok, nil); r.status != http.StatusOK {
		t.Fatalf("accounts/me with payment up: %d %s", r.status, r.body)
	}
	h.fakes.Health["payment"].SetServingStatus("", grpc_health_v1.HealthCheckResponse_NOT_SERVING)
	var last reply
	eventually(t, "accounts/me to answer BACKEND_UNAVAILABLE", func() bool {
		last = h.do("GET", "/v1/accounts/me", tok, nil)
		return last.status == http.StatusServiceUnavailable && strings.Contains(string(last.body), "BACKEND_UNAVAILABLE")
	})
	wantError(t, last, http.StatusServiceUnavailable, "BACKEND_UNAVAILABLE")
	if ra := last.header.Get("Retry-After"); ra == "" {
		t.Fatal("503 without Retry-After")
	}
	if r := h.do("GET", "/readyz", "", nil); r.status != http.StatusOK {
		t.Fatalf("readyz with payment down: %d %s", r.status, r.body)
	}
	if r := h.do("GET", "/v1/products", "", nil); r.status != http.StatusOK {
		t.Fatalf("products with payment down: %d %s", r.status, r.body)
	}
	if r := h.do("GET", "/v1/orders/"+"00000000-0000-4000-8000-000000000000", tok, nil); r.status == http.StatusServiceUnavailable {
		t.Fatalf("an order route with payment down: %d %s", r.status, r.body)
	}
	if v, ok := h.metric(`shopmesh_gateway_backend_up{backend="payment"}`); !ok || v != 0 {
		t.Fatalf("shopmesh_gateway_backend_up for payment: %v %v, want 0", v, ok)
	}

	h.fakes.Health["payment"].SetServingStatus("", grpc_health_v1.HealthCheckResponse_SERVING)
	eventually(t, "accounts/me to answer again", func() bool {
		return h.do("GET", "/v1/accounts/me", tok, nil).status == http.StatusOK
	})
}
