package infratest

import (
	"context"
	"strings"
	"testing"
)

func TestHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:29092,127.0.0.1:29093":                   "127.0.0.1:29092",
		"nats://127.0.0.1:24222":                            "127.0.0.1:24222",
		"postgres://u:p@127.0.0.1:56432/db?sslmode=disable": "127.0.0.1:56432",
	} {
		if got, err := HostPort(in); err != nil || got != want {
			t.Errorf("HostPort(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// Control never acts on a server other than the one the endpoint names: a test run pointed at a
// private copy must not restart the default one.
func TestControlRefusesAnotherServer(t *testing.T) {
	t.Setenv(KafkaBrokers, "127.0.0.1:29092")
	t.Setenv("KAFKA_PORT", "")
	err := Control(context.Background(), "restart", "kafka")
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Control with KAFKA_PORT unset = %v, want a refusal", err)
	}
	t.Setenv("KAFKA_PORT", "29092")
	t.Setenv("SHOPMESH_INFRA_DIR", "")
	err = Control(context.Background(), "restart", "kafka")
	if err == nil || !strings.Contains(err.Error(), "SHOPMESH_INFRA_DIR") {
		t.Fatalf("Control without SHOPMESH_INFRA_DIR = %v, want a refusal", err)
	}
	if err := Control(context.Background(), "restart", "etcd"); err == nil {
		t.Fatal("Control of an unknown component succeeded")
	}
}
