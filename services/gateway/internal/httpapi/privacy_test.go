package httpapi_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
	"github.com/shopmesh/shopmesh/services/gateway/internal/httpapi"
)

// leakyOrder answers GetOrder as a service that passed its own dependency's transport error on in its
// status message (with a reason, so the message is not dropped as the transport's own).
type leakyOrder struct{ *fakes.Order }

const leakedDetail = `inventory unavailable: rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: dial tcp 10.1.2.3:50051: connect: connection refused"`

func (leakyOrder) GetOrder(context.Context, *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	return nil, rpcerr.WithReason(codes.Unavailable, "DEPENDENCY_UNAVAILABLE", leakedDetail, nil)
}

// An UNAVAILABLE whose message carries a backend's ip:port reaches the client as a stable code, a
// generic message and a request id; the log line under that request id has the detail.
func TestUnavailableReachesTheClientWithoutAddresses(t *testing.T) {
	t.Parallel()
	h := newHarnessWithOrder(t, func(o *fakes.Order) orderv1.OrderServiceServer { return leakyOrder{Order: o} })
	r := h.do("GET", "/v1/orders/00000000-0000-4000-8000-000000000000", h.token("cust-1"), nil)
	m := wantError(t, r, http.StatusServiceUnavailable, "DEPENDENCY_UNAVAILABLE")
	for _, leak := range []string{"10.1.2.3", "50051", "dial tcp", "transport"} {
		if strings.Contains(string(r.body), leak) {
			t.Fatalf("the body names %q: %s", leak, r.body)
		}
	}
	id := m["request_id"].(string)
	lines := h.logs.lines("request_id", id)
	if len(lines) == 0 {
		t.Fatalf("no log line under request id %s", id)
	}
	found := false
	for _, l := range lines {
		if e, _ := l["err"].(string); strings.Contains(e, "10.1.2.3:50051") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no log line under request id %s has the detail: %v", id, lines)
	}
}

// A 401 says that a valid token is required and nothing about why this one failed (expired, signature,
// audience...): every bad token gets the same message; the reason is in the log under the request id.
func TestUnauthorizedBodySaysNotWhy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	expired := forge(secret, "HS256", map[string]any{"iss": issuer, "aud": "shopmesh", "sub": "cust-1", "exp": time.Now().Add(-time.Minute).Unix()})
	var messages []string
	for _, tok := range []string{expired, "not-a-jwt", forge("some-other-secret-some-other-secret", "HS256", map[string]any{"sub": "cust-1"})} {
		r := h.do("GET", "/v1/accounts/me", tok, nil)
		m := wantError(t, r, http.StatusUnauthorized, "UNAUTHENTICATED")
		messages = append(messages, m["message"].(string))
		if lines := h.logs.lines("request_id", m["request_id"].(string)); len(lines) != 1 || lines[0]["err"] == nil || lines[0]["err"] == "" {
			t.Fatalf("log lines under the request id: %v, want one with the reason", lines)
		}
	}
	for _, msg := range messages {
		if msg != messages[0] {
			t.Fatalf("401 messages differ by cause: %q", messages)
		}
		for _, why := range []string{"expire", "signature", "audience", "malformed", "alg"} {
			if strings.Contains(strings.ToLower(msg), why) {
				t.Fatalf("401 message %q says why (%s)", msg, why)
			}
		}
	}
}

// Rate limiting runs before authentication: a client flooding bad tokens is throttled (429, its tokens
// no longer looked at) after its IP's burst, while authenticated customers keep their own buckets.
func TestBadTokensAreRateLimited(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(s *httpapi.Settings) { s.RateLimitRPS, s.RateLimitBurst = 0.01, 3 })
	for i := range 3 {
		wantError(t, h.do("GET", "/v1/accounts/me", "bad-token-"+strconv.Itoa(i), nil), http.StatusUnauthorized, "UNAUTHENTICATED")
	}
	r := h.do("GET", "/v1/accounts/me", "bad-token-3", nil)
	wantError(t, r, http.StatusTooManyRequests, "RATE_LIMITED")
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// No token at all is a failed authentication too, and as throttled.
	wantError(t, h.do("GET", "/v1/orders/00000000-0000-4000-8000-000000000000", "", nil), http.StatusTooManyRequests, "RATE_LIMITED")
	if n := h.fakes.Payment.Calls("GetAccount"); n != 0 {
		t.Fatalf("GetAccount calls %d, want 0", n)
	}
}

// The API port serves the API: no /metrics (the admin port has it), and /readyz says ready or not
// without naming the backends.
func TestAPIPortHasNoInternals(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	wantError(t, h.do("GET", "/metrics", "", nil), http.StatusNotFound, "NOT_FOUND")
	r := h.do("GET", "/readyz", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("readyz %d %s", r.status, r.body)
	}
	if m := r.json(t); len(m) != 1 || m["status"] != "ok" {
		t.Fatalf("readyz body %s, want only the status", r.body)
	}
	for _, name := range []string{"order", "inventory", "payment"} {
		if strings.Contains(string(r.body), name) {
			t.Fatalf("readyz names the backend %s: %s", name, r.body)
		}
	}
	// The metrics are still collected, for the admin port.
	if v, ok := h.metric(`gateway_http_requests_total{code="200",route="GET /readyz"}`); !ok || v != 1 {
		t.Fatalf("gateway_http_requests_total for /readyz: %v %v", v, ok)
	}
}
