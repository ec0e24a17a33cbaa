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
	args := os.Args[1:]
	if len(args) == 1 && args[0] == "check-config" {
		args = append(args, os.Environ()...) // to find unknown variables (typos)
	}
	err := run(ctx, args, os.LookupEnv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "payment:", err)
		os.Exit(1)
	}
}
