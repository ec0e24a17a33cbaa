package httpapi_test

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestServerEnforcesTheDocument is the contract in both directions, without Python: for each request
// the served document (through kin-openapi) either accepts or rejects it, and the server must answer
// 400 exactly when the document rejects it — a schema-valid request refused with 400 means the document
// omits a rule the server enforces, a schema-violating request the server takes means the server does
// not enforce a rule the document states. (The same property schemathesis checks in CI against the
// running stack: deploy/contract/run.sh.)
func TestServerEnforcesTheDocument(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	s := loadSpec(t, h)
	tok, admin := h.token("cust-1"), h.token("ops-1", "admin")
	const (
		js, ndjson = "application/json", "application/x-ndjson"
		unknownID  = "00000000-0000-4000-8000-000000000000"
	)
	pending := h.do("POST", "/v1/orders", tok, str(`{"items":[{"sku":"SLOW-1","quantity":1}]}`)).json(t)["id"].(string)
	items := func(n int) string {
		lines := make([]string, n)
		for i := range lines {
			lines[i] = fmt.Sprintf(`{"sku":"SKU-%d","quantity":1}`, i)
		}
		return `{"items":[` + strings.Join(lines, ",") + `]}`
	}
	tests := []struct {
		name, method, path, token, contentType, body string
		headers                                      []string
		valid                                        bool // by the document
	}{
		// POST /v1/orders: the rules of order.v1.CreateOrderRequest and OrderItem.
		{"order", "POST", "/v1/orders", tok, js, `{"items":[{"sku":"SKU-1","quantity":1000}]}`, nil, true},
		{"order of 50 lines", "POST", "/v1/orders", tok, js, items(50), nil, true},
		{"order without lines", "POST", "/v1/orders", tok, js, `{"items":[]}`, nil, false},
		{"order of 51 lines", "POST", "/v1/orders", tok, js, items(51), nil, false},
		{"sku in lowercase", "POST", "/v1/orders", tok, js, `{"items":[{"sku":"sku-1","quantity":1}]}`, nil, false},
		{"sku too long", "POST", "/v1/orders", tok, js, `{"items":[{"sku":"S` + strings.Repeat("K", 32) + `","quantity":1}]}`, nil, false},
		{"quantity 0", "POST", "/v1/orders", tok, js, `{"items":[{"sku":"SKU-1","quantity":0}]}`, nil, false},
		{"quantity 1001", "POST", "/v1/orders", tok, js, `{"items":[{"sku":"SKU-1","quantity":1001}]}`, nil, false},
		{"items null", "POST", "/v1/orders", tok, js, `{"items":null}`, nil, false},
		{"body null", "POST", "/v1/orders", tok, js, `null`, nil, false},
		{"sku null", "POST", "/v1/orders", tok, js, `{"items":[{"sku":null,"quantity":1}]}`, nil, false},
		{"property in another case", "POST", "/v1/orders", tok, js, `{"ITEMS":[{"sku":"SKU-1","quantity":1}]}`, nil, false},
		{"nested property in another case", "POST", "/v1/orders", tok, js, `{"items":[{"SKU":"SKU-1","quantity":1}]}`, nil, false},
		{"no body", "POST", "/v1/orders", tok, js, ``, nil, false},
		{"key of 128", "POST", "/v1/orders", tok, js, `{"items":[{"sku":"SKU-1","quantity":1}]}`, []string{"Idempotency-Key: " + strings.Repeat("k", 128)}, true},
		{"key of 129", "POST", "/v1/orders", tok, js, `{"items":[{"sku":"SKU-1","quantity":1}]}`, []string{"Idempotency-Key: " + strings.Repeat("k", 129)}, false},

		// Path parameters: order ids are UUIDs, SKUs have the SKU pattern.
		{"unknown order", "GET", "/v1/orders/" + unknownID, tok, "", "", nil, true},
		{"order id not a uuid", "GET", "/v1/orders/cust-1", tok, "", "", nil, false},
		{"events of a non-uuid", "GET", "/v1/orders/cust-1/events", tok, "", "", nil, false},
		{"unknown product", "GET", "/v1/products/NOPE-1", "", "", "", nil, true},
		{"product sku in lowercase", "GET", "/v1/products/nope-1", "", "", "", nil, false},

		// POST /v1/orders/{id}:cancel: optional body, reason at most 256 characters.
		{"cancel without body", "POST", "/v1/orders/" + pending + ":cancel", tok, "", "", nil, true},
		{"cancel of a non-uuid", "POST", "/v1/orders/cust-1:cancel", tok, js, `{}`, nil, false},
		{"reason of 257", "POST", "/v1/orders/" + unknownID + ":cancel", tok, js, `{"reason":"` + strings.Repeat("r", 257) + `"}`, nil, false},
		{"reason null (optional: absent)", "POST", "/v1/orders/" + pending + ":cancel", tok, js, `{"reason":null}`, nil, true},
		{"cancel body null", "POST", "/v1/orders/" + unknownID + ":cancel", tok, js, `null`, nil, false},

		// POST /v1/dev/token.
		{"dev token", "POST", "/v1/dev/token", "", js, `{"customer_id":"cust-3","scopes":["admin"]}`, nil, true},
		{"dev token, empty customer", "POST", "/v1/dev/token", "", js, `{"customer_id":""}`, nil, false},
		{"dev token, scopes a string", "POST", "/v1/dev/token", "", js, `{"customer_id":"cust-3","scopes":"admin"}`, nil, false},
		{"dev token, scopes null (optional: absent)", "POST", "/v1/dev/token", "", js, `{"customer_id":"cust-3","scopes":null}`, nil, true},
		{"dev token, customer null", "POST", "/v1/dev/token", "", js, `{"customer_id":null}`, nil, false},
		{"dev token, scope null", "POST", "/v1/dev/token", "", js, `{"customer_id":"cust-3","scopes":[null]}`, nil, false},
		{"dev token, unknown scope", "POST", "/v1/dev/token", "", js, `{"customer_id":"cust-3","scopes":["root"]}`, nil, false},

		// POST /v1/stock:import: at least one line; each line's own faults are in the 200 summary.
		{"import", "POST", "/v1/stock:import", admin, ndjson, `{"sku":"SKU-1","quantity":1}` + "\n", nil, true},
		{"import of a bad line", "POST", "/v1/stock:import", admin, ndjson, `{"sku":"bad"}`, nil, true},
		{"import without body", "POST", "/v1/stock:import", admin, ndjson, ``, nil, false},
		{"import key not allowed", "POST", "/v1/stock:import", admin, ndjson, `{"sku":"SKU-1","quantity":1}`, []string{"Idempotency-Key: a key"}, false},
	}
	for _, tt := range tests {
		x := exchange{method: tt.method, path: tt.path, token: tt.token, contentType: tt.contentType, body: []byte(tt.body), headers: tt.headers}
		headers := tt.headers
		if tt.body != "" || tt.contentType == ndjson {
			headers = append(headers, "Content-Type: "+tt.contentType)
		}
		x.reply = h.do(tt.method, tt.path, tt.token, bytes.NewReader(x.body), headers...)
		reqErr, respErr := s.validate(x)
		if (reqErr == nil) != tt.valid {
			t.Errorf("%s: the document says valid=%v, want %v (%v)", tt.name, reqErr == nil, tt.valid, reqErr)
			continue
		}
		if refused := x.reply.status == http.StatusBadRequest; refused == tt.valid {
			t.Errorf("%s: %s %s: status %d for a request the document calls valid=%v: %s", tt.name, tt.method, tt.path, x.reply.status, tt.valid, x.reply.body)
		}
		if respErr != nil {
			t.Errorf("%s: the reply does not match the document: %v", tt.name, respErr)
		}
	}
}

