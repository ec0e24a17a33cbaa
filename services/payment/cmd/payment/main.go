// Command payment runs the shopmesh payment service: the PaymentService gRPC API, the outbox relay
// publishing payment events to Kafka and the consumer applying order events. `payment migrate ...`
// manages the schema instead. Configuration comes from PAYMENT_* variables (see internal/config).
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
		fmt.Fprintln(os.Stderr, "payment:", err)
		os.Exit(1)
	}
}
