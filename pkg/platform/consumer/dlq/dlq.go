// Package dlq lists and replays the dead letters the consumer package writes: Kafka "<topic>.dlq"
// topics and JetStream dead-letter streams. A replay republishes each entry to its original topic or
// subject with its event id, so consumers that already applied it drop it in their inbox and the one
// that dead-lettered it applies it; what was replayed is recorded on the broker (a consumer group's
// committed offsets on Kafka, a durable consumer's acknowledgements on JetStream), so a second replay
// only sends entries dead-lettered since.
package dlq

import (
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// DefaultReplayer names the Kafka consumer group and the JetStream durable that record replays.
const DefaultReplayer = "shopmesh-dlq-replay"

// HeaderReplayedFrom is set on a replayed message: the dead letter's position.
const HeaderReplayedFrom = "dlq-replayed-from"

// Entry is one dead letter.
type Entry struct {
	// Position is where the dead letter is stored: "<dlq topic>/<partition>/<offset>" or
	// "<stream>/<sequence>".
	Position string
	// EventID is the event id (outbox.HeaderEventID).
	EventID string
	// Topic is the original topic or subject; Origin the original position.
	Topic, Origin string
	// Consumer is the group or durable that dead-lettered it; Cause and Reason say why.
	Consumer, Cause, Reason string
	Attempts                int
	Time                    time.Time
	// Replayed reports that a replay already republished it.
	Replayed bool

	Key     []byte
	Payload []byte
	Headers map[string]string
}

func entry(position string, key, payload []byte, headers map[string]string) Entry {
	e := Entry{
		Position: position,
		EventID:  headers[outbox.HeaderEventID],
		Topic:    headers[consumer.HeaderDLQTopic],
		Origin:   headers[consumer.HeaderDLQPosition],
		Consumer: headers[consumer.HeaderDLQConsumer],
		Cause:    headers[consumer.HeaderDLQCause],
		Reason:   headers[consumer.HeaderDLQReason],
		Key:      key,
		Payload:  payload,
		Headers:  headers,
	}
	e.Attempts, _ = strconv.Atoi(headers[consumer.HeaderDLQAttempts])
	e.Time, _ = time.Parse(time.RFC3339Nano, headers[consumer.HeaderDLQTime])
	return e
}

// republished returns the headers of the replayed message: the original ones (event id, trace
// context, event type...) without the dead-letter annotations, plus where it was replayed from.
func (e Entry) republished() map[string]string {
	h := maps.Clone(e.Headers)
	for k := range h {
		if strings.HasPrefix(k, "dlq-") {
			delete(h, k)
		}
	}
	h[HeaderReplayedFrom] = e.Position
	return h
}

// Report is what a replay did.
type Report struct {
	// Replayed are the entries republished, in order.
	Replayed []Entry
	// Skipped counts entries not selected by the filter; they stay unreplayed.
	Skipped int
	// Unroutable counts entries without an original topic (not written by the consumer package); they
	// are recorded as handled and not republished.
	Unroutable int
}
