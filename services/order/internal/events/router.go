package events

import (
	"context"
	"strings"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// Outbox lanes of the order service: like column names, they must not change while rows are pending.
const (
	LaneKafka = 0
	LaneNATS  = 1
)

// Router is the outbox publisher of the order service: status subjects go to JetStream, everything
// else to Kafka. As an outbox.Router it gives the relay one lane per broker, so a NATS outage never
// delays the Kafka events other services act on (OrderConfirmed, OrderCancelled), nor the reverse.
type Router struct {
	Kafka     outbox.Publisher
	JetStream outbox.Publisher
}

var _ outbox.Router = (*Router)(nil)

// Destinations returns the Kafka lane (rows for Kafka topics) and the NATS lane (status subjects).
func (r *Router) Destinations() []outbox.Destination {
	return []outbox.Destination{
		{Lane: LaneKafka, Name: "kafka", Publisher: r.Kafka, Route: func(m outbox.Message) (outbox.Message, bool) {
			return m, !strings.HasPrefix(m.Topic, SubjectPrefix)
		}},
		{Lane: LaneNATS, Name: "nats", Publisher: r.JetStream, Route: func(m outbox.Message) (outbox.Message, bool) {
			return m, strings.HasPrefix(m.Topic, SubjectPrefix)
		}},
	}
}

// Publish sends msgs to both brokers, Kafka first (tools and tests; the relay uses the lanes).
func (r *Router) Publish(ctx context.Context, msgs []outbox.Message) error {
	return outbox.Fanout(r.Destinations()).Publish(ctx, msgs)
}
