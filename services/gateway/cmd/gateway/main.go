// Command gateway runs the shopmesh HTTP/JSON edge: it authenticates callers (HS256 bearer tokens),
// rate-limits them, and serves the order, catalogue, stock import and account API by calling the
// order, inventory and payment gRPC services. Configuration comes from GATEWAY_* variables
// (GATEWAY_HTTP_ADDR, GATEWAY_JWT_SECRET, GATEWAY_TARGETS_ORDER_ADDRESSES, ...).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	args := os.Args[1:]
	if len(args) == 1 && args[0] == "check-config" {
		args = append(args, os.Environ()...) // to find unknown variables (typos)
	}
	err := run(ctx, args, os.LookupEnv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}
