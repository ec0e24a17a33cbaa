package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// own names the files of svc's per-service folder, what its container mounts.
func own(dir, svc string) mtls.Config {
	d := filepath.Join(dir, svc)
	return mtls.Config{CAFile: filepath.Join(d, "ca.pem"), CertFile: filepath.Join(d, "cert.pem"), KeyFile: filepath.Join(d, "key.pem")}
}

// -per-service: each service's folder holds exactly the bundle and its own key pair (0600 in a 0700
// folder), never the CA key or another service's key, and two services handshake with those files.
func TestPerServiceFoldersHoldOwnKeyPairOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-out", dir, "-services", "order,gateway", "-per-service"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"order", "gateway"} {
		d := filepath.Join(dir, svc)
		st, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %v, want 0700", d, st.Mode().Perm())
		}
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
			if info, err := e.Info(); err != nil || info.Mode().Perm() != 0o600 {
				t.Errorf("%s/%s: mode %v (%v), want 0600", svc, e.Name(), info.Mode().Perm(), err)
			}
		}
		if !slices.Equal(names, []string{"ca.pem", "cert.pem", "key.pem"}) {
			t.Errorf("%s holds %v, want [ca.pem cert.pem key.pem]", d, names)
		}
		if !bytes.Equal(read(t, filepath.Join(d, "key.pem")), read(t, filepath.Join(dir, svc+"-key.pem"))) ||
			!bytes.Equal(read(t, filepath.Join(d, "cert.pem")), read(t, filepath.Join(dir, svc+".pem"))) {
			t.Errorf("%s: not its own key pair", svc)
		}
	}
	if err := tryHandshake(t, own(dir, "gateway"), own(dir, "order")); err != nil {
		t.Errorf("handshake with the per-service files: %v", err)
	}
	// A rerun with nothing to renew leaves the files as they are; -renew refreshes them.
	before := read(t, filepath.Join(dir, "order", "cert.pem"))
	if err := run(context.Background(), []string{"-out", dir, "-services", "order,gateway", "-per-service", "-renew"}, &out); err != nil {
		t.Fatal(err)
	}
	if after := read(t, filepath.Join(dir, "order", "cert.pem")); bytes.Equal(before, after) ||
		!bytes.Equal(after, read(t, filepath.Join(dir, "order.pem"))) {
		t.Error("-renew did not refresh order/cert.pem from order.pem")
	}
}

// During a CA rotation with a propagation wait, the per-service folders get the two-CA bundle before
// the wait while their leaves are still the old CA's, then the new leaves after it.
func TestPerServiceRotationPublishesBundleBeforeLeaves(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := time.Now()
	o := opts(dir, now)
	o.services, o.perService = []string{"order", "gateway"}, true
	if _, err := generate(o); err != nil {
		t.Fatal(err)
	}
	oldLeaf := read(t, filepath.Join(dir, "order", "cert.pem"))
	o.rotateCA, o.propagate = true, time.Minute
	var waited bool
	o.sleep = func(time.Duration) {
		waited = true
		if n := countCerts(t, filepath.Join(dir, "order", "ca.pem")); n != 2 {
			t.Errorf("during the wait order/ca.pem holds %d CAs, want 2", n)
		}
		if !bytes.Equal(read(t, filepath.Join(dir, "order", "cert.pem")), oldLeaf) {
			t.Error("order/cert.pem changed before the bundle propagated")
		}
	}
	if _, err := generate(o); err != nil {
		t.Fatal(err)
	}
	if !waited {
		t.Fatal("no propagation wait")
	}
	if bytes.Equal(read(t, filepath.Join(dir, "order", "cert.pem")), oldLeaf) {
		t.Error("order/cert.pem still the old CA's leaf after the rotation")
	}
	if err := tryHandshake(t, own(dir, "gateway"), own(dir, "order")); err != nil {
		t.Errorf("after rotation: %v", err)
	}
}
