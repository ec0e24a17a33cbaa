package security

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// jwksGateway is a second gateway process (the stack's binary) in the prod profile as it would run in
// production: HTTPS on its API port (GATEWAY_HTTPS_CERT_FILE/_KEY_FILE, a certificate of its own CA),
// tokens verified with an ES256 public key from a JWKS file (GATEWAY_JWT_JWKS_FILE), the stack's
// backends over mTLS with the gateway's identity.
type jwksGateway struct {
	url    string // https://127.0.0.1:port
	addr   string
	key    *ecdsa.PrivateKey // the identity provider's signing key (kid "es1"); the gateway has the public half
	jwks   []byte
	pubPEM []byte
	roots  *x509.CertPool
}

func startJWKSGateway(t *testing.T) *jwksGateway {
	t.Helper()
	f := stack(t)
	dir := t.TempDir()
	g := &jwksGateway{}
	var err error
	if g.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	pt, err := g.key.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	g.jwks, _ = json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "EC", "crv": "P-256", "kid": "es1", "use": "sig", "alg": "ES256",
		"x": enc.EncodeToString(pt[1:33]), "y": enc.EncodeToString(pt[33:]),
	}}})
	der, err := x509.MarshalPKIXPublicKey(&g.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	g.pubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	// The API port's certificate, from a CA of its own (a public CA in production).
	ca, err := mtls.NewCA("shopmesh security suite edge CA", time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(localstack.Gateway, time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	g.roots = x509.NewCertPool()
	g.roots.AddCert(ca.Cert)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = ln.Addr().String()
	_ = ln.Close()
	g.url = "https://" + g.addr
	mt := localstack.CertFiles(f.info.CertsDir, localstack.Gateway)
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"GATEWAY_PROFILE=prod",
		"GATEWAY_HTTP_ADDR=" + g.addr,
		"GATEWAY_HTTPS_CERT_FILE=" + write("https.pem", certPEM),
		"GATEWAY_HTTPS_KEY_FILE=" + write("https-key.pem", keyPEM),
		"GATEWAY_JWT_JWKS_FILE=" + write("jwks.json", g.jwks),
		"GATEWAY_TLS_CA_FILE=" + mt.CAFile, "GATEWAY_TLS_CERT_FILE=" + mt.CertFile, "GATEWAY_TLS_KEY_FILE=" + mt.KeyFile,
	}
	for _, svc := range []string{localstack.Order, localstack.Inventory, localstack.Payment} {
		var addrs []string
		for _, i := range f.info.Instances {
			if i.Service == svc {
				addrs = append(addrs, i.GRPCAddr)
			}
		}
		env = append(env, "GATEWAY_TARGETS_"+strings.ToUpper(svc)+"_ADDRESSES="+strings.Join(addrs, ","))
	}
	logFile, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(f.binary(localstack.Gateway))
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = logFile.Close()
	})
	// Ready: GET /readyz over HTTPS, verifying the certificate.
	hc := g.client(80)
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _, err := doCT(hc, http.MethodGet, g.url+"/readyz", "", "", nil)
		if err == nil && code == http.StatusOK {
			return g
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(logFile.Name())
			t.Fatalf("the HTTPS gateway exited during start-up (%v):\n%s", err, out)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logFile.Name())
			t.Fatalf("the HTTPS gateway is not ready (%d %v):\n%s", code, err, out)
		}
	}
}

// client is an HTTPS client trusting the gateway's CA, from 127.0.0.<host>.
func (g *jwksGateway) client(host byte) *http.Client {
	c := client(host)
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: g.roots, MinVersion: tls.VersionTLS12}
	return c
}

// es256 signs claims with key under kid (ES256: r || s, 32 bytes each).
func es256(t *testing.T, key *ecdsa.PrivateKey, kid string, c map[string]any) string {
	t.Helper()
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": kid})
	b, _ := json.Marshal(c)
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(b)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig)
}

