package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

var services = []string{"order", "inventory", "payment", "gateway"}

func opts(dir string, now time.Time) options {
	return options{dir: dir, services: services, ttl: 720 * time.Hour, caTTL: 8760 * time.Hour, now: now}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRunIssuesLoadableCertificates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var out bytes.Buffer
	err := run(context.Background(), []string{"-out", dir, "-services", "order, inventory,payment,gateway", "-ttl", "1h"}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "issued CA") || !strings.Contains(out.String(), "issued payment") {
		t.Fatalf("output %q", out.String())
	}
	for _, svc := range services {
		for name, want := range map[string]os.FileMode{svc + "-key.pem": 0o600, svc + ".pem": 0o644} {
			st, err := os.Stat(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != want {
				t.Errorf("%s mode %v, want %v", name, st.Mode().Perm(), want)
			}
		}
		src, err := mtls.Load(mtls.Config{
			CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, svc+".pem"), KeyFile: filepath.Join(dir, svc+"-key.pem"),
		})
		if err != nil {
			t.Fatalf("%s: %v", svc, err)
		}
		leaf := src.Certificate()
		if src.Service() != svc {
			t.Errorf("identity %q, want %q", src.Service(), svc)
		}
		if !slices.Contains(leaf.DNSNames, "localhost") || !slices.Contains(leaf.DNSNames, svc) ||
			len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
			t.Errorf("%s SANs: %v %v", svc, leaf.DNSNames, leaf.IPAddresses)
		}
		if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
			t.Errorf("%s EKU %v", svc, leaf.ExtKeyUsage)
		}
		if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s key is not P-256", svc)
		}
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life > time.Hour+10*time.Minute {
			t.Errorf("%s lifetime %v", svc, life)
		}
		src.Close()
	}
	handshake(t, dir, "order", "inventory")
}

