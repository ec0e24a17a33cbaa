package main

import (
	"bytes"
	"context"
	"maps"
	"net"
	"strings"
	"testing"
)

// checkHealth runs the healthcheck subcommand the way a container runtime does, against the service
// TestRun started (the bound address in place of the :0 one) and asserts it passes.
func checkHealth(ctx context.Context, t *testing.T, env map[string]string, addr string) {
	t.Helper()
	e := maps.Clone(env)
	e["ORDER_LISTEN_ADDR"] = addr
	var out bytes.Buffer
	if err := run(ctx, []string{"healthcheck"}, func(k string) (string, bool) { v, ok := e[k]; return v, ok }, &out); err != nil {
		t.Errorf("healthcheck against the running service: %v", err)
	}
}

func TestHealthcheckNothingListening(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	env := map[string]string{"ORDER_PROFILE": "test", "ORDER_LISTEN_ADDR": addr, "ORDER_DSN": "sqlite:x.db", "KAFKA_BROKERS": "k:1", "NATS_URL": "nats://n:1"}
	if err := run(context.Background(), []string{"healthcheck"}, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &bytes.Buffer{}); err == nil {
		t.Fatal("healthcheck with nothing listening: want an error")
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	good := map[string]string{"ORDER_PROFILE": "test", "ORDER_LISTEN_ADDR": "127.0.0.1:1", "ORDER_DSN": "sqlite:x.db", "KAFKA_BROKERS": "k:1", "NATS_URL": "nats://n:1"}
	tests := []struct {
		name    string
		env     map[string]string
		environ []string
		wantErr []string
	}{
		{"valid", good, []string{"ORDER_PROFILE=test", "PATH=/bin"}, nil},
		{"typo", good, []string{"ORDER_PROFILE=test", "ORDER_LISTEN_ADR=:1", "ORDER_SERVER_DRAIN_DELAYS=1s"},
			[]string{"ORDER_LISTEN_ADR: unknown variable", "ORDER_SERVER_DRAIN_DELAYS: unknown variable"}},
		{"invalid value", merge(good, map[string]string{"ORDER_TELEMETRY_SAMPLE_RATIO": "2"}), nil, []string{"telemetry.sample_ratio"}},
		{"compose profile needs TLS", merge(good, map[string]string{"ORDER_PROFILE": "compose"}), nil, []string{"tls"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := run(context.Background(), append([]string{"check-config"}, tt.environ...),
				func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }, &out)
			if len(tt.wantErr) == 0 {
				if err != nil || !strings.Contains(out.String(), "config ok") {
					t.Fatalf("err = %v, out = %q", err, out.String())
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check-config", "-keys"}, func(string) (string, bool) { return "", false }, &out); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ORDER_PROFILE", "ORDER_LISTEN_ADDR", "ORDER_TLS_CA_FILE", "ORDER_HEALTH_ADDR", "ORDER_ADMIN_ADDR", "ORDER_TELEMETRY_OTLP_ENDPOINT"} {
		if !strings.Contains(out.String(), k+"\n") {
			t.Errorf("-keys lacks %s", k)
		}
	}
}

func merge(a, b map[string]string) map[string]string {
	m := maps.Clone(a)
	maps.Copy(m, b)
	return m
}
