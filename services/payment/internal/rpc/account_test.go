package rpc_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/platformtest"
	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
	"github.com/shopmesh/shopmesh/services/payment/internal/events"
	"github.com/shopmesh/shopmesh/services/payment/internal/rpc"
	"github.com/shopmesh/shopmesh/services/payment/internal/store"
	"github.com/shopmesh/shopmesh/services/payment/migrations"
)

// A customer reads only their own account: another customer's is NOT_FOUND, with the same answer as a
// missing one. Checked with mTLS on (the customer is believed only from the gateway's certificate) and
// off; under the service's policy only the gateway may call GetAccount at all, and under a policy file
// that lets order call it, order reads any account for itself but cannot claim to act for a customer.
func TestCustomerSeesOnlyOwnAccount(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := mtls.EnsureDir(mtls.DirOptions{Dir: dir, Services: []string{"payment", "gateway", "order"}, TTL: time.Hour, CATTL: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	orderMayRead := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(orderMayRead, []byte("methods:\n  /shopmesh.payment.v1.PaymentService/GetAccount:\n"+
		"    - spiffe://shopmesh.local/gateway\n    - spiffe://shopmesh.local/order\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	uc := newPayments(t, eur("alice", 1234), eur("bob", 500))
	serverCfg := func(tls bool, policy string) config.Config {
		cfg := config.Default(config.Test)
		cfg.Service, cfg.ListenAddr, cfg.AuthzPolicyFile = "payment", "127.0.0.1:0", policy
		if tls {
			cfg.TLS = platformtest.TLSFiles(dir, "payment")
		}
		return cfg
	}
	mtlsAddr := servePayment(t, serverCfg(true, ""), uc)
	plainAddr := servePayment(t, serverCfg(false, ""), uc)
	orderPolicyAddr := servePayment(t, serverCfg(true, orderMayRead), uc)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	get := func(c paymentv1.PaymentServiceClient, customer, account string) (*paymentv1.Account, error) {
		callCtx := ctx
		if customer != "" {
			callCtx = metadata.AppendToOutgoingContext(ctx, authz.CustomerHeader, customer)
		}
		resp, err := c.GetAccount(callCtx, &paymentv1.GetAccountRequest{CustomerId: account})
		return resp.GetAccount(), err
	}
	for _, tc := range []struct{ name, dir, addr string }{
		{"mtls", dir, mtlsAddr},
		{"plaintext", "", plainAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := paymentClient(t, "gateway", tc.dir, tc.addr)
			if a, err := get(gw, "alice", "alice"); err != nil || a.GetCustomerId() != "alice" || a.GetBalanceCents() != 1234 {
				t.Errorf("owner get: %v %v", a, err)
			}
			_, other := get(gw, "mallory", "alice")
			_, missing := get(gw, "mallory", "mallory")
			if status.Code(other) != codes.NotFound || rpcerr.Reason(other) != rpc.ReasonAccountNotFound ||
				status.Convert(other).Message() != status.Convert(missing).Message() || rpcerr.Reason(missing) != rpcerr.Reason(other) {
				t.Errorf("other's account: %v; missing account: %v", other, missing)
			}
			if _, err := get(gw, "bob", "alice"); status.Code(err) != codes.NotFound {
				t.Errorf("bob reads alice's account: %v", err)
			}
			// Without customer metadata the gateway acts for itself, which the policy allows.
			if a, err := get(gw, "", "bob"); err != nil || a.GetBalanceCents() != 500 {
				t.Errorf("service get: %v %v", a, err)
			}
		})
	}
	t.Run("policy", func(t *testing.T) {
		// The service's policy lets only the gateway call GetAccount, with or without a customer.
		order := paymentClient(t, "order", dir, mtlsAddr)
		for _, customer := range []string{"", "alice"} {
			if _, err := get(order, customer, "alice"); status.Code(err) != codes.PermissionDenied {
				t.Errorf("order (customer %q) under the service's policy: %v", customer, err)
			}
		}
		// A policy that lets order in: order acts for no customer and reads the account it names, but its
		// customer metadata is not believed.
		order = paymentClient(t, "order", dir, orderPolicyAddr)
		if a, err := get(order, "", "alice"); err != nil || a.GetCustomerId() != "alice" {
			t.Errorf("order, allowed, no customer: %v %v", a, err)
		}
		if _, err := get(order, "alice", "alice"); status.Code(err) != codes.PermissionDenied {
			t.Errorf("order claiming a customer: %v", err)
		}
		gw := paymentClient(t, "gateway", dir, orderPolicyAddr)
		if _, err := get(gw, "bob", "alice"); status.Code(err) != codes.NotFound {
			t.Errorf("bob reads alice's account: %v", err)
		}
	})
}

// newPayments is the payment use cases over a fresh SQLite database holding accounts.
func newPayments(t *testing.T, accounts ...domain.Account) *app.App {
	t.Helper()
	dsn := sqldbtest.SQLite(t)
	if err := migrate.UpAll(t.Context(), dsn, migrations.FS, migrate.Options{}); err != nil {
		t.Fatal(err)
	}
	db, d := sqldbtest.Open(t, dsn)
	st := store.New(db, d, events.NewOutbox(outbox.New(d, nil)))
	if _, err := st.SeedAccounts(t.Context(), accounts); err != nil {
		t.Fatal(err)
	}
	uc, err := app.New(app.Deps{Store: st}, app.Settings{})
	if err != nil {
		t.Fatal(err)
	}
	return uc
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// servePayment serves the PaymentService over uc from a platform built from cfg (its TLS, policy and
// the whole server chain) and returns its address.
func servePayment(t *testing.T, cfg config.Config, uc *app.App) string {
	t.Helper()
	return platformtest.Serve(t, cfg, func(s *grpc.Server) {
		rpc.NewServer(uc, quiet()).Register(s)
	}, platform.WithPolicy(rpc.Policy()))
}

// paymentClient dials the payment service at addr as identity (mTLS when dir != "").
func paymentClient(t *testing.T, identity, dir, addr string) paymentv1.PaymentServiceClient {
	t.Helper()
	return paymentv1.NewPaymentServiceClient(platformtest.Dial(t, identity, dir, "payment", addr))
}
