package service_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
)

// natsDemoConfig is a service that uses NATS: DEMO_NATS_URL, DEMO_NATS_USER, DEMO_NATS_PASSWORD.
type natsDemoConfig struct {
	config.Config
	config.NATS
}

func (c natsDemoConfig) Validate() error { return errors.Join(c.Config.Validate(), c.NATS.Validate()) }

// authNATS starts a JetStream server that refuses connections without a user: "demo" may publish only
// demo.events.> (and the JetStream API requests of its stream DEMO), "admin" everything.
func authNATS(t *testing.T) *server.Server {
	t.Helper()
	perms := &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{"demo.events.>", "$JS.API.INFO",
			"$JS.API.STREAM.CREATE.DEMO", "$JS.API.STREAM.UPDATE.DEMO", "$JS.API.STREAM.INFO.DEMO"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"demo.events.>", "_INBOX.>"}},
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{{Username: "demo", Password: "demo-secret", Permissions: perms}, {Username: "admin", Password: "admin-secret"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// quiet is a dev process environment of vars whose output is dropped.
func quiet(vars map[string]string) service.Env {
	e := env(vars, nil)
	e.Stdout = &syncBuffer{}
	return e
}

// natsDemoSpec wires a service that connects with s.NATS, creates its stream and publishes one event
// through the outbox's JetStream publisher, then closes published.
func natsDemoSpec(addr string, published chan<- error) service.Spec[natsDemoConfig] {
	return service.Spec[natsDemoConfig]{
		Name: "demo", Summary: "a NATS service for the tests",
		Defaults: func(p config.Profile) natsDemoConfig {
			c := natsDemoConfig{Config: config.Default(p)}
			c.Service, c.ListenAddr, c.AdminAddr, c.HealthAddr = "demo", addr, "", ""
			c.Server.DrainDelay, c.Server.ShutdownTimeout = 0, 10*time.Second
			return c
		},
		Wire: func(ctx context.Context, s *service.Service, cfg natsDemoConfig) error {
			_, js, err := s.NATS(cfg.NATS)
			if err != nil {
				return err
			}
			if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "DEMO", Subjects: []string{"demo.events.>"}}); err != nil {
				return err
			}
			published <- outbox.NewJetStream(js).Publish(ctx, []outbox.Message{{ID: "ev-1", Topic: "demo.events.1", Payload: []byte("hello")}})
			s.GRPC()
			return nil
		},
	}
}

// A service with NATS_USER/NATS_PASSWORD connects as its user: it creates its stream and publishes
// its events through the platform; without the user, or with a wrong password, it does not start.
func TestNATSConnectsAsTheServiceUser(t *testing.T) {
	srv := authNATS(t)
	url := srv.ClientURL()

	t.Run("with its credentials", func(t *testing.T) {
		addr := freeAddr(t)
		published := make(chan error, 1)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		vars := map[string]string{"DEMO_NATS_URL": url, "DEMO_NATS_USER": "demo", "DEMO_NATS_PASSWORD": "demo-secret"}
		go func() { done <- service.Run(ctx, natsDemoSpec(addr, published), nil, quiet(vars)) }()
		select {
		case err := <-published:
			if err != nil {
				t.Fatalf("publish as demo: %v", err)
			}
		case err := <-done:
			t.Fatalf("the service stopped: %v", err)
		}
		waitHealthy(t, addr, done)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run after a stop: %v", err)
		}
		// The admin reads the event back from the stream.
		nc, err := nats.Connect(url, nats.UserInfo("admin", "admin-secret"))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer rcancel()
		st, err := js.Stream(rctx, "DEMO")
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetLastMsgForSubject(rctx, "demo.events.1")
		if err != nil || string(m.Data) != "hello" {
			t.Fatalf("stored event = %v, %v; want hello", m, err)
		}
	})

	for name, vars := range map[string]map[string]string{
		"without a user":        {"DEMO_NATS_URL": url},
		"with a wrong password": {"DEMO_NATS_URL": url, "DEMO_NATS_USER": "demo", "DEMO_NATS_PASSWORD": "guess"},
	} {
		t.Run(name, func(t *testing.T) {
			published := make(chan error, 1)
			err := service.Run(t.Context(), natsDemoSpec(freeAddr(t), published), nil, quiet(vars))
			if err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
				t.Fatalf("Run = %v, want the server's Authorization Violation", err)
			}
			if len(published) != 0 {
				t.Fatal("the service published without being let in")
			}
		})
	}
}

// A user without a password (or the reverse) is a configuration error naming the field, and the
// password never shows in check-config's output.
func TestNATSCredentialsAreCheckedAndHidden(t *testing.T) {
	spec := natsDemoSpec(freeAddr(t), make(chan error, 1))
	for _, c := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"DEMO_NATS_URL": "nats://127.0.0.1:1", "DEMO_NATS_USER": "demo"}, "nats_password (DEMO_NATS_PASSWORD): must be set with nats_user"},
		{map[string]string{"DEMO_NATS_URL": "nats://127.0.0.1:1", "DEMO_NATS_PASSWORD": "demo-secret"}, "nats_user (DEMO_NATS_USER): must be set with nats_password"},
	} {
		err := service.Run(t.Context(), spec, []string{"check-config"}, quiet(c.vars))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("check-config with %v = %v, want %q", c.vars, err, c.want)
		}
	}
	var out bytes.Buffer
	vars := map[string]string{"DEMO_NATS_URL": "nats://127.0.0.1:1", "DEMO_NATS_USER": "demo", "DEMO_NATS_PASSWORD": "demo-secret"}
	for _, args := range [][]string{{"check-config"}, {"-h"}} {
		if err := service.Run(t.Context(), spec, args, env(vars, &out)); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	if strings.Contains(out.String(), "demo-secret") || !strings.Contains(out.String(), "DEMO_NATS_PASSWORD") {
		t.Fatalf("check-config/-h output shows the password or omits the variable:\n%s", out.String())
	}
}
