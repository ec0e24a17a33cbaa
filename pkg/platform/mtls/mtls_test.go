package mtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// files is one service's PEM files on disk.
type files struct{ ca, cert, key string }

func newCA(t *testing.T) *mtls.CA {
	t.Helper()
	ca, err := mtls.NewCA("shopmesh test CA", time.Now().Add(-time.Hour), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := mtls.WriteFileAtomic(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func issue(t *testing.T, ca *mtls.CA, svc string) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, err := ca.Issue(svc, time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

// writeService issues a leaf for svc from ca and writes it with bundle as the CA file.
func writeService(t *testing.T, dir string, ca *mtls.CA, svc string, bundle []byte) files {
	t.Helper()
	f := files{ca: filepath.Join(dir, svc+"-ca.pem"), cert: filepath.Join(dir, svc+".pem"), key: filepath.Join(dir, svc+"-key.pem")}
	c, k := issue(t, ca, svc)
	write(t, f.ca, bundle)
	write(t, f.key, k)
	write(t, f.cert, c)
	return f
}

func load(t *testing.T, f files, reload time.Duration) *mtls.Source {
	t.Helper()
	src, err := mtls.Load(mtls.Config{CAFile: f.ca, CertFile: f.cert, KeyFile: f.key, Reload: reload})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// server is a loopback gRPC health server that counts handler runs and
// records the caller identity it saw.
type server struct {
	addr  string
	calls atomic.Int64
	mu    sync.Mutex
	seen  []string
}

func (s *server) callers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func startServer(t *testing.T, creds credentials.TransportCredentials) *server {
	t.Helper()
	s := &server{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			s.calls.Add(1)
			svc, ok := mtls.PeerIdentity(ctx)
			if !ok {
				svc = "<none>"
			}
			s.mu.Lock()
			s.seen = append(s.seen, svc)
			s.mu.Unlock()
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(lis) //nolint:errcheck // returns when stopped
	t.Cleanup(gs.Stop)
	s.addr = lis.Addr().String()
	return s
}

// check makes one health RPC on a fresh connection (so a fresh handshake)
// and returns the server's leaf as the client saw it.
func check(t *testing.T, addr string, creds credentials.TransportCredentials) (*x509.Certificate, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		t.Fatalf("no TLS peer info: %#v", p.AuthInfo)
	}
	return info.State.PeerCertificates[0], nil
}

func mustOK(t *testing.T, addr string, creds credentials.TransportCredentials) *x509.Certificate {
	t.Helper()
	c, err := check(t, addr, creds)
	if err != nil {
		t.Fatalf("rpc: %v", err)
	}
	return c
}

// rawClient builds client credentials from arbitrary PEM, bypassing Source,
// so tests can present certificates Source would refuse to load.
func rawClient(t *testing.T, roots []byte, certPEM, keyPEM []byte) credentials.TransportCredentials {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		t.Fatal("bad roots")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "localhost"}
	if certPEM != nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(cfg)
}

func TestValidClientIsServedAndIdentified(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t)
	srvSrc := load(t, writeService(t, dir, ca, "inventory", ca.CertPEM), 0)
	cliSrc := load(t, writeService(t, dir, ca, "order", ca.CertPEM), 0)
	srv := startServer(t, srvSrc.ServerCredentials())

	leaf := mustOK(t, srv.addr, cliSrc.ClientCredentials("inventory"))
	if got := srv.callers(); len(got) != 1 || got[0] != "order" {
		t.Fatalf("server saw callers %v, want [order]", got)
	}
	if svc, err := mtls.ServiceFromCert(leaf); err != nil || svc != "inventory" {
		t.Fatalf("client saw server %q, %v", svc, err)
	}
	if srvSrc.Service() != "inventory" || cliSrc.Service() != "order" {
		t.Fatalf("Service() = %q, %q", srvSrc.Service(), cliSrc.Service())
	}
}

func TestClientRejectsWrongServerIdentity(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t)
	srvSrc := load(t, writeService(t, dir, ca, "inventory", ca.CertPEM), 0)
	cliSrc := load(t, writeService(t, dir, ca, "order", ca.CertPEM), 0)
	srv := startServer(t, srvSrc.ServerCredentials())

	if _, err := check(t, srv.addr, cliSrc.ClientCredentials("payment")); err == nil {
		t.Fatal("client accepted inventory while expecting payment")
	}
	if n := srv.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
}

func TestHandshakeRejections(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t)
	other := newCA(t)
	srvSrc := load(t, writeService(t, dir, ca, "inventory", ca.CertPEM), 0)
	srv := startServer(t, srvSrc.ServerCredentials())
	now := time.Now()

	sign := func(tmpl *x509.Certificate, by *mtls.CA) credentials.TransportCredentials {
		c, k, err := by.Sign(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		return rawClient(t, ca.CertPEM, c, k)
	}
	withURIs := func(uris ...string) *x509.Certificate {
		tmpl := mtls.LeafTemplate("order", now.Add(-time.Minute), time.Hour)
		tmpl.URIs = nil
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		}
		return tmpl
	}
	serverOnly := mtls.LeafTemplate("order", now.Add(-time.Minute), time.Hour)
	serverOnly.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}

	cases := []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"unknown CA", sign(mtls.LeafTemplate("order", now.Add(-time.Minute), time.Hour), other)},
		{"expired", sign(mtls.LeafTemplate("order", now.Add(-2*time.Hour), time.Hour), ca)},
		{"not yet valid", sign(mtls.LeafTemplate("order", now.Add(time.Hour), time.Hour), ca)},
		{"no client certificate", rawClient(t, ca.CertPEM, nil, nil)},
		{"missing SPIFFE id", sign(withURIs(), ca)},
		{"foreign trust domain", sign(withURIs("spiffe://evil.example/order"), ca)},
		{"two SPIFFE ids", sign(withURIs("spiffe://shopmesh.local/order", "spiffe://shopmesh.local/payment"), ca)},
		{"nested path", sign(withURIs("spiffe://shopmesh.local/order/admin"), ca)},
		{"not a spiffe URI", sign(withURIs("https://shopmesh.local/order"), ca)},
		{"server-auth only EKU", sign(serverOnly, ca)},
		{"plaintext", insecure.NewCredentials()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := check(t, srv.addr, tc.creds); err == nil {
				t.Fatal("handshake accepted")
			}
		})
	}
	if n := srv.calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times for rejected clients", n)
	}
	// The same server still serves a good client.
	good := sign(mtls.LeafTemplate("order", now.Add(-time.Minute), time.Hour), ca)
	mustOK(t, srv.addr, good)
	if n := srv.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}

func TestLoadRejectsIncompleteFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t)
	f := writeService(t, dir, ca, "order", ca.CertPEM)
	_, otherKey := issue(t, ca, "order")
	write(t, f.key, otherKey)
	if _, err := mtls.Load(mtls.Config{CAFile: f.ca, CertFile: f.cert, KeyFile: f.key}); err == nil {
		t.Fatal("Load accepted a mismatched pair")
	}
	if _, err := mtls.Load(mtls.Config{CAFile: f.ca, CertFile: f.cert}); err == nil {
		t.Fatal("Load accepted a config without key")
	}
}

func TestRotateLeafWithoutRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t)
	sf := writeService(t, dir, ca, "inventory", ca.CertPEM)
	srvSrc := load(t, sf, 0)
	cliSrc := load(t, writeService(t, dir, ca, "order", ca.CertPEM), 0)
	srv := startServer(t, srvSrc.ServerCredentials())
	creds := cliSrc.ClientCredentials("inventory")

	first := mustOK(t, srv.addr, creds)
	if first.SerialNumber.Cmp(srvSrc.Certificate().SerialNumber) != 0 {
		t.Fatal("client saw a serial other than the loaded one")
	}

	// Half-written pair: the new certificate lands before its key.
	newCert, newKey := issue(t, ca, "inventory")
	write(t, sf.cert, newCert)
	if err := srvSrc.Reload(); err == nil {
		t.Fatal("Reload accepted a certificate without its key")
	}
	if srvSrc.Failures() != 1 {
		t.Fatalf("Failures() = %d, want 1", srvSrc.Failures())
	}
	if got := mustOK(t, srv.addr, creds); got.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatalf("serial changed to %v while the pair was incomplete", got.SerialNumber)
	}

	// The key completes the pair.
	write(t, sf.key, newKey)
	if err := srvSrc.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	got := mustOK(t, srv.addr, creds)
	if got.SerialNumber.Cmp(first.SerialNumber) == 0 || got.SerialNumber.Cmp(srvSrc.Certificate().SerialNumber) != 0 {
		t.Fatalf("serial %v after rotation, want %v", got.SerialNumber, srvSrc.Certificate().SerialNumber)
	}
	if srvSrc.Failures() != 1 {
		t.Fatalf("Failures() = %d, want 1", srvSrc.Failures())
	}
}

