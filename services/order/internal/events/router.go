package events

import (
	"context"
	"fmt"
	"strings"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// Router is the outbox publisher of the order service: status subjects go to JetStream, everything
// else to Kafka. One relay drains one table, so it must reach both brokers.
type Router struct {
	Kafka     outbox.Publisher
	JetStream outbox.Publisher
}

var _ outbox.Publisher = (*Router)(nil)

// Publish sends the JetStream part of msgs, then the Kafka part, each in order. A failure re-sends the
// whole batch later; both brokers de-duplicate or tolerate the repeat (JetStream by Nats-Msg-Id,
// Kafka consumers by event id).
func (r *Router) Publish(ctx context.Context, msgs []outbox.Message) error {
	var toJS, toKafka []outbox.Message
	for _, m := range msgs {
		if strings.HasPrefix(m.Topic, SubjectPrefix) {
			toJS = append(toJS, m)
		} else {
			toKafka = append(toKafka, m)
		}
	}
	if len(toJS) > 0 {
		if err := r.JetStream.Publish(ctx, toJS); err != nil {
			return fmt.Errorf("status events: %w", err)
		}
	}
	if len(toKafka) > 0 {
		if err := r.Kafka.Publish(ctx, toKafka); err != nil {
			return fmt.Errorf("order events: %w", err)
		}
	}
	return nil
}
