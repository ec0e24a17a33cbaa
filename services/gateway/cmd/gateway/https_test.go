package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/gateway/internal/fakes"
)

// testCert is a self-signed serving certificate for 127.0.0.1.
type testCert struct {
	certPEM, keyPEM []byte
	leaf            *x509.Certificate
}

func newTestCert(t *testing.T, name string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		leaf:    leaf,
	}
}

// writeAtomically replaces path's content in one rename, as a certificate manager does.
func writeAtomically(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// presented is the serial of the certificate the gateway presents to a new connection.
func presented(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestHTTPS starts the gateway with GATEWAY_HTTPS_CERT_FILE/KEY_FILE: the API is served over HTTPS
// (HTTP/2 through ALPN) to a client trusting the certificate; TLS 1.1 and plain HTTP are refused; a
// client stalling its handshake is disconnected; a replaced certificate is presented to new connections without a restart; a broken replacement is
// logged and ignored, the previous certificate still presented. `gateway healthcheck` checks it.
func TestHTTPS(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "api.pem"), filepath.Join(dir, "api-key.pem")
	first, second, third := newTestCert(t, "first"), newTestCert(t, "second"), newTestCert(t, "third")
	writeAtomically(t, certFile, first.certPEM)
	writeAtomically(t, keyFile, first.keyPEM)
	b := fakes.Start(t)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	env := map[string]string{
		"GATEWAY_PROFILE":                     "test",
		"GATEWAY_JWT_SECRET":                  strings.Repeat("k", 40),
		"GATEWAY_HTTP_ADDR":                   "127.0.0.1:0",
		"GATEWAY_ADMIN_ADDR":                  "127.0.0.1:0",
		"GATEWAY_HTTPS_CERT_FILE":             certFile,
		"GATEWAY_HTTPS_KEY_FILE":              keyFile,
		"GATEWAY_TLS_RELOAD_INTERVAL":         "100ms",
		"GATEWAY_READ_HEADER_TIMEOUT":         "1s",
		"GATEWAY_TARGETS_ORDER_ADDRESSES":     b.Addrs["order"],
		"GATEWAY_TARGETS_INVENTORY_ADDRESSES": b.Addrs["inventory"],
		"GATEWAY_TARGETS_PAYMENT_ADDRESSES":   b.Addrs["payment"],
	}
	gw := startGateway(runCtx, t, env)
	checkHealth(ctx, t, env, gw.addr) // the healthcheck subcommand speaks HTTPS too

	// Served over HTTPS, HTTP/2 negotiated.
	roots := x509.NewCertPool()
	roots.AddCert(first.leaf)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true,
	}}
	resp, err := client.Get("https://" + gw.addr + "/v1/products")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("GET /v1/products over HTTPS: %s %s %s", resp.Proto, resp.Status, body)
	}

	// TLS 1.1 is refused.
	if c, err := tls.Dial("tcp", gw.addr, &tls.Config{MaxVersion: tls.VersionTLS11, RootCAs: roots}); err == nil {
		_ = c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}

	// Plain HTTP on the HTTPS port never reaches the API (Go answers 400 and closes).
	resp, err = (&http.Client{Timeout: 10 * time.Second}).Get("http://" + gw.addr + "/v1/products")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK || resp.Header.Get("X-Request-Id") != "" {
			t.Fatalf("plain HTTP reached the API: %s %s", resp.Status, body)
		}
		t.Logf("plain HTTP: %s %q", resp.Status, strings.TrimSpace(string(body)))
	}

	// A client that never finishes its handshake is disconnected (the handshake is bounded by the
	// read timeouts): a read ends, bounded at 15 s, no duration asserted.
	raw, err := net.DialTimeout("tcp", gw.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte{0x16, 0x03, 0x01}) // the start of a ClientHello record, never finished
	_ = raw.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a stalled TLS handshake was kept open for 15 s")
	}
	_ = raw.Close()

	// Replaced: new connections get the new certificate (key written first, then the certificate: the
	// half-replaced pair in between is ignored).
	writeAtomically(t, keyFile, second.keyPEM)
	writeAtomically(t, certFile, second.certPEM)
	want := second.leaf.SerialNumber.String()
	waitUntil(t, "the replaced certificate to be presented", func() bool { return presented(t, gw.addr) == want })

	// A broken replacement (a certificate without its key) is logged and ignored.
	const ignored = "https reload ignored, keeping previous certificate"
	before := gw.count(ignored)
	writeAtomically(t, certFile, third.certPEM)
	waitUntil(t, "the broken replacement to be logged", func() bool { return gw.count(ignored) > before })
	if got := presented(t, gw.addr); got != want {
		t.Fatalf("after a broken replacement the gateway presents %s, want the previous %s", got, want)
	}
	stop()
	if err := <-gw.done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// count is the number of log lines with this msg so far.
func (g *gatewayRun) count(msg string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, m := range g.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// waitUntil polls cond for up to 30 s (a loaded machine; no duration is asserted).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 600 {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