func TestRotateKeyFirstAndBackgroundPoll(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t)
	sf := writeService(t, dir, ca, "inventory", ca.CertPEM)
	srvSrc := load(t, sf, 5*time.Millisecond)
	cliSrc := load(t, writeService(t, dir, ca, "order", ca.CertPEM), 0)
	srv := startServer(t, srvSrc.ServerCredentials())
	creds := cliSrc.ClientCredentials("inventory")
	old := mustOK(t, srv.addr, creds).SerialNumber

	newCert, newKey := issue(t, ca, "inventory")
	write(t, sf.key, newKey) // key first: pair mismatched until the cert lands
	waitFor(t, func() bool { return srvSrc.Failures() > 0 })
	if srvSrc.Certificate().SerialNumber.Cmp(old) != 0 {
		t.Fatal("mismatched pair was swapped in")
	}
	write(t, sf.cert, newCert)
	waitFor(t, func() bool { return srvSrc.Certificate().SerialNumber.Cmp(old) != 0 })
	if got := mustOK(t, srv.addr, creds).SerialNumber; got.Cmp(old) == 0 {
		t.Fatal("new handshake still presents the old serial")
	}
}

func TestBrokenCABundleIgnored(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := newCA(t)
	sf := writeService(t, dir, ca, "inventory", ca.CertPEM)
	srvSrc := load(t, sf, 0)
	cliSrc := load(t, writeService(t, dir, ca, "order", ca.CertPEM), 0)
	srv := startServer(t, srvSrc.ServerCredentials())

	other := newCA(t)
	bundle := append(append([]byte{}, ca.CertPEM...), other.CertPEM...)
	for _, bad := range [][]byte{bundle[:len(bundle)-40], []byte("garbage"), nil} {
		write(t, sf.ca, bad)
		if err := srvSrc.Reload(); err == nil {
			t.Fatalf("Reload accepted bundle %q", bad)
		}
	}
	mustOK(t, srv.addr, cliSrc.ClientCredentials("inventory"))
	if srvSrc.Failures() != 3 {
		t.Fatalf("Failures() = %d, want 3", srvSrc.Failures())
	}
}

func TestRotateCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldCA, newCA := newCA(t), newCA(t)
	both := append(append([]byte{}, oldCA.CertPEM...), newCA.CertPEM...)
	sf := writeService(t, dir, oldCA, "inventory", oldCA.CertPEM)
	srvSrc := load(t, sf, 0)
	srv := startServer(t, srvSrc.ServerCredentials())
	oldClient := load(t, writeService(t, dir, oldCA, "order", both), 0)
	newClient := load(t, writeService(t, dir, newCA, "payment", both), 0)

	mustOK(t, srv.addr, oldClient.ClientCredentials("inventory"))
	if _, err := check(t, srv.addr, newClient.ClientCredentials("inventory")); err == nil {
		t.Fatal("server trusted the new CA before the bundle named it")
	}

	// Step 1: the server trusts both CAs.
	write(t, sf.ca, both)
	if err := srvSrc.Reload(); err != nil {
		t.Fatal(err)
	}
	mustOK(t, srv.addr, oldClient.ClientCredentials("inventory"))
	mustOK(t, srv.addr, newClient.ClientCredentials("inventory"))

	// Step 2: the server moves to a new-CA leaf and drops the old CA.
	c, k := issue(t, newCA, "inventory")
	write(t, sf.key, k)
	write(t, sf.cert, c)
	write(t, sf.ca, newCA.CertPEM)
	if err := srvSrc.Reload(); err != nil {
		t.Fatal(err)
	}
	before := srv.calls.Load()
	if _, err := check(t, srv.addr, oldClient.ClientCredentials("inventory")); err == nil {
		t.Fatal("old-CA client accepted after the old CA was removed")
	}
	if n := srv.calls.Load(); n != before {
		t.Fatalf("handler ran for the rejected old-CA client")
	}
	mustOK(t, srv.addr, newClient.ClientCredentials("inventory"))
}

