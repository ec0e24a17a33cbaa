package manifests_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shopmesh/shopmesh/deploy/devsecrets"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

// TestNATSConfPermissions runs the nats.conf of compose and of the Kubernetes dev overlay in a real
// nats-server (embedded), with the environment `make secrets` gives the NATS container, and logs in as
// each service with the password its own env file holds: a service creates its stream, publishes on
// its subjects and receives them; it may neither publish nor subscribe on another service's subjects;
// a client without a user is refused; admin may do everything.
func TestNATSConfPermissions(t *testing.T) {
	root := repoRoot(t)
	list, err := servicelist.Load(root)
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]string{}
	for _, v := range devsecrets.Values(list) {
		vals[v.Name] = "pw-" + v.Name
	}
	files := devsecrets.ComposeEnv(list, vals)
	for _, conf := range []string{"deploy/compose/config/nats.conf", "deploy/k8s/overlays/dev/nats.conf"} {
		t.Run(conf, func(t *testing.T) {
			for _, kv := range files["nats.env"] {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			url := startNATS(t, filepath.Join(root, filepath.FromSlash(conf)))
			if nc, err := nats.Connect(url); err == nil {
				nc.Close()
				t.Error("a client without a user was accepted")
			}
			admin := connectNATS(t, url, "admin", vals["nats-admin-password"], nil)
			var users []servicelist.Service
			for _, s := range list {
				if s.NATS {
					users = append(users, s)
				}
			}
			if len(users) < 2 {
				t.Fatalf("want two services with NATS to check one against the other, have %d", len(users))
			}
			for i, s := range users {
				other := users[(i+1)%len(users)]
				t.Run(s.Name, func(t *testing.T) {
					checkNATSUser(t, url, admin, s, other, envValue(files[s.Name+".env"], s.Prefix()+"_NATS_PASSWORD"))
				})
			}
		})
	}
}

// checkNATSUser logs in as s and checks what it may and may not do (other is another service).
func checkNATSUser(t *testing.T, url string, admin *nats.Conn, s, other servicelist.Service, password string) {
	denied := make(chan error, 10)
	nc := connectNATS(t, url, s.Name, password, func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err })
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// What the service does at start and for each event: its stream, then a JetStream publish.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	own := s.NATSSubjects + ".k1"
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: s.NATSStream, Subjects: []string{s.NATSSubjects + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatalf("%s cannot create its stream %s: %v", s.Name, s.NATSStream, err)
	}
	if _, err := js.Publish(ctx, own, []byte("ev")); err != nil {
		t.Fatalf("%s cannot publish to its stream on %s: %v", s.Name, own, err)
	}
	// Its own core subjects, both ways.
	sub, err := nc.SubscribeSync(s.NATSSubjects + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(own, []byte("live")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(10 * time.Second); err != nil || string(m.Data) != "live" {
		t.Fatalf("%s did not receive its own subject %s: %v", s.Name, own, err)
	}

	// Another service's subjects: the server refuses the publish and the subscription.
	foreign := other.NATSSubjects + ".k1"
	spy, err := admin.SubscribeSync(foreign)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = nc.Publish(foreign, []byte("forged"))
	_ = nc.Flush()
	wantDenied(t, denied, fmt.Sprintf("Permissions Violation for Publish to %q", foreign))
	if _, err := nc.SubscribeSync(other.NATSSubjects + ".>"); err == nil {
		_ = nc.Flush()
		wantDenied(t, denied, fmt.Sprintf("Permissions Violation for Subscription to %q", other.NATSSubjects+".>"))
	}
	// admin may publish anywhere: the spy receives admin's message and not the forged one before it
	// (the server dropped it: messages of one connection arrive in order).
	if err := admin.Publish(foreign, []byte("admin")); err != nil {
		t.Fatal(err)
	}
	if m, err := spy.NextMsg(10 * time.Second); err != nil || string(m.Data) != "admin" {
		t.Fatalf("admin's message on %s: %v, data %q (want admin's, not the forged one)", foreign, err, msgData(m))
	}
	// Nor may it delete a stream (its own included): only create, update and info.
	del := "$JS.API.STREAM.DELETE." + s.NATSStream
	_ = nc.Publish(del, nil)
	_ = nc.Flush()
	wantDenied(t, denied, fmt.Sprintf("Permissions Violation for Publish to %q", del))
	ajs, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ajs.Stream(ctx, s.NATSStream); err != nil {
		t.Errorf("%s's stream after its delete request: %v", s.Name, err)
	}
}

func msgData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

// wantDenied waits for the server's permissions error naming want.
func wantDenied(t *testing.T, denied <-chan error, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-denied:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
				return
			}
		case <-timeout:
			t.Errorf("the server did not refuse: no %s", want)
			return
		}
	}
}

func connectNATS(t *testing.T, url, user, password string, onErr nats.ErrHandler) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.UserInfo(user, password), nats.Timeout(5 * time.Second)}
	if onErr != nil {
		opts = append(opts, nats.ErrorHandler(onErr))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("%s cannot log in: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startNATS runs the server of conf (its variables resolved from the process environment) on a free
// loopback port with its JetStream store in a temporary folder.
func startNATS(t *testing.T, conf string) string {
	t.Helper()
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("%s: %v", conf, err)
	}
	opts.Host, opts.Port, opts.HTTPPort, opts.StoreDir = "127.0.0.1", -1, 0, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// envValue is the value of name in an env file's lines.
func envValue(lines []string, name string) string {
	for _, l := range lines {
		if k, v, ok := strings.Cut(l, "="); ok && k == name {
			return v
		}
	}
	return ""
}