// handshake runs a real mTLS handshake over loopback between two issued services.
func handshake(t *testing.T, dir, client, server string) {
	t.Helper()
	load := func(svc string) *mtls.Source {
		s, err := mtls.Load(mtls.Config{
			CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, svc+".pem"), KeyFile: filepath.Join(dir, svc+"-key.pem"),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	srv, cli := load(server), load(client)
	lis, err := tls.Listen("tcp", "127.0.0.1:0", srv.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err == nil {
			err = c.(*tls.Conn).Handshake()
			c.Close()
		}
		errc <- err
	}()
	c, err := tls.Dial("tcp", lis.Addr().String(), cli.ClientConfig(server))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
}

func TestRerunKeepsValidFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	if _, err := generate(opts(dir, now)); err != nil {
		t.Fatal(err)
	}
	ca, leaf := read(t, filepath.Join(dir, "ca.pem")), read(t, filepath.Join(dir, "order.pem"))

	res, err := generate(opts(dir, now.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if res.caIssued || len(res.issued) != 0 || len(res.kept) != len(services) {
		t.Fatalf("rerun: %+v", res)
	}
	if !bytes.Equal(ca, read(t, filepath.Join(dir, "ca.pem"))) || !bytes.Equal(leaf, read(t, filepath.Join(dir, "order.pem"))) {
		t.Fatal("rerun rewrote valid files")
	}

	// A missing or broken leaf is reissued alone.
	if err := os.WriteFile(filepath.Join(dir, "payment-key.pem"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err = generate(opts(dir, now))
	if err != nil {
		t.Fatal(err)
	}
	if res.caIssued || !slices.Equal(res.issued, []string{"payment"}) {
		t.Fatalf("repair: %+v", res)
	}
	handshake(t, dir, "payment", "order")
}

func TestRenewReissuesLeavesKeepsCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	if _, err := generate(opts(dir, now)); err != nil {
		t.Fatal(err)
	}
	ca, leaf := read(t, filepath.Join(dir, "ca.pem")), read(t, filepath.Join(dir, "order.pem"))
	o := opts(dir, now)
	o.renew = true
	res, err := generate(o)
	if err != nil {
		t.Fatal(err)
	}
	if res.caIssued || len(res.issued) != len(services) {
		t.Fatalf("renew: %+v", res)
	}
	if !bytes.Equal(ca, read(t, filepath.Join(dir, "ca.pem"))) || bytes.Equal(leaf, read(t, filepath.Join(dir, "order.pem"))) {
		t.Fatal("renew must keep the CA and replace leaves")
	}
	handshake(t, dir, "gateway", "order")
}

func TestExpiredLeafAndCAAreReissued(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	if _, err := generate(opts(dir, now)); err != nil {
		t.Fatal(err)
	}
	// 800h later the 720h leaves have expired; the CA still covers a new leaf.
	res, err := generate(opts(dir, now.Add(800*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if res.caIssued || len(res.issued) != len(services) {
		t.Fatalf("after leaf expiry: %+v", res)
	}
	// Near the CA's end it cannot cover a 720h leaf: new CA, new leaves.
	res, err = generate(opts(dir, now.Add(8760*time.Hour-100*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if !res.caIssued || len(res.issued) != len(services) {
		t.Fatalf("near CA expiry: %+v", res)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"-services", "order"},
		{"-out", dir},
		{"-out", dir, "-services", "Order!"},
		{"-out", dir, "-services", "order", "-ttl", "0s"},
		{"-out", dir, "-services", "order", "-ttl", "10h", "-ca-ttl", "1h"},
		{"-bogus"},
	} {
		if err := run(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

// tryHandshake runs an mTLS handshake between a client and a server given by their file paths.
func tryHandshake(t *testing.T, client, server mtls.Config) error {
	t.Helper()
	srv, err := mtls.Load(server)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli, err := mtls.Load(client)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", srv.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err == nil {
			err = c.(*tls.Conn).Handshake()
			c.Close()
		}
		errc <- err
	}()
	c, cerr := tls.Dial("tcp", lis.Addr().String(), cli.ClientConfig(srv.Service()))
	if cerr == nil {
		c.Close()
	}
	serr := <-errc
	if cerr != nil {
		return cerr
	}
	return serr
}

func files(dir, svc string) mtls.Config {
	return mtls.Config{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, svc+".pem"), KeyFile: filepath.Join(dir, svc+"-key.pem")}
}

func countCerts(t *testing.T, path string) int {
	t.Helper()
	return strings.Count(string(read(t, path)), "BEGIN CERTIFICATE")
}

// A CA rotation keeps the old CA in the bundle until -drop-old-cas: a process still holding a leaf
// of the old CA is accepted during the rotation and refused after it.
func TestRotateCAKeepsOldCAInBundleUntilDropped(t *testing.T) {
	t.Parallel()
	dir, oldDir := t.TempDir(), t.TempDir()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-out", dir, "-services", "order,gateway"}, &out); err != nil {
		t.Fatal(err)
	}
	oldCA := read(t, filepath.Join(dir, "ca.pem"))
	for _, f := range []string{"gateway.pem", "gateway-key.pem"} {
		if err := os.WriteFile(filepath.Join(oldDir, f), read(t, filepath.Join(dir, f)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	oldGateway := files(oldDir, "gateway")
	oldGateway.CAFile = filepath.Join(dir, "ca.pem") // the old process reloads the shared bundle

	out.Reset()
	if err := run(context.Background(), []string{"-out", dir, "-services", "order,gateway", "-rotate-ca"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "issued CA") || !strings.Contains(out.String(), "bundle holds 2 CA(s)") {
		t.Errorf("rotate output %q", out.String())
	}
	bundle := read(t, filepath.Join(dir, "ca.pem"))
	if countCerts(t, filepath.Join(dir, "ca.pem")) != 2 || !bytes.HasSuffix(bundle, oldCA) || bytes.HasPrefix(bundle, oldCA) {
		t.Fatal("ca.pem must hold the new CA first, then the old one")
	}
	if err := tryHandshake(t, files(dir, "gateway"), files(dir, "order")); err != nil {
		t.Errorf("new leaves: %v", err)
	}
	if err := tryHandshake(t, oldGateway, files(dir, "order")); err != nil {
		t.Errorf("old leaf during rotation: %v", err)
	}

	// A rerun keeps the two-CA bundle and the new leaves.
	out.Reset()
	if err := run(context.Background(), []string{"-out", dir, "-services", "order,gateway"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "kept CA") || !strings.Contains(out.String(), "kept order") || countCerts(t, filepath.Join(dir, "ca.pem")) != 2 {
		t.Errorf("rerun output %q", out.String())
	}

	out.Reset()
	if err := run(context.Background(), []string{"-out", dir, "-services", "order,gateway", "-drop-old-cas"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "dropped 1 old CA(s)") || countCerts(t, filepath.Join(dir, "ca.pem")) != 1 {
		t.Errorf("drop output %q", out.String())
	}
	if err := tryHandshake(t, files(dir, "gateway"), files(dir, "order")); err != nil {
		t.Errorf("new leaves after drop: %v", err)
	}
	if err := tryHandshake(t, oldGateway, files(dir, "order")); err == nil {
		t.Error("a leaf of the dropped CA was accepted")
	}
	if err := run(context.Background(), []string{"-out", dir, "-services", "order", "-rotate-ca", "-drop-old-cas"}, &out); err == nil {
		t.Error("-rotate-ca with -drop-old-cas accepted")
	}
}
