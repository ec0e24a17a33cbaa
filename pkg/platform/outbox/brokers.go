package outbox

import (
	"context"
	"strings"
)

// The lanes of Brokers; like column names they must not change while rows are pending.
const (
	LaneKafka = 0
	LaneNATS  = 1
)

// Brokers is the outbox fan-out every shopmesh service uses: one row per event, delivered to Kafka
// (the durable business event, lane 0) and, when Subject gives one, to JetStream (the low-latency
// copy, lane 1) with the same event id, so JetStream de-duplicates a resend by Nats-Msg-Id. As a
// Router it gives each broker its own lane: an outage of one leaves the other's events flowing, each
// delivered at least once.
type Brokers struct {
	// Kafka receives every row whose topic is not a NATS subject (see NATSPrefix).
	Kafka Publisher
	// JetStream, when set, receives the copies Subject names; nil: Kafka only.
	JetStream Publisher
	// Subject returns the subject of a row's JetStream copy, or false for none. nil: no copies.
	Subject func(Message) (string, bool)
	// NATSPrefix marks rows written for JetStream alone (their topic is the subject, e.g.
	// "shopmesh.order.status."): they skip Kafka and go to JetStream as they are. "" for none.
	NATSPrefix string
}

var _ Router = Brokers{}

// Destinations returns the Kafka lane and, when JetStream is set, the NATS lane.
func (b Brokers) Destinations() []Destination {
	d := []Destination{{Lane: LaneKafka, Name: "kafka", Publisher: b.Kafka, Route: b.kafka}}
	if b.JetStream != nil {
		d = append(d, Destination{Lane: LaneNATS, Name: "nats", Publisher: b.JetStream, Route: b.nats})
	}
	return d
}

func (b Brokers) natsOnly(m Message) bool {
	return b.NATSPrefix != "" && strings.HasPrefix(m.Topic, b.NATSPrefix)
}

func (b Brokers) kafka(m Message) (Message, bool) { return m, !b.natsOnly(m) }

func (b Brokers) nats(m Message) (Message, bool) {
	if b.natsOnly(m) {
		return m, true
	}
	if b.Subject == nil {
		return m, false
	}
	subject, ok := b.Subject(m)
	if !ok {
		return m, false
	}
	m.Topic = subject
	return m, true
}

// Publish sends msgs to Kafka, then their copies to JetStream (tools and tests; the relay uses the
// lanes).
func (b Brokers) Publish(ctx context.Context, msgs []Message) error {
	return Fanout(b.Destinations()).Publish(ctx, msgs)
}
