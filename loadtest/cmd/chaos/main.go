// Command chaos is `make chaos`: the fault campaign of docs/RELIABILITY.md on the real servers. For
// each scenario it starts the stack on the servers of -infra, runs an open-loop order load through the
// gateway, injects the fault, heals it, waits until the system settles and audits the databases; it
// writes report.{json,md,html} into -out and exits non-zero when any scenario lost, duplicated or left
// stuck an order, answered 500 or failed the audit.
//
//	chaos -infra .run/infra.env [-scenarios R1,R4] [-rate 30] [-warmup 20s] [-fault 0] [-recovery 40s] [-ci]
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
	failed, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