// TestJWKSGatewayOverHTTPS: the attacks that need the production shape of the edge.
func TestJWKSGatewayOverHTTPS(t *testing.T) {
	g := startJWKSGateway(t)
	url := g.url + "/v1/accounts/me"
	pt, _ := g.key.PublicKey.Bytes()
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		tok  func() string
	}{
		// The algorithm confusion: an HS256 token whose HMAC key is the public key, in each form an
		// attacker may guess the verifier feeds to HMAC.
		{"JWT HS256 signed with the ES256 public key (PEM)", func() string { return jwtSpec{"HS256", "es1", g.pubPEM, claims(nil)}.String() }},
		{"JWT HS256 signed with the ES256 public key (JWKS document)", func() string { return jwtSpec{"HS256", "es1", g.jwks, claims(nil)}.String() }},
		{"JWT HS256 signed with the ES256 public key (raw point)", func() string { return jwtSpec{"HS256", "es1", pt, claims(nil)}.String() }},
		{"JWT ES256 signed by another EC key", func() string { return es256(t, other, "es1", claims(nil)) }},
		{"JWT ES256 with an unknown kid", func() string { return es256(t, g.key, "es9", claims(nil)) }},
		{"JWT ES256 expired", func() string {
			return es256(t, g.key, "es1", claims(func(c map[string]any) {
				c["iat"], c["exp"] = time.Now().Add(-time.Hour).Unix(), time.Now().Add(-10*time.Minute).Unix()
			}))
		}},
		{"JWT alg:none at the JWKS gateway", func() string { return jwtSpec{"none", "es1", nil, claims(nil)}.String() }},
	}
	for i, tc := range cases {
		a := attack(t, tc.name, "401")
		c := g.client(byte(100 + i))
		for range httpTries {
			a.try(func() (bool, error) {
				code, _, err := do(c, http.MethodGet, url, tc.tok(), nil)
				if err != nil {
					return false, err
				}
				a.saw(fmt.Sprint(code))
				return code != http.StatusUnauthorized, nil
			})
		}
	}
	// The control: the identity provider's own ES256 token is accepted.
	if code, body, err := do(g.client(99), http.MethodGet, url, es256(t, g.key, "es1", claims(nil)), nil); err != nil ||
		code == http.StatusUnauthorized || code == http.StatusTooManyRequests {
		t.Fatalf("control: a valid ES256 token: %d %s %v", code, body, err)
	}

	// Plain HTTP to the HTTPS port: not served (Go's TLS server answers a fixed 400, or closes).
	a := attack(t, "HTTP in plaintext to the HTTPS API port", "not served (400 from the TLS layer / closed)")
	c := client(120)
	for range httpTries {
		a.try(func() (bool, error) {
			code, body, err := do(c, http.MethodGet, "http://"+g.addr+"/v1/products", "", nil)
			if err != nil {
				a.saw("connection closed")
				return false, nil //nolint:nilerr // a closed connection is the refusal
			}
			a.saw(fmt.Sprint(code))
			return code != http.StatusBadRequest || strings.Contains(body, "products"), nil
		})
	}

	// A TCP connection that never starts its TLS handshake: the server must drop it.
	a = attack(t, "HTTPS: TCP connection that never sends a TLS ClientHello", "connection closed by the server")
	done := make(chan struct{})
	for i := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			a.try(func() (bool, error) {
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(130+i))}, Timeout: 5 * time.Second}
				conn, err := d.Dial("tcp", g.addr)
				if err != nil {
					return false, err
				}
				defer func() { _ = conn.Close() }()
				_ = conn.SetReadDeadline(time.Now().Add(slowBound))
				_, err = io.Copy(io.Discard, conn)
				if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
					a.saw("still open")
					return true, nil
				}
				a.saw("closed")
				return false, nil
			})
		}()
	}
	for range 8 {
		<-done
	}
}
