package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Against a NATS that authenticates, the JetStream commands connect as NATS_USER with NATS_PASSWORD.
func TestNATSCredentials(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, JetStream: true,
		StoreDir: t.TempDir(), Users: []*server.User{{Username: "admin", Password: "admin-secret"}}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("admin", "admin-secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "DEMO_DLQ", Subjects: []string{"demo.dlq"}}); err != nil {
		t.Fatal(err)
	}
	args := []string{"list", "-nats", s.ClientURL(), "-stream", "DEMO_DLQ", "-timeout", "20s"}
	env := func(vars map[string]string) func(string) string { return func(k string) string { return vars[k] } }

	var out bytes.Buffer
	if err := run(ctx, args, env(map[string]string{"NATS_USER": "admin", "NATS_PASSWORD": "admin-secret"}), &out); err != nil {
		t.Fatalf("list as admin: %v", err)
	}
	if !strings.Contains(out.String(), "0 dead letter(s)") {
		t.Fatalf("list as admin printed %q", out.String())
	}
	for want, vars := range map[string]map[string]string{
		"Authorization Violation":                   {},
		"nats_password: must be set with nats_user": {"NATS_USER": "admin"},
	} {
		if err := run(ctx, args, env(vars), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("list with %v = %v, want %q", vars, err, want)
		}
	}
}
