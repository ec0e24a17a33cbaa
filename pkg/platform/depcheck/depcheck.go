// Package depcheck holds the readiness checks of the servers shopmesh services depend on, for
// platform.Dependency: each takes the check's context (bounded by the dependency's Timeout) and returns
// nil while the server answers. A database needs none: (*sql.DB).PingContext is one.
package depcheck

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

// Kafka returns a check that passes when one of brokers accepts a connection authenticated with auth
// (nil: none) and answers a metadata request.
func Kafka(brokers []string, auth sasl.Mechanism) func(context.Context) error {
	return func(ctx context.Context) error {
		if len(brokers) == 0 {
			return errors.New("kafka: no brokers")
		}
		var errs []error
		for _, b := range brokers {
			err := kafkaBroker(ctx, b, auth)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		return fmt.Errorf("kafka: %w", errors.Join(errs...))
	}
}

func kafkaBroker(ctx context.Context, broker string, auth sasl.Mechanism) error {
	conn, err := kafkaauth.Dialer(auth).DialContext(ctx, "tcp", broker)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	}
	_, err = conn.Brokers()
	return err
}

// NATS returns a check that passes while nc is connected and the server answers a ping.
func NATS(nc *nats.Conn) func(context.Context) error {
	return func(ctx context.Context) error {
		if st := nc.Status(); st != nats.CONNECTED {
			return fmt.Errorf("nats: %s", st)
		}
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
		}
		if err := nc.FlushWithContext(ctx); err != nil {
			return fmt.Errorf("nats: %w", err)
		}
		return nil
	}
}
