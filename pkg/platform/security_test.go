package platform_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
)

// certDir writes ca.pem (the given bundle, or ca's certificate) and <svc>.pem/<svc>-key.pem for each
// service, the layout of `make certs`.
func certDir(t testing.TB, ca *mtls.CA, services ...string) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.CertPEM)
	for _, svc := range services {
		issueInto(t, dir, ca, svc)
	}
	return dir
}

func issueInto(t testing.TB, dir string, ca *mtls.CA, svc string) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(svc, time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, svc+"-key.pem"), keyPEM)
	writeFile(t, filepath.Join(dir, svc+".pem"), certPEM)
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := mtls.WriteFileAtomic(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func testCA(t testing.TB, name string) *mtls.CA {
	t.Helper()
	ca, err := mtls.NewCA(name, time.Now().Add(-time.Hour), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// tlsConfig is testConfig for service with mTLS from dir; circuit breakers are off so that a column of
// denials cannot open one and turn later cells into UNAVAILABLE.
func tlsConfig(service, dir string) config.Config {
	c := testConfig(service)
	c.TLS = config.TLS{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, service+".pem"),
		KeyFile:  filepath.Join(dir, service+"-key.pem"),
	}
	c.Client.Breaker.Enabled = false
	return c
}

// methodKind is one RPC of a real shopmesh service, read from its generated descriptor.
type methodKind struct {
	full                         string
	clientStreams, serverStreams bool
}

func methodsOf(sd grpc.ServiceDesc) []methodKind {
	var out []methodKind
	for _, m := range sd.Methods {
		out = append(out, methodKind{full: "/" + sd.ServiceName + "/" + m.MethodName})
	}
	for _, s := range sd.Streams {
		out = append(out, methodKind{full: "/" + sd.ServiceName + "/" + s.StreamName, clientStreams: s.ClientStreams, serverStreams: s.ServerStreams})
	}
	return out
}

// counting registers a stand-in for every method of sd (same names and stream kinds, empty messages)
// that counts the calls reaching it: the platform chain in front of it is the real one.
func counting(sd grpc.ServiceDesc, hits *sync.Map) grpc.ServiceDesc {
	hit := func(method string) {
		n, _ := hits.LoadOrStore(method, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	out := grpc.ServiceDesc{ServiceName: sd.ServiceName, HandlerType: (*any)(nil)}
	for _, m := range sd.Methods {
		full := "/" + sd.ServiceName + "/" + m.MethodName
		out.Methods = append(out.Methods, grpc.MethodDesc{
			MethodName: m.MethodName,
			Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				in := new(emptypb.Empty)
				if err := dec(in); err != nil {
					return nil, err
				}
				h := func(context.Context, any) (any, error) { hit(full); return &emptypb.Empty{}, nil }
				if icpt == nil {
					return h(ctx, in)
				}
				return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: full}, h)
			},
		})
	}
	for _, s := range sd.Streams {
		full := "/" + sd.ServiceName + "/" + s.StreamName
		out.Streams = append(out.Streams, grpc.StreamDesc{
			StreamName: s.StreamName, ServerStreams: s.ServerStreams, ClientStreams: s.ClientStreams,
			Handler: func(_ any, ss grpc.ServerStream) error {
				hit(full)
				for {
					if err := ss.RecvMsg(new(emptypb.Empty)); err != nil {
						if errors.Is(err, io.EOF) {
							break
						}
						return err
					}
				}
				return ss.SendMsg(&emptypb.Empty{})
			},
		})
	}
	return out
}

// invoke makes one call of m on conn and returns its status code.
func invoke(ctx context.Context, conn grpc.ClientConnInterface, m methodKind, opts ...grpc.CallOption) codes.Code {
	if !m.clientStreams && !m.serverStreams {
		return status.Code(conn.Invoke(ctx, m.full, &emptypb.Empty{}, &emptypb.Empty{}, opts...))
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: m.clientStreams, ServerStreams: m.serverStreams}, m.full, opts...)
	if err != nil {
		return status.Code(err)
	}
	if err := st.SendMsg(&emptypb.Empty{}); err != nil && !errors.Is(err, io.EOF) {
		return status.Code(err)
	}
	if err := st.CloseSend(); err != nil {
		return status.Code(err)
	}
	if err := st.RecvMsg(new(emptypb.Empty)); err != nil {
		return status.Code(err)
	}
	// Drain to the end, so the call finishes (and call options like grpc.Peer are filled in).
	for {
		if err := st.RecvMsg(new(emptypb.Empty)); err != nil {
			if errors.Is(err, io.EOF) {
				return codes.OK
			}
			return status.Code(err)
		}
	}
}

