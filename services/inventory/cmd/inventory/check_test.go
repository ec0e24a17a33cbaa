package main

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/config/configtest"
)

func checkSuite() configtest.CheckSuite {
	return configtest.CheckSuite{Run: runService, Prefix: "INVENTORY_", AddrVar: "LISTEN_ADDR",
		Required: map[string]string{"INVENTORY_DSN": "sqlite:x.db", "KAFKA_BROKERS": "k:1", "NATS_URL": "nats://n:1"}}
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

// `inventory -h` lists every variable the service reads (the names check-config -keys knows, shared
// aliases such as KAFKA_BROKERS included), each with its meaning.
func TestHelpListsEveryVariable(t *testing.T) {
	t.Parallel()
	var help, keys bytes.Buffer
	if err := runService(context.Background(), []string{"-h"}, nil, &help); err != nil {
		t.Fatal(err)
	}
	if err := runService(context.Background(), []string{"check-config", "-keys"}, nil, &keys); err != nil {
		t.Fatal(err)
	}
	_, vars, ok := strings.Cut(help.String(), "\nEnvironment")
	if !ok {
		t.Fatalf("-h has no Environment section:\n%s", help.String())
	}
	lines := strings.Split(strings.TrimSpace(vars), "\n")[1:] // after the section's heading
	var listed []string                                       // the names and their aliases ("NAME (ALIAS)  default  — help")
	for _, l := range lines {
		f := strings.Fields(l)
		name := f[0]
		listed = append(listed, name)
		if len(f) > 1 && strings.HasPrefix(f[1], "(") {
			listed = append(listed, strings.Trim(f[1], "()"))
		}
		if _, h, ok := strings.Cut(l, "— "); !ok || strings.TrimSpace(h) == "" {
			t.Errorf("%s has no help: %q", name, l)
		}
	}
	slices.Sort(listed)
	listed = slices.Compact(listed)
	want := strings.Fields(keys.String())
	if !slices.Equal(listed, want) {
		t.Errorf("-h lists %v\ncheck-config -keys lists %v", listed, want)
	}
	for _, v := range []string{"INVENTORY_DSN", "INVENTORY_KAFKA_BROKERS (KAFKA_BROKERS)", "INVENTORY_NATS_URL (NATS_URL)",
		"INVENTORY_SEED", "INVENTORY_RELAY_POLL_INTERVAL", "INVENTORY_INBOX_RETENTION"} {
		if !strings.Contains(vars, "\n"+v+" ") {
			t.Errorf("-h does not list %s", v)
		}
	}
}

// `inventory migrate up` applies the outbox, inbox and inventory schemas; `migrate version` then
// reports the inventory schema's last version, and `migrate up` again changes nothing.
func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	env := map[string]string{"INVENTORY_PROFILE": "test", "INVENTORY_DSN": "sqlite:" + filepath.Join(t.TempDir(), "inventory.db"),
		"KAFKA_BROKERS": "k:1", "NATS_URL": "nats://n:1"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, args := range [][]string{{"migrate", "up"}, {"migrate", "up"}} {
		if err := runService(context.Background(), args, lookup, &bytes.Buffer{}); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	var out bytes.Buffer
	if err := runService(context.Background(), []string{"migrate", "version"}, lookup, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "version: 2") {
		t.Errorf("migrate version = %q, want version 2 (0002_import_lines)", out.String())
	}
	inboxCount(t, env["INVENTORY_DSN"]) // the platform's inbox table exists
	if err := runService(context.Background(), []string{"migrate", "sideways"}, lookup, &bytes.Buffer{}); err == nil {
		t.Error("migrate sideways: want a usage error")
	}
}
