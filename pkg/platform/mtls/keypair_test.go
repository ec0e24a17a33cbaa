package mtls_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// servingPair writes a self-signed serving certificate for 127.0.0.1 and returns its PEM and serial.
func servingPair(t *testing.T) (certPEM, keyPEM []byte, serial *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ = rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "api.example"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), serial
}

// A KeyPair serves its certificate over a real TLS listener; a replaced pair is presented to the next
// connection after Reload; a half-written or mismatched pair is refused, logged and counted, and the
// previous certificate is still presented; TLS 1.1 is refused.
func TestKeyPairReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	write := func(name string, b []byte) {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c1, k1, s1 := servingPair(t)
	write(certFile, c1)
	write(keyFile, k1)
	var logs bytes.Buffer
	kp, err := mtls.LoadKeyPair(mtls.KeyPairConfig{CertFile: certFile, KeyFile: keyFile, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer kp.Close()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", kp.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); _ = c.Close() }()
		}
	}()
	presented := func() *big.Int {
		t.Helper()
		c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber
	}
	if got := presented(); got.Cmp(s1) != 0 {
		t.Fatalf("presented %v, want %v", got, s1)
	}

	c2, k2, s2 := servingPair(t)
	write(certFile, c2) // the key is still the old one: a mismatched pair
	if err := kp.Reload(); err == nil || kp.Failures() != 1 {
		t.Fatalf("a mismatched pair: Reload %v, failures %d", err, kp.Failures())
	}
	write(keyFile, k2[:len(k2)/2]) // half-written
	if err := kp.Reload(); err == nil || kp.Failures() != 2 {
		t.Fatalf("a half-written key: Reload %v, failures %d", err, kp.Failures())
	}
	if got := presented(); got.Cmp(s1) != 0 {
		t.Fatalf("after refused pairs: presented %v, want the previous %v", got, s1)
	}
	if !strings.Contains(logs.String(), "https reload ignored, keeping previous certificate") {
		t.Fatalf("refusals not logged:\n%s", logs.String())
	}
	write(keyFile, k2)
	if err := kp.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := presented(); got.Cmp(s2) != 0 {
		t.Fatalf("after the replacement: presented %v, want %v", got, s2)
	}
	if c, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		_ = c.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
	if _, err := mtls.LoadKeyPair(mtls.KeyPairConfig{CertFile: certFile, KeyFile: filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("LoadKeyPair with a missing key succeeded")
	}
}
