package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/services/gateway/internal/httpapi"
)

// S4 at the edge: every JSON body the gateway decodes, through the real handler (auth, limits, strict
// decoding, mapping of the backend's answer) in front of fake backends. Whatever the body: no panic,
// never a 5xx, and every error is the documented JSON error body.
func fuzzHarness(f *testing.F) *harness {
	return newHarness(f, func(s *httpapi.Settings) {
		s.MaxBodyBytes, s.MaxImportBytes, s.MaxImportLineBytes = 4096, 16<<10, 1024
		s.RateLimitRPS, s.RateLimitBurst = 1e9, 1e9 // the limiter is not what is fuzzed
	})
}

func fuzzRequest(t *testing.T, h *harness, method, path, token string, body []byte) {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", "fuzz")
	req.Header.Set("Content-Type", "application/json")
	if strings.Contains(path, "import") {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	w := httptest.NewRecorder()
	h.api.ServeHTTP(w, req)
	if w.Code >= 500 {
		t.Fatalf("%s %s with %q: %d %s", method, path, body, w.Code, w.Body.Bytes())
	}
	if w.Code >= 400 {
		var e struct {
			Code   string `json:"code"`
			Status int    `json:"status"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code == "" || e.Status != w.Code {
			t.Fatalf("%s %s with %q: %d with a body that is not an error: %s", method, path, body, w.Code, w.Body.Bytes())
		}
	}
}

func FuzzDecodeCreateOrder(f *testing.F) {
	for _, s := range []string{
		`{"items":[{"sku":"SKU-1","quantity":1}]}`,
		`{"items":[{"sku":"SKU-1","quantity":1}],"bogus":1}`,
		`{"items":[{"sku":"SKU-1","quantity":"two"}]}`,
		`{"items":[{"sku":"SKU-1","quantity":99999999999}]}`,
		`{"items":[]}xyz`, `{"items":[`, ``, `null`, `[]`, `"x"`, `{"items":null}`,
		`{"items":[{"sku":"","quantity":-1}]}`, `{"items":[{"sku":"\u0000","quantity":0}]}`,
		`{"items":[{"sku":"SKU-1","quantity":1e3}]}`, `{"items":[{"sku":"SKU-1","quantity":1.5}]}`,
		`{"items":` + strings.Repeat("[", 500) + `}`,
	} {
		f.Add([]byte(s))
	}
	h := fuzzHarness(f)
	tok := h.token("cust-fuzz")
	f.Fuzz(func(t *testing.T, body []byte) {
		if bytes.Contains(body, []byte("BOOM")) {
			t.Skip("the fake order service answers INTERNAL for SKU BOOM on purpose")
		}
		fuzzRequest(t, h, "POST", "/v1/orders", tok, body)
	})
}

func FuzzDecodeCancelOrder(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"reason":"changed my mind"}`, `{"reason":1}`, `{"why":"x"}`, `{} {}`, `{"reason":"` + strings.Repeat("x", 5000) + `"}`} {
		f.Add([]byte(s))
	}
	h := fuzzHarness(f)
	tok := h.token("cust-fuzz")
	f.Fuzz(func(t *testing.T, body []byte) {
		// An order that does not exist: the body is decoded (and refused or accepted) before the lookup.
		fuzzRequest(t, h, "POST", "/v1/orders/00000000-0000-0000-0000-000000000000:cancel", tok, body)
	})
}

func FuzzDecodeStockImport(f *testing.F) {
	for _, s := range []string{
		"{\"sku\":\"SKU-1\",\"quantity\":5}\n",
		"{\"sku\":\"SKU-1\",\"quantity\":5}\n{\"sku\":\"SKU-2\",\"quantity\":-1}\n",
		"{\"sku\":\"SKU-1\",\"quantity\":5,\"x\":1}\n", "not json\n", "{}\n{}\n", "\n\n\n", "{\"sku\":\"SKU-1\"} {\"sku\":\"SKU-2\"}\n",
		strings.Repeat("x", 2000) + "\n",
	} {
		f.Add([]byte(s))
	}
	h := fuzzHarness(f)
	admin := h.token("admin-fuzz", "admin")
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzRequest(t, h, "POST", "/v1/stock:import", admin, body)
	})
}
