package main

import (
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"testing"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/config/configtest"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
)

// runService is the gateway command run the way main runs it, with the environment of a test.
func runService(ctx context.Context, args []string, lookup platformcfg.Lookup, stdout io.Writer) error {
	return service.Run(ctx, spec(), args, service.Env{Lookup: lookup, Stdout: stdout})
}

func checkSuite() configtest.CheckSuite {
	return configtest.CheckSuite{Run: runService, Prefix: "GATEWAY_", AddrVar: "HTTP_ADDR",
		Required: map[string]string{"GATEWAY_JWT_SECRET": "0123456789abcdef0123456789abcdef"}}
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

// `gateway -h` lists every variable the gateway reads (the names check-config -keys knows), each with
// its meaning.
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
	var listed []string
	for _, l := range lines {
		name, _, _ := strings.Cut(l, " ")
		listed = append(listed, name)
		if _, h, ok := strings.Cut(l, "— "); !ok || strings.TrimSpace(h) == "" {
			t.Errorf("%s has no help: %q", name, l)
		}
	}
	want := strings.Fields(keys.String())
	if !slices.Equal(listed, want) {
		t.Errorf("-h lists %v\ncheck-config -keys lists %v", listed, want)
	}
	for _, v := range []string{"GATEWAY_HTTP_ADDR", "GATEWAY_JWT_SECRET", "GATEWAY_HTTP_SHUTDOWN_TIMEOUT",
		"GATEWAY_SERVER_SHUTDOWN_TIMEOUT", "GATEWAY_TARGETS_ORDER_ADDRESSES", "GATEWAY_RATE_LIMIT_RPS"} {
		if !strings.Contains(vars, "\n"+v+" ") {
			t.Errorf("-h does not list %s", v)
		}
	}
	if strings.Contains(help.String(), "migrate") {
		t.Error("-h offers migrate; the gateway has no database")
	}
}
