package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/config/configtest"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

// run is the order command as its process runs it, on a test's environment.
func run(ctx context.Context, args []string, lookup config.Lookup, stdout io.Writer) error {
	return service.Run(ctx, spec(), args, service.Env{Lookup: lookup, Stdout: stdout})
}

func checkSuite() configtest.CheckSuite {
	return configtest.CheckSuite{Run: run, Prefix: "ORDER_", AddrVar: "LISTEN_ADDR",
		Required: map[string]string{"ORDER_DSN": "sqlite:x.db", "KAFKA_BROKERS": "k:1", "NATS_URL": "nats://n:1"}}
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

// ownVariables are the order service's own variables, beyond the platform's: compose, k8s and
// `make run` set them by these names.
var ownVariables = []string{
	"ORDER_DSN", "ORDER_KAFKA_BROKERS", "ORDER_NATS_URL", "ORDER_TOPIC_PARTITIONS", "ORDER_CALL_TIMEOUT",
	"ORDER_RECOVERY_INTERVAL", "ORDER_SAGA_TIMEOUT", "ORDER_RECOVERY_AFTER", "ORDER_GIVE_UP_AFTER",
	"ORDER_RECOVERY_BATCH", "ORDER_WATCH_POLL", "ORDER_SETTLE_AFTER", "ORDER_RETRY_MIN", "ORDER_RETRY_MAX",
	"ORDER_STUCK_AFTER", "ORDER_STUCK_ATTEMPTS", "ORDER_RELAY_POLL_INTERVAL",
}

// -h lists every variable check-config knows, each with its default and a help text; the brokers
// show their shared fallbacks (KAFKA_BROKERS, NATS_URL).
func TestHelpListsEveryVariable(t *testing.T) {
	t.Parallel()
	var keys, help bytes.Buffer
	if err := run(t.Context(), []string{"check-config", "-keys"}, nil, &keys); err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context(), []string{"-h"}, nil, &help); err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(help.String(), "\nEnvironment")
	if !ok {
		t.Fatalf("-h has no Environment section:\n%s", help.String())
	}
	listed := map[string]string{} // name, or the shared variable it falls back to → the rest of its line
	for _, line := range strings.Split(strings.TrimSpace(table), "\n")[1:] {
		name, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
		_, text, found := strings.Cut(rest, "— ")
		if !found || strings.TrimSpace(text) == "" {
			t.Errorf("-h line without help: %q", line)
		}
		listed[name] = rest
		if alias, ok := strings.CutPrefix(strings.TrimSpace(rest), "("); ok {
			alias, _, _ = strings.Cut(alias, ")")
			listed[alias] = rest
		}
	}
	for _, k := range strings.Fields(keys.String()) {
		if _, ok := listed[k]; !ok {
			t.Errorf("-h does not list %s", k)
		}
	}
	for _, k := range ownVariables {
		if !slices.Contains(strings.Fields(keys.String()), k) {
			t.Errorf("check-config -keys lacks %s", k)
		}
	}
	for name, alias := range map[string]string{"ORDER_KAFKA_BROKERS": "(KAFKA_BROKERS)", "ORDER_NATS_URL": "(NATS_URL)"} {
		if !strings.HasPrefix(strings.TrimSpace(listed[name]), alias) {
			t.Errorf("-h line of %s = %q, want it to name %s", name, listed[name], alias)
		}
	}
}

// `order migrate up` applies the outbox, inbox and order schemas (twice is a no-op), and `migrate
// version` reports the order schema's version.
func TestMigrate(t *testing.T) {
	t.Parallel()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "order.db")
	env := map[string]string{"ORDER_PROFILE": "test", "ORDER_DSN": dsn, "KAFKA_BROKERS": "k:1", "NATS_URL": "nats://n:1"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for range 2 {
		if err := run(t.Context(), []string{"migrate", "up"}, lookup, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"migrate", "version"}, lookup, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "version: 2 dirty: false") {
		t.Fatalf("migrate version: %q", out.String())
	}
	db, _ := sqldbtest.Open(t, dsn)
	for _, table := range []string{"orders", "order_lines", "outbox", "inbox"} {
		var n int
		if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Errorf("table %s after migrate up: %v", table, err)
		}
	}
}