// TestResumedSessionReauthorized shows that removing a CA also locks out a
// client that resumes a session established while the CA was trusted.
func TestResumedSessionReauthorized(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	oldCA, newCA := newCA(t), newCA(t)
	both := append(append([]byte{}, oldCA.CertPEM...), newCA.CertPEM...)
	sf := writeService(t, dir, newCA, "inventory", both)
	srvSrc := load(t, sf, 0)
	srv := startServer(t, srvSrc.ServerCredentials())

	c, k := issue(t, oldCA, "order")
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(newCA.Cert)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "localhost",
		Certificates: []tls.Certificate{pair}, ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}
	var resumed atomic.Bool
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if cs.DidResume {
			resumed.Store(true)
		}
		return nil
	}
	creds := credentials.NewTLS(cfg)
	mustOK(t, srv.addr, creds)
	// A second connection while still trusted: proves tickets are resumable here.
	waitFor(t, func() bool {
		mustOK(t, srv.addr, creds)
		return resumed.Load()
	})

	write(t, sf.ca, newCA.CertPEM)
	if err := srvSrc.Reload(); err != nil {
		t.Fatal(err)
	}
	before := srv.calls.Load()
	if _, err := check(t, srv.addr, creds); err == nil {
		t.Fatal("resumed session with a removed CA was accepted")
	}
	if srv.calls.Load() != before {
		t.Fatal("handler ran for the rejected resumed client")
	}
}

func TestServiceFromCert(t *testing.T) {
	t.Parallel()
	cases := []struct {
		uris []string
		want string
		ok   bool
	}{
		{[]string{"spiffe://shopmesh.local/order"}, "order", true},
		{[]string{"spiffe://shopmesh.local/order-v2"}, "order-v2", true},
		{nil, "", false},
		{[]string{"spiffe://shopmesh.local/"}, "", false},
		{[]string{"spiffe://shopmesh.local/Order"}, "", false},
		{[]string{"spiffe://shopmesh.local:443/order"}, "", false},
		{[]string{"spiffe://shopmesh.local/order?x=1"}, "", false},
		{[]string{"spiffe://u@shopmesh.local/order"}, "", false},
		{[]string{"spiffe://shopmesh.local/a%2Fb"}, "", false},
		{[]string{"spiffe://shopmesh.local/order", "spiffe://shopmesh.local/order"}, "", false},
	}
	for _, tc := range cases {
		cert := &x509.Certificate{SerialNumber: big.NewInt(1)}
		for _, s := range tc.uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			cert.URIs = append(cert.URIs, u)
		}
		got, err := mtls.ServiceFromCert(cert)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%v: got %q, %v; want %q ok=%v", tc.uris, got, err, tc.want, tc.ok)
		}
	}
}

func TestWriteFileAtomicMode(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "k.pem")
	write(t, p, []byte("x"))
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
}

// waitFor polls cond with a bounded wait; it is not an assertion by sleeping.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPeerIdentityWithoutTLS(t *testing.T) {
	t.Parallel()
	if _, ok := mtls.PeerIdentity(context.Background()); ok {
		t.Fatal("identity without a peer")
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{}})
	if _, ok := mtls.PeerIdentity(ctx); ok {
		t.Fatal("identity without TLS")
	}
}
