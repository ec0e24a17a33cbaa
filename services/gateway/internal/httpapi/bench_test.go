package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shopmesh/shopmesh/services/gateway/internal/httpapi"
)

// BenchmarkGetProduct serves GET /v1/products/{sku} through the API's handler (routing, middleware,
// the gRPC call to the fake inventory over loopback, the JSON body), without the HTTP server and client:
// allocs/op is the gateway's own share plus the gRPC client's and the fake's.
func BenchmarkGetProduct(b *testing.B) {
	h := newHarness(b, func(s *httpapi.Settings) { s.RateLimitRPS, s.RateLimitBurst = 1e9, 1e9 })
	req := httptest.NewRequest(http.MethodGet, "/v1/products/SKU-2", nil)
	req.Header.Set("Authorization", "Bearer "+h.token("cust-1"))
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.api.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
