package rpc_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/payment/internal/rpc"
)

// While its PostgreSQL is unreachable — refused, or hanging until the connect timeout — payment
// answers UNAVAILABLE with a retry delay (503 with Retry-After at the gateway), never INTERNAL, and
// never DEADLINE_EXCEEDED for a connect that timed out well within the caller's deadline.
func TestDatabaseDownIsUnavailable(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	proxy := sqldbtest.NewProxy(t, dsn)
	u, err := url.Parse(proxy.DSN(dsn))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("connect_timeout", "1") // seconds
	u.RawQuery = q.Encode()
	h := start(t, u.String(), eur("cust-0001", 1000))
	ctx := ctxT(t, time.Minute)
	authorize := func(order int) error {
		_, err := h.client.AuthorizePayment(ctx, &paymentv1.AuthorizePaymentRequest{
			OrderId: orderID(order), CustomerId: "cust-0001", AmountCents: 10, Currency: "EUR"})
		return err
	}
	if err := authorize(1); err != nil {
		t.Fatal(err)
	}
	for _, outage := range []struct {
		name  string
		start func()
	}{{"refused", proxy.Down}, {"hanging", proxy.Stall}} {
		outage.start()
		err := authorize(2)
		if rpcerr.Code(err) != codes.Unavailable || rpcerr.Reason(err) != rpc.ReasonUnavailable {
			t.Errorf("%s: %v (want UNAVAILABLE %s)", outage.name, err, rpc.ReasonUnavailable)
		} else if h := rpcerr.ToHTTP(err); h.Status != http.StatusServiceUnavailable || h.RetryAfter <= 0 {
			t.Errorf("%s at the gateway: %d, Retry-After %v", outage.name, h.Status, h.RetryAfter)
		}
		proxy.Up()
	}
	if err := authorize(2); err != nil {
		t.Fatalf("after the database came back: %v", err)
	}
}