// matrixRules is the shopmesh call graph as the services declare it (services/<svc>/internal/rpc/policy.go),
// copied here since pkg/platform cannot import them: per served service, method → callers by name.
var matrixRules = map[string]authz.Rules{
	"order": {"/shopmesh.order.v1.OrderService/*": {authz.Edge}},
	"inventory": {
		"/shopmesh.inventory.v1.InventoryService/GetProduct":   {authz.Edge, "order"},
		"/shopmesh.inventory.v1.InventoryService/ListProducts": {authz.Edge, "order"},
		"/shopmesh.inventory.v1.InventoryService/WatchStock":   {authz.Edge, "order"},
		"/shopmesh.inventory.v1.InventoryService/ImportStock":  {authz.Edge},
		"/shopmesh.inventory.v1.InventoryService/ReserveStock": {"order"},
		"/shopmesh.inventory.v1.InventoryService/ReleaseStock": {"order"},
		"/shopmesh.inventory.v1.InventoryService/CommitStock":  {"order"},
	},
	"payment": {
		"/shopmesh.payment.v1.PaymentService/AuthorizePayment": {"order"},
		"/shopmesh.payment.v1.PaymentService/CapturePayment":   {"order"},
		"/shopmesh.payment.v1.PaymentService/VoidPayment":      {"order"},
		"/shopmesh.payment.v1.PaymentService/GetAccount":       {authz.Edge},
	},
}

// policyTable is the outcome expected from matrixRules with the edge "gateway", written out by hand per
// method: method → identities allowed. Every other (identity, method) pair must be denied.
var policyTable = map[string][]string{
	"/shopmesh.order.v1.OrderService/CreateOrder":          {"gateway"},
	"/shopmesh.order.v1.OrderService/GetOrder":             {"gateway"},
	"/shopmesh.order.v1.OrderService/CancelOrder":          {"gateway"},
	"/shopmesh.order.v1.OrderService/WatchOrder":           {"gateway"},
	"/shopmesh.order.v1.OrderService/Checkout":             {"gateway"},
	"/shopmesh.inventory.v1.InventoryService/ReserveStock": {"order"},
	"/shopmesh.inventory.v1.InventoryService/ReleaseStock": {"order"},
	"/shopmesh.inventory.v1.InventoryService/CommitStock":  {"order"},
	"/shopmesh.inventory.v1.InventoryService/GetProduct":   {"gateway", "order"},
	"/shopmesh.inventory.v1.InventoryService/ListProducts": {"gateway", "order"},
	"/shopmesh.inventory.v1.InventoryService/WatchStock":   {"gateway", "order"},
	"/shopmesh.inventory.v1.InventoryService/ImportStock":  {"gateway"},
	"/shopmesh.payment.v1.PaymentService/AuthorizePayment": {"order"},
	"/shopmesh.payment.v1.PaymentService/CapturePayment":   {"order"},
	"/shopmesh.payment.v1.PaymentService/VoidPayment":      {"order"},
	"/shopmesh.payment.v1.PaymentService/GetAccount":       {"gateway"},
}

var matrixServices = map[string]grpc.ServiceDesc{
	"order":     orderv1.OrderService_ServiceDesc,
	"inventory": inventoryv1.InventoryService_ServiceDesc,
	"payment":   paymentv1.PaymentService_ServiceDesc,
}

type matrix struct {
	ca    *mtls.CA
	dir   string
	addrs map[string]string // service → address
	hits  sync.Map          // full method → *atomic.Int64
}

