package security

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
)

// grpcTries is how many times each gRPC attack is tried (each on a new connection where the attack is
// in the handshake).
const grpcTries = 20

// a well-formed order id: a call that passes authorization reaches the handler (NOT_FOUND), so a refusal
// is the authorization's, not the validation's.
const someOrderID = "0b9b7c52-7d5e-4a8e-9b0e-3b8f1f0f4e11"

// call is one RPC of the suite against a service of the stack.
type call struct {
	service string
	method  string
	invoke  func(ctx context.Context, cc *grpc.ClientConn) error
}

// calls are legitimate-looking calls, one per service, as their legitimate caller would make them.
var calls = []call{
	{localstack.Order, orderv1.OrderService_GetOrder_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := orderv1.NewOrderServiceClient(cc).GetOrder(ctx, &orderv1.GetOrderRequest{OrderId: someOrderID})
		return err
	}},
	{localstack.Inventory, inventoryv1.InventoryService_ReserveStock_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := inventoryv1.NewInventoryServiceClient(cc).ReserveStock(ctx, &inventoryv1.ReserveStockRequest{
			OrderId: someOrderID, Items: []*inventoryv1.ReservationItem{{Sku: "SKU-0001", Quantity: 1}}})
		return err
	}},
	{localstack.Payment, paymentv1.PaymentService_AuthorizePayment_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := paymentv1.NewPaymentServiceClient(cc).AuthorizePayment(ctx, &paymentv1.AuthorizePaymentRequest{
			OrderId: someOrderID, CustomerId: "cust-0001", AmountCents: 100, Currency: "EUR"})
		return err
	}},
}

// refused reports whether err is a refusal by the transport or the authorization (the handler did not
// run): UNAVAILABLE (handshake refused), UNAUTHENTICATED, PERMISSION_DENIED.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Unauthenticated, codes.PermissionDenied:
		return true
	}
	return false
}

// dialOnce makes one call on a new connection with creds and closes it.
func dialOnce(addr string, creds credentials.TransportCredentials, c call) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer func() { _ = cc.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.invoke(ctx, cc)
}

// handshakeAttack calls every service grpcTries times with the client TLS configuration tc (the server's
// certificate is not checked: the attacker wants to be let in, not to verify the server).
func handshakeAttack(t *testing.T, a *Attack, tc func() *tls.Config) {
	f := stack(t)
	handshakeControl(t, f)
	for _, c := range calls {
		addr := f.grpcAddr(t, c.service)
		for range grpcTries {
			a.try(func() (bool, error) {
				err := dialOnce(addr, credentials.NewTLS(tc()), c)
				a.saw(status.Code(err).String())
				return !refused(err), nil
			})
		}
	}
}

// handshakeControl: the same kind of client (no server verification, ALPN and all as grpc-go sets them)
// with the gateway's real key pair is let in (GetOrder of an unknown order is NOT_FOUND, from the
// handler), so the refusals of a handshake attack are the server's verdict on the client's certificate.
func handshakeControl(t *testing.T, f *stackFixture) {
	t.Helper()
	files := localstack.CertFiles(f.info.CertsDir, localstack.Gateway)
	cert, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if err := dialOnce(f.grpcAddr(t, localstack.Order), credentials.NewTLS(tc), calls[0]); status.Code(err) != codes.NotFound {
		t.Fatalf("control: the gateway's own certificate: GetOrder gave %v, want NOT_FOUND", err)
	}
}

// TestNoClientCertificate: a TLS client without a certificate is refused by every service.
func TestNoClientCertificate(t *testing.T) {
	a := attack(t, "gRPC without a client certificate", "TLS handshake refused (UNAVAILABLE)")
	handshakeAttack(t, a, func() *tls.Config {
		return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	})
}