// TestMethodNotAllowedFollowsTheDocument: a 405's Allow header lists exactly the methods the document
// gives the path template the request path matches (GET bringing HEAD), also for the two templates
// ServeMux serves under one pattern ("/v1/orders/{id}" and "/v1/orders/{id}:cancel").
func TestMethodNotAllowedFollowsTheDocument(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.token("cust-1")
	const id = "00000000-0000-4000-8000-000000000000"
	tests := []struct{ method, path, allow string }{
		{"OPTIONS", "/v1/orders/" + id, "GET, HEAD"},
		{"POST", "/v1/orders/" + id, "GET, HEAD"},
		{"DELETE", "/v1/orders/" + id, "GET, HEAD"},
		{"GET", "/v1/orders/" + id + ":cancel", "POST"},
		{"OPTIONS", "/v1/orders/" + id + ":cancel", "POST"},
		{"GET", "/v1/orders", "POST"},
		{"DELETE", "/v1/products", "GET, HEAD"},
		{"PUT", "/v1/stock:import", "POST"},
		{"POST", "/v1/orders/" + id + "/events", "GET, HEAD"},
		{"DELETE", "/v1/products/SKU-1", "GET, HEAD"},
		{"POST", "/healthz", "GET, HEAD"},
	}
	for _, tt := range tests {
		r := h.do(tt.method, tt.path, tok, nil)
		wantError(t, r, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
		if got := r.header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
	}
}

// TestEmptyIdempotencyKeyIsRefused: the document gives Idempotency-Key at least one character, so a
// header sent empty is refused rather than taken for "no key" (which would make one up).
func TestEmptyIdempotencyKeyIsRefused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r := h.do("POST", "/v1/orders", h.token("cust-1"), str(`{"items":[{"sku":"SKU-1","quantity":1}]}`), "Idempotency-Key: ")
	wantError(t, r, http.StatusBadRequest, "VALIDATION_ERROR")
	r = h.do("POST", "/v1/stock:import", h.token("ops-1", "admin"), str(`{"sku":"SKU-1","quantity":1}`), "Idempotency-Key: ")
	wantError(t, r, http.StatusBadRequest, "VALIDATION_ERROR")
	if n := h.fakes.Order.Calls("CreateOrder"); n != 0 {
		t.Fatalf("CreateOrder reached the backend %d times", n)
	}
}