// startMatrix serves the three shopmesh gRPC services, each from its own platform with TLS on, its
// matrixRules and the edge set by env (<P>_AUTHZ_EDGE) when edge is not "".
func startMatrix(t *testing.T, edge ...string) *matrix {
	m := &matrix{ca: testCA(t, "matrix CA"), addrs: map[string]string{}}
	m.dir = certDir(t, m.ca, "order", "inventory", "payment", "gateway", "evil", "bff")
	for svc, sd := range matrixServices {
		desc := counting(sd, &m.hits)
		cfg := tlsConfig(svc, m.dir)
		if len(edge) > 0 {
			env := map[string]string{strings.ToUpper(svc) + "_AUTHZ_EDGE": edge[0]}
			if err := config.FromEnv(&cfg, strings.ToUpper(svc), func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
				t.Fatal(err)
			}
		}
		r := serve(t, newPlatform(t, cfg, platform.WithPolicy(matrixRules[svc])), func(s *grpc.Server) { s.RegisterService(&desc, struct{}{}) })
		m.addrs[svc] = r.addr
	}
	return m
}

// caller is a platform for identity whose targets are the three services.
func (m *matrix) caller(t *testing.T, identity string) *platform.Platform {
	cfg := tlsConfig(identity, m.dir)
	for svc, addr := range m.addrs {
		cfg.Targets[svc] = config.Target{Addresses: []string{addr}}
	}
	return newPlatform(t, cfg)
}

func (m *matrix) count(method string) int64 {
	if n, ok := m.hits.Load(method); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

func TestPolicyTableCoversEveryMethod(t *testing.T) {
	t.Parallel()
	var all []string
	for _, sd := range matrixServices {
		for _, m := range methodsOf(sd) {
			all = append(all, m.full)
			if _, ok := policyTable[m.full]; !ok {
				t.Errorf("%s is missing from the test's policy table", m.full)
			}
		}
	}
	if len(all) != len(policyTable) {
		t.Errorf("services have %d methods, table %d", len(all), len(policyTable))
	}
}

// S3: every identity × every method of the three services over real mTLS connections through the
// facade, each server enforcing the rules given to platform.WithPolicy; each cell must match policyTable
// and the handler must run exactly for the allowed cells.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	runMatrix(t, startMatrix(t), "gateway")
}

// The edge is configuration: with <P>_AUTHZ_EDGE=bff on the servers, bff gets every cell authz.Edge
// stands for and the gateway's identity is refused there, like any caller no rule names.
func TestAuthorizationMatrixWithAnotherEdge(t *testing.T) {
	t.Parallel()
	runMatrix(t, startMatrix(t, "bff"), "bff")
}

// runMatrix calls every method of m as each identity and checks the outcome against policyTable with
// its "gateway" read as edge.
func runMatrix(t *testing.T, m *matrix, edge string) {
	t.Helper()
	identities := []string{"order", "inventory", "payment", "gateway", "evil", "bff"}
	table := map[string][]string{}
	for meth, ids := range policyTable {
		for _, id := range ids {
			if id == "gateway" {
				id = edge
			}
			table[meth] = append(table[meth], id)
		}
	}
	want := map[string]int64{}
	cells, allowed := 0, 0
	for _, id := range identities {
		p := m.caller(t, id)
		for svc, sd := range matrixServices {
			conn, err := p.Dial(svc)
			if err != nil {
				t.Fatal(err)
			}
			for _, meth := range methodsOf(sd) {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				var pr peer.Peer
				got := invoke(ctx, conn, meth, grpc.Peer(&pr))
				cancel()
				cells++
				ok := slices.Contains(table[meth.full], id)
				wantCode := codes.PermissionDenied
				if ok {
					wantCode = codes.OK
					want[meth.full]++
					allowed++
				}
				if got != wantCode {
					t.Errorf("%s → %s: got %v, want %v", id, meth.full, got, wantCode)
				}
				if info, isTLS := pr.AuthInfo.(credentials.TLSInfo); !isTLS || info.State.Version != tls.VersionTLS13 {
					t.Errorf("%s → %s: not over TLS 1.3 (%T)", id, meth.full, pr.AuthInfo)
				}
			}
		}
	}
	for meth := range policyTable {
		if got := m.count(meth); got != want[meth] {
			t.Errorf("%s: handler ran %d times, want %d", meth, got, want[meth])
		}
	}
	t.Logf("matrix: %d identities × %d methods = %d cells, %d allowed, %d denied", len(identities), len(policyTable), cells, allowed, cells-allowed)
}

