// Command order runs the shopmesh order service: the OrderService gRPC API and the checkout saga that
// reserves stock (inventory) and authorizes payment (payment), its recovery worker and its outbox relay.
//
//	order              serve (configuration from ORDER_* variables, KAFKA_BROKERS and NATS_URL)
//	order migrate ...  up | down N | version | force V on the order schema
//	order healthcheck  exit 0 when the running server reports SERVING (container healthchecks)
//	order check-config validate the configuration; fail on unknown ORDER_* variables (-keys lists them)
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
		fmt.Fprintln(os.Stderr, "order:", err)
		os.Exit(1)
	}
}
