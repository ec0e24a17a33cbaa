// Command inventory runs the shopmesh inventory service: `inventory` serves, `inventory migrate ...`
// manages the schema.
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
		fmt.Fprintln(os.Stderr, "inventory:", err)
		os.Exit(1)
	}
}
