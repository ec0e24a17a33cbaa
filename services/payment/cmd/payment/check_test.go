package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/config/configtest"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
)

// run is the payment command as main runs it, with the process replaced by lookup and stdout.
func run(ctx context.Context, args []string, lookup config.Lookup, stdout io.Writer) error {
	return service.Run(ctx, spec(), args, service.Env{Lookup: lookup, Stdout: stdout})
}

func checkSuite() configtest.CheckSuite {
	return configtest.CheckSuite{Run: run, Prefix: "PAYMENT_", AddrVar: "LISTEN_ADDR",
		Required: map[string]string{"PAYMENT_DSN": "sqlite:x.db", "KAFKA_BROKERS": "k:1"}}
}

// TestCheckCommands runs the healthcheck and check-config checks every service binary must pass.
func TestCheckCommands(t *testing.T) {
	t.Parallel()
	configtest.CheckCommandSuite(t, checkSuite())
}

// checkHealth runs the healthcheck subcommand against the service a test started (addr is the bound
// address in place of the :0 one in env) and asserts it passes.
func checkHealth(ctx context.Context, t *testing.T, env map[string]string, addr string) {
	t.Helper()
	checkSuite().CheckHealth(ctx, t, env, addr)
}

// `payment -h` lists every variable check-config knows (the shared KAFKA_BROKERS as the alias of
// PAYMENT_KAFKA_BROKERS), each with its default and a meaning; the variables deployments set keep
// their names (PAYMENT_LOG_LEVEL now through the platform's field).
func TestHelpListsEveryVariableWithItsMeaning(t *testing.T) {
	t.Parallel()
	var keys, help bytes.Buffer
	if err := run(t.Context(), []string{"check-config", "-keys"}, nil, &keys); err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context(), []string{"-h"}, nil, &help); err != nil {
		t.Fatal(err)
	}
	meaning := map[string]string{} // variable (or the shared one it falls back to) → help
	for line := range strings.Lines(help.String()) {
		if !strings.HasPrefix(line, "PAYMENT_") {
			continue
		}
		// NAME [(ALIAS)]  default  — help
		fields := strings.Fields(line)
		names := []string{fields[0]}
		if len(fields) > 1 && strings.HasPrefix(fields[1], "(") {
			names = append(names, strings.Trim(fields[1], "()"))
		}
		_, text, found := strings.Cut(line, "—")
		if !found || strings.TrimSpace(text) == "" {
			t.Errorf("a variable without a meaning: %q", line)
		}
		for _, n := range names {
			meaning[n] = strings.TrimSpace(text)
		}
	}
	listed := strings.Fields(keys.String())
	if len(listed) < 50 {
		t.Fatalf("check-config -keys listed %d variables:\n%s", len(listed), keys.String())
	}
	for _, k := range listed {
		if _, ok := meaning[k]; !ok {
			t.Errorf("-h does not list %s", k)
		}
	}
	for _, k := range []string{"PAYMENT_DSN", "PAYMENT_KAFKA_BROKERS", "PAYMENT_LOG_LEVEL", "PAYMENT_SEED", "PAYMENT_TOPIC_PARTITIONS",
		"PAYMENT_CONSUMER_GROUP", "PAYMENT_RELAY_POLL_INTERVAL", "PAYMENT_CONSUMER_MAX_WAIT", "PAYMENT_CONSUMER_COMMIT_INTERVAL",
		"PAYMENT_CONSUMER_MAX_BATCH",
		"PAYMENT_INBOX_RETENTION", "PAYMENT_LISTEN_ADDR", "KAFKA_BROKERS"} {
		if meaning[k] == "" {
			t.Errorf("-h gives no meaning for %s", k)
		}
	}
	for _, want := range []string{"payment — ", "migrate up", "PAYMENT_KAFKA_BROKERS (KAFKA_BROKERS)"} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("-h does not mention %q:\n%s", want, help.String())
		}
	}
}

// `payment migrate up` applies the outbox, inbox and payment schemas; `migrate version` reports the
// payment schema's version and `migrate down 1` steps it back.
func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	env := map[string]string{"PAYMENT_PROFILE": "test", "PAYMENT_DSN": "sqlite:" + filepath.Join(t.TempDir(), "payment.db")}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	migrate := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(t.Context(), append([]string{"migrate"}, args...), lookup, &out); err != nil {
			t.Fatalf("migrate %v: %v", args, err)
		}
		return out.String()
	}
	migrate("up")
	if v := migrate("version"); !strings.Contains(v, "version: 3") {
		t.Errorf("version after up = %q, want 3", v)
	}
	if v := migrate("down", "1"); !strings.Contains(v, "version: 2") {
		t.Errorf("version after down 1 = %q, want 2", v)
	}
	if err := run(t.Context(), []string{"migrate", "sideways"}, lookup, io.Discard); err == nil {
		t.Error("migrate sideways: want a usage error")
	}
}
