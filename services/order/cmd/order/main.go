// Command order runs the shopmesh order service: the OrderService gRPC API and the checkout saga that
// reserves stock (inventory) and authorizes payment (payment), its recovery worker and its outbox relay.
//
//	order              serve (configuration from ORDER_* variables, KAFKA_BROKERS and NATS_URL)
//	order migrate ...  up | down N | version | force V on the order schema
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
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "order:", err)
		os.Exit(1)
	}
}