// A resumed TLS session carries no new certificate exchange; the identity must still come from the
// certificate verified in the original handshake, and the policy must still apply.
func TestAuthorizationOnResumedSession(t *testing.T) {
	t.Parallel()
	m := startMatrix(t)
	for _, tc := range []struct {
		identity string
		method   methodKind
		want     codes.Code
	}{
		{"gateway", methodKind{full: "/shopmesh.order.v1.OrderService/GetOrder"}, codes.OK},
		{"evil", methodKind{full: "/shopmesh.order.v1.OrderService/GetOrder"}, codes.PermissionDenied},
		{"order", methodKind{full: "/shopmesh.order.v1.OrderService/CancelOrder"}, codes.PermissionDenied},
		{"gateway", methodKind{full: "/shopmesh.order.v1.OrderService/WatchOrder", serverStreams: true}, codes.OK},
	} {
		p := m.caller(t, tc.identity)
		cfg := p.TLS().ClientConfig("order")
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		creds := credentials.NewTLS(cfg)
		before := m.count(tc.method.full)
		var resumed bool
		for attempt := range 2 {
			conn, err := grpc.NewClient(m.addrs["order"], grpc.WithTransportCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			var pr peer.Peer
			got := invoke(ctx, conn, tc.method, grpc.Peer(&pr))
			cancel()
			_ = conn.Close()
			if got != tc.want {
				t.Errorf("%s → %s (attempt %d): got %v, want %v", tc.identity, tc.method.full, attempt, got, tc.want)
			}
			if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok {
				resumed = info.State.DidResume
				if attempt == 0 && resumed {
					t.Errorf("first connection resumed a session")
				}
			}
		}
		if !resumed {
			t.Errorf("%s: second connection did not resume the TLS session", tc.identity)
		}
		wantHits := int64(0)
		if tc.want == codes.OK {
			wantHits = 2
		}
		if got := m.count(tc.method.full) - before; got != wantHits {
			t.Errorf("%s → %s: handler ran %d times, want %d", tc.identity, tc.method.full, got, wantHits)
		}
	}
}

func TestTLSServerRefusesPlaintextAndHealthIsOpen(t *testing.T) {
	t.Parallel()
	m := startMatrix(t)
	conn, err := grpc.NewClient(m.addrs["order"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if got := invoke(ctx, conn, methodKind{full: "/shopmesh.order.v1.OrderService/GetOrder"}); got != codes.Unavailable {
		t.Errorf("plaintext call: got %v, want UNAVAILABLE", got)
	}
	if n := m.count("/shopmesh.order.v1.OrderService/GetOrder"); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
	// Any valid identity may check health, even one no policy rule names.
	hc, err := m.caller(t, "evil").Dial("payment")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := healthgrpc.NewHealthClient(hc).Check(t.Context(), &healthgrpc.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Errorf("health over mTLS: %v %v", resp, err)
	}
}

func TestClientChecksServerIdentity(t *testing.T) {
	t.Parallel()
	m := startMatrix(t)
	cfg := tlsConfig("gateway", m.dir)
	// The "order" target points at the payment server: its certificate says payment, not order.
	cfg.Targets["order"] = config.Target{Addresses: []string{m.addrs["payment"]}}
	conn, err := newPlatform(t, cfg).Dial("order")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if got := invoke(ctx, conn, methodKind{full: "/shopmesh.payment.v1.PaymentService/GetAccount"}); got != codes.Unavailable {
		t.Errorf("call to an impostor: got %v, want UNAVAILABLE", got)
	}
	if n := m.count("/shopmesh.payment.v1.PaymentService/GetAccount"); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestNewRefusesCertificateOfAnotherService(t *testing.T) {
	t.Parallel()
	dir := certDir(t, testCA(t, "ca"), "payment")
	cfg := tlsConfig("order", dir)
	cfg.TLS.CertFile = filepath.Join(dir, "payment.pem")
	cfg.TLS.KeyFile = filepath.Join(dir, "payment-key.pem")
	if _, err := platform.New(t.Context(), cfg, quiet()); err == nil || !strings.Contains(err.Error(), `for service "payment"`) {
		t.Errorf("got %v", err)
	}
	bad := tlsConfig("order", dir) // order.pem does not exist
	if _, err := platform.New(t.Context(), bad, quiet()); err == nil {
		t.Error("missing certificate accepted")
	}
	policy := tlsConfig("payment", dir)
	policy.AuthzPolicyFile = filepath.Join(dir, "policy.yaml")
	writeFile(t, policy.AuthzPolicyFile, []byte("methods:\n  /a.B/C: [spiffe://elsewhere/x]\n"))
	if _, err := platform.New(t.Context(), policy, quiet()); err == nil {
		t.Error("bad policy accepted")
	}
}

// A policy file replaces the service's rules entirely: the caller the rules allow is refused, the one
// the file names is let in.
func TestPolicyFileOverridesRules(t *testing.T) {
	t.Parallel()
	dir := certDir(t, testCA(t, "ca"), "order", "payment", "gateway")
	policyFile := filepath.Join(dir, "policy.yaml")
	writeFile(t, policyFile, []byte("methods:\n  /grpc.testing.TestService/UnaryCall: [spiffe://shopmesh.local/order]\n"))
	echo := &testserver.Echo{}
	scfg := tlsConfig("payment", dir)
	scfg.AuthzPolicyFile = policyFile
	srv := echoServer(t, scfg, echo, platform.WithPolicy(authz.Rules{"/grpc.testing.TestService/*": {authz.Edge}}))
	for _, tc := range []struct {
		caller string
		want   codes.Code
	}{{"order", codes.OK}, {"payment", codes.PermissionDenied}, {"gateway", codes.PermissionDenied}} {
		cfg := tlsConfig(tc.caller, dir)
		cfg.Targets["payment"] = config.Target{Addresses: []string{srv.addr}}
		conn, err := newPlatform(t, cfg).Dial("payment")
		if err != nil {
			t.Fatal(err)
		}
		_, err = testgrpc.NewTestServiceClient(conn).UnaryCall(t.Context(), &testgrpc.SimpleRequest{})
		if status.Code(err) != tc.want {
			t.Errorf("%s: got %v, want %v", tc.caller, err, tc.want)
		}
	}
	if n := echo.Calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

// Over TLS a server without a policy (neither WithPolicy nor a file) refuses every call but health
// checks: deny by default. New accepts it, since a process that only dials needs no policy.
func TestTLSServerWithoutPolicyRefusesCalls(t *testing.T) {
	t.Parallel()
	dir := certDir(t, testCA(t, "ca"), "order", "gateway")
	echo := &testserver.Echo{}
	srv := echoServer(t, tlsConfig("order", dir), echo)
	cfg := tlsConfig("gateway", dir)
	cfg.Targets["order"] = config.Target{Addresses: []string{srv.addr}}
	conn, err := newPlatform(t, cfg).Dial("order")
	if err != nil {
		t.Fatal(err)
	}
	_, err = testgrpc.NewTestServiceClient(conn).UnaryCall(t.Context(), &testgrpc.SimpleRequest{})
	// The caller is not told why (the log says the server has no policy).
	if status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != "permission denied" {
		t.Errorf("call: %v, want PERMISSION_DENIED saying only \"permission denied\"", err)
	}
	stream, err := testgrpc.NewTestServiceClient(conn).FullDuplexCall(t.Context())
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("stream: %v, want PERMISSION_DENIED", err)
	}
	if n := echo.Calls.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
	resp, err := healthgrpc.NewHealthClient(conn).Check(t.Context(), &healthgrpc.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Errorf("health: %v %v", resp, err)
	}
}

// Rules are checked at New, with TLS on or off, so a bad rule fails in dev too.
func TestNewRefusesBadRules(t *testing.T) {
	t.Parallel()
	dir := certDir(t, testCA(t, "ca"), "order")
	for _, cfg := range []config.Config{testConfig("order"), tlsConfig("order", dir)} {
		for _, rules := range []authz.Rules{
			{"/a.B/C": {"Gateway"}},
			{"a.B/C": {authz.Edge}},
			{},
		} {
			_, err := platform.New(t.Context(), cfg, quiet(), platform.WithPolicy(rules))
			if err == nil || !strings.Contains(err.Error(), "platform.WithPolicy") {
				t.Errorf("tls=%v rules %v: got %v", cfg.TLS.Enabled(), rules, err)
			}
		}
	}
	withFile := tlsConfig("order", dir)
	withFile.AuthzPolicyFile = filepath.Join(dir, "policy.yaml")
	writeFile(t, withFile.AuthzPolicyFile, []byte("methods:\n  /a.B/C: [spiffe://shopmesh.local/x]\n"))
	if _, err := platform.New(t.Context(), withFile, quiet(), platform.WithPolicy(authz.Rules{"/a.B/C": {"X"}})); err == nil {
		t.Error("bad rules accepted beside a policy file")
	}
	bad := testConfig("order")
	bad.AuthzEdge = "Not A Service"
	if _, err := platform.New(t.Context(), bad, quiet()); err == nil || !strings.Contains(err.Error(), "authz_edge") {
		t.Errorf("bad edge: %v", err)
	}
}

// The order service trusts x-customer-id only from the configured edge (the gateway by default); over
// plaintext (TLS off, dev/test) from anyone.
func TestCustomerFromMetadata(t *testing.T) {
	t.Parallel()
	customerEcho := &testserver.Echo{Unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		c, err := authz.CustomerFrom(ctx)
		if err != nil {
			return nil, err
		}
		return &testgrpc.SimpleResponse{Username: c}, nil
	}}
	dir := certDir(t, testCA(t, "ca"), "order", "gateway", "inventory", "bff")
	register := func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, customerEcho) }
	tlsSrv := serve(t, newPlatform(t, tlsConfig("order", dir)), register, platform.WithAuthorizer(authz.AllowAll{}))
	plainSrv := serve(t, newPlatform(t, testConfig("order")), register)
	bffCfg := tlsConfig("order", dir)
	if err := config.FromEnv(&bffCfg, "ORDER", func(k string) (string, bool) { return "bff", k == "ORDER_AUTHZ_EDGE" }); err != nil {
		t.Fatal(err)
	}
	bffSrv := serve(t, newPlatform(t, bffCfg), register, platform.WithAuthorizer(authz.AllowAll{}))

	call := func(caller, addr string, tlsOn bool, customers ...string) (string, codes.Code) {
		cfg := testConfig(caller)
		if tlsOn {
			cfg = tlsConfig(caller, dir)
		}
		cfg.Targets["order"] = config.Target{Addresses: []string{addr}}
		conn, err := newPlatform(t, cfg).Dial("order")
		if err != nil {
			t.Fatal(err)
		}
		kv := make([]string, 0, 2*len(customers))
		for _, c := range customers {
			kv = append(kv, authz.CustomerHeader, c)
		}
		ctx := metadata.AppendToOutgoingContext(t.Context(), kv...)
		resp, err := testgrpc.NewTestServiceClient(conn).UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return resp.GetUsername(), status.Code(err)
	}
	for _, tc := range []struct {
		name      string
		caller    string
		addr      string
		tls       bool
		customers []string
		want      string
		code      codes.Code
	}{
		{"gateway with customer", "gateway", tlsSrv.addr, true, []string{"cust-1"}, "cust-1", codes.OK},
		{"gateway without customer", "gateway", tlsSrv.addr, true, nil, "", codes.OK},
		{"inventory claims a customer", "inventory", tlsSrv.addr, true, []string{"cust-1"}, "", codes.PermissionDenied},
		{"two customers", "gateway", tlsSrv.addr, true, []string{"a", "b"}, "", codes.PermissionDenied},
		{"plaintext in test", "inventory", plainSrv.addr, false, []string{"cust-2"}, "cust-2", codes.OK},
		{"configured edge with customer", "bff", bffSrv.addr, true, []string{"cust-3"}, "cust-3", codes.OK},
		{"gateway when the edge is bff", "gateway", bffSrv.addr, true, []string{"cust-3"}, "", codes.PermissionDenied},
		{"gateway without customer when the edge is bff", "gateway", bffSrv.addr, true, nil, "", codes.OK},
	} {
		got, code := call(tc.caller, tc.addr, tc.tls, tc.customers...)
		if got != tc.want || code != tc.code {
			t.Errorf("%s: got %q %v, want %q %v", tc.name, got, code, tc.want, tc.code)
		}
	}
}
