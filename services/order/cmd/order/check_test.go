package main

import (
	"context"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/config/configtest"
)

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