// TestForeignCA: a certificate naming the gateway's SPIFFE id, issued by a CA the services do not trust.
func TestForeignCA(t *testing.T) {
	a := attack(t, "gRPC with a gateway certificate from a foreign CA", "TLS handshake refused (UNAVAILABLE)")
	ca, err := mtls.NewCA("not the shopmesh CA", time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(localstack.Gateway, time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	handshakeAttack(t, a, func() *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	})
}

// identity is a client with service's real certificate from the stack (what a compromised service holds).
func identity(t *testing.T, f *stackFixture, service string) *mtls.Source {
	t.Helper()
	src, err := mtls.Load(localstack.CertFiles(f.info.CertsDir, service))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// TestWrongSPIFFEID: a valid certificate of the suite, but an identity the method's policy does not
// list: payment calls order (only the gateway may), the gateway reserves stock (only order may),
// inventory authorizes a payment (only order may).
func TestWrongSPIFFEID(t *testing.T) {
	a := attack(t, "gRPC with a valid certificate, wrong SPIFFE id for the method", "PERMISSION_DENIED")
	f := stack(t)
	// payment calls CreateOrder (the suite's order policy lets payment call GetOrder only).
	createOrder := call{localstack.Order, orderv1.OrderService_CreateOrder_FullMethodName, func(ctx context.Context, cc *grpc.ClientConn) error {
		_, err := orderv1.NewOrderServiceClient(cc).CreateOrder(ctx, &orderv1.CreateOrderRequest{
			CustomerId: "cust-0001", IdempotencyKey: "security-suite", Items: []*orderv1.OrderItem{{Sku: "SKU-0001", Quantity: 1}}})
		return err
	}}
	wrong := map[string]string{localstack.Order: localstack.Payment, localstack.Inventory: localstack.Gateway, localstack.Payment: localstack.Inventory}
	for _, c := range []call{createOrder, calls[1], calls[2]} {
		src := identity(t, f, wrong[c.service])
		cc, err := grpc.NewClient(f.grpcAddr(t, c.service), grpc.WithTransportCredentials(src.ClientCredentials(c.service)))
		if err != nil {
			t.Fatal(err)
		}
		for range grpcTries {
			a.try(func() (bool, error) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				err := c.invoke(ctx, cc)
				if status.Code(err) == codes.Unavailable {
					return false, err // the call never reached the server: not a try
				}
				a.saw(status.Code(err).String())
				return status.Code(err) != codes.PermissionDenied, nil
			})
		}
		_ = cc.Close()
	}
	// The control: the right identity is let through (the handler answers), so the refusals above are
	// the policy's.
	src := identity(t, f, localstack.Gateway)
	cc, err := grpc.NewClient(f.grpcAddr(t, localstack.Order), grpc.WithTransportCredentials(src.ClientCredentials(localstack.Order)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := calls[0].invoke(ctx, cc); status.Code(err) != codes.NotFound {
		t.Fatalf("control: the gateway's GetOrder of an unknown order: %v, want NOT_FOUND", err)
	}
}

// TestForgedCustomer: x-customer-id from an identity other than the gateway. The suite's order policy
// lets payment call GetOrder, so the call passes the policy and meets authz.CustomerFrom; and order
// calling payment's GetAccount (edge only) meets the policy.
func TestForgedCustomer(t *testing.T) {
	a := attack(t, "gRPC x-customer-id forged by a non-gateway identity", "PERMISSION_DENIED")
	f := stack(t)
	forged := metadata.Pairs(authz.CustomerHeader, "cust-0001")
	cases := []struct {
		as, to string
		invoke func(ctx context.Context, cc *grpc.ClientConn) error
	}{
		{localstack.Payment, localstack.Order, calls[0].invoke},
		{localstack.Order, localstack.Payment, func(ctx context.Context, cc *grpc.ClientConn) error {
			_, err := paymentv1.NewPaymentServiceClient(cc).GetAccount(ctx, &paymentv1.GetAccountRequest{CustomerId: "cust-0001"})
			return err
		}},
	}
	for _, c := range cases {
		src := identity(t, f, c.as)
		cc, err := grpc.NewClient(f.grpcAddr(t, c.to), grpc.WithTransportCredentials(src.ClientCredentials(c.to)))
		if err != nil {
			t.Fatal(err)
		}
		for range grpcTries {
			a.try(func() (bool, error) {
				ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(context.Background(), forged), 5*time.Second)
				defer cancel()
				err := c.invoke(ctx, cc)
				if status.Code(err) == codes.Unavailable {
					return false, err
				}
				a.saw(status.Code(err).String())
				return status.Code(err) != codes.PermissionDenied, nil
			})
		}
		_ = cc.Close()
	}
	// The control: payment's GetOrder without the forged metadata passes (NOT_FOUND from the handler),
	// so the refusal above is the customer check's, not the policy's.
	src := identity(t, f, localstack.Payment)
	cc, err := grpc.NewClient(f.grpcAddr(t, localstack.Order), grpc.WithTransportCredentials(src.ClientCredentials(localstack.Order)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := calls[0].invoke(ctx, cc); status.Code(err) != codes.NotFound {
		t.Fatalf("control: payment's GetOrder without x-customer-id: %v, want NOT_FOUND", err)
	}
}

// TestOversizedGRPCMessage: a 5 MiB request from an identity allowed to call the method; the server's
// receive limit (gRPC's 4 MiB default unless the platform sets one) refuses it.
func TestOversizedGRPCMessage(t *testing.T) {
	a := attack(t, "gRPC request message of 5 MiB", "RESOURCE_EXHAUSTED")
	f := stack(t)
	src := identity(t, f, localstack.Gateway)
	cc, err := grpc.NewClient(f.grpcAddr(t, localstack.Inventory), grpc.WithTransportCredentials(src.ClientCredentials(localstack.Inventory)))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	ic := inventoryv1.NewInventoryServiceClient(cc)
	big := strings.Repeat("A", 5<<20)
	for range grpcTries {
		a.try(func() (bool, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := ic.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: big})
			if status.Code(err) == codes.Unavailable {
				return false, err
			}
			a.saw(status.Code(err).String())
			return status.Code(err) != codes.ResourceExhausted, nil
		})
	}
}

// TestPlaintextGRPC: a client without TLS at all.
func TestPlaintextGRPC(t *testing.T) {
	a := attack(t, "gRPC in plaintext (no TLS)", "refused (UNAVAILABLE)")
	f := stack(t)
	for _, c := range calls {
		addr := f.grpcAddr(t, c.service)
		for range grpcTries {
			a.try(func() (bool, error) {
				err := dialOnce(addr, insecure.NewCredentials(), c)
				a.saw(status.Code(err).String())
				return !refused(err), nil
			})
		}
	}
}

// TestBadCertificatesFromTheSuiteCA: certificates signed by the suite's own CA (as a stolen or
// mis-issued CA key could make them) but not valid shopmesh identities: expired, two SPIFFE ids, a
// foreign trust domain, server-auth only. Each is presented as the gateway to every service.
func TestBadCertificatesFromTheSuiteCA(t *testing.T) {
	f := stack(t)
	caPEM, err := os.ReadFile(filepath.Join(f.info.CertsDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(f.info.CertsDir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(caPEM) // the active CA is the bundle's first certificate
	if block == nil {
		t.Fatal("ca.pem: no certificate")
	}
	ca, err := mtls.ParseCA(pem.EncodeToMemory(block), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cases := []struct {
		name string
		edit func(*x509.Certificate)
	}{
		{"gRPC with an expired certificate of the suite's CA", func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
		}},
		{"gRPC with a certificate naming two SPIFFE ids (gateway, order)", func(c *x509.Certificate) {
			c.URIs = append(c.URIs, mtls.SPIFFEID(localstack.Order))
		}},
		{"gRPC with a certificate of a foreign trust domain (spiffe://evil.example/gateway)", func(c *x509.Certificate) {
			c.URIs = []*url.URL{{Scheme: "spiffe", Host: "evil.example", Path: "/gateway"}}
		}},
		{"gRPC with a server-auth-only certificate", func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}},
	}
	for _, tc := range cases {
		a := attack(t, tc.name, "refused (UNAVAILABLE or PERMISSION_DENIED)")
		tmpl := mtls.LeafTemplate(localstack.Gateway, now.Add(-time.Minute), time.Hour)
		tc.edit(tmpl)
		certPEM, leafKey, err := ca.Sign(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tls.X509KeyPair(certPEM, leafKey)
		if err != nil {
			t.Fatal(err)
		}
		handshakeAttack(t, a, func() *tls.Config {
			return &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
		})
	}
}
