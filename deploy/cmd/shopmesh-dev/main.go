// Command shopmesh-dev is `make run`: it brings the whole shopmesh suite up on one machine with embedded
// defaults (in-process NATS with JetStream and a kfake Kafka broker, SQLite files under .data/), builds
// and starts every instance of every service listed in services/*/service.yaml as a child process
// (dev_instances of each, from dev_port upwards), prints where everything is, and on Ctrl-C stops it
// all in reverse start order (callers first, then the brokers). With -infra .run/infra.env
// (`make run INFRA=1`) the same processes run on the real servers of `make infra-up` instead.
//
//	shopmesh-dev [-instances inventory=3,payment=1] [-order 1] [-gateway on|off] [-gateway-addr 127.0.0.1:8080] ...
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
