// Command shopmesh-dev is `make run`: it brings the whole shopmesh suite up on one machine with embedded
// defaults (in-process NATS with JetStream and a kfake Kafka broker, SQLite files under .data/), builds
// and starts every service instance as a child process, prints where everything is, and on Ctrl-C
// stops it all in order (gateway, order, inventory/payment, brokers). With -infra .run/infra.env
// (`make run INFRA=1`) the same processes run on the real servers of `make infra-up` instead.
//
//	shopmesh-dev [-inventory 2] [-payment 2] [-order 1] [-gateway auto|on|off] [-gateway-addr 127.0.0.1:8080] ...
//
// Run it with -h for every flag.
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
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shopmesh-dev:", err)
		os.Exit(1)
	}
}
