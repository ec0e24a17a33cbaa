package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestAuthorizationRunsInNATS: the printed block, included in a nats.conf as infra.sh does, is run by a
// real (embedded) nats-server: each service logs in with its password file and may publish on its own
// subjects only; a client without a user is refused.
func TestAuthorizationRunsInNATS(t *testing.T) {
	secrets := t.TempDir()
	for _, u := range []string{"admin", "inventory", "order"} {
		if err := os.WriteFile(filepath.Join(secrets, "nats-"+u), []byte("pw-"+u+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := run([]string{"-secrets", secrets, "-root", "../../.."}, &out); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), out.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("jetstream { store_dir: \""+filepath.ToSlash(dir)+"\" }\ninclude \"auth.conf\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })

	if nc, err := nats.Connect(s.ClientURL()); err == nil {
		nc.Close()
		t.Error("a client without a user was accepted")
	}
	denied := make(chan error, 4)
	inv, err := nats.Connect(s.ClientURL(), nats.UserInfo("inventory", "pw-inventory"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	admin, err := nats.Connect(s.ClientURL(), nats.UserInfo("admin", "pw-admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	sub, err := admin.SubscribeSync("shopmesh.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = inv.Publish("shopmesh.order.status.o1", []byte("forged"))
	_ = inv.Publish("shopmesh.stock.sku1", []byte("own"))
	if err := inv.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(10 * time.Second); err != nil || m.Subject != "shopmesh.stock.sku1" {
		t.Fatalf("admin received %v, %v; want inventory's own subject only", m, err)
	}
	select {
	case err := <-denied:
		if !strings.Contains(err.Error(), `Permissions Violation for Publish to "shopmesh.order.status.o1"`) {
			t.Errorf("error %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the server did not refuse inventory's publish on order's subject")
	}
}

func TestMissingPassword(t *testing.T) {
	if err := run([]string{"-secrets", t.TempDir(), "-root", "../../.."}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "password of admin") {
		t.Errorf("err = %v, want the missing admin password named", err)
	}
}
