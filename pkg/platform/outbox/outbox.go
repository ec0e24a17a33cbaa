// Package outbox publishes domain events exactly when the state change that caused them commits: the
// event is written as a row in the caller's transaction (Enqueue) and a Relay later publishes pending
// rows to Kafka and/or JetStream and marks them sent. Delivery is at least once — a relay that dies
// between publishing and marking re-sends the batch — so consumers de-duplicate by event id (inbox).
//
// # Claiming on PostgreSQL: a status column and FOR UPDATE SKIP LOCKED
//
// Rows are pending while sent_at IS NULL. A relay claims the oldest pending rows with
// SELECT ... ORDER BY seq LIMIT n FOR UPDATE SKIP LOCKED inside a transaction it holds while it
// publishes, then sets sent_at and commits. It was chosen over a cursor (and over watermill's
// pg_snapshot_xmin cursor) because it needs no offsets table and is correct by construction:
//
//   - Nothing in flight is skipped. seq is taken at INSERT, so a transaction still open keeps a low seq
//     invisible while later rows commit; a reader that remembers "last seq seen" would step over it for
//     ever. Here the row simply is not visible yet, stays pending, and the next claim after its commit
//     picks it up, however late.
//   - Several relays run at once (one per replica). SKIP LOCKED hands each a disjoint batch, and a relay
//     that dies leaves its locks to the server, which rolls the transaction back: the rows become pending
//     again and are re-sent (at least once).
//   - Per-aggregate order survives concurrent relays: the claim drops any row whose key still has an
//     earlier pending row it did not claim itself (locked by another relay), so the events of one
//     aggregate (key) are published in seq order. Writers of one aggregate serialize on its row, so seq
//     order is their commit order.
//
// The cost is a transaction open for one publish (bounded by RelayConfig.PublishTimeout).
//
// # SQLite
//
// SQLite has one writer: a transaction holding an outbox row holds the database's write lock, so no
// later row can commit before it and seq order is commit order — a held row cannot be overtaken. The
// relay reads pending rows, publishes outside any transaction (so the service's writes are not blocked
// by the broker) and marks them in a short write. Two relays on one SQLite file both publish the same
// rows (duplicates, never gaps); run one.
package outbox

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel/propagation"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// MigrationsTable is the migrations table the outbox schema is applied with, apart from the service's.
const MigrationsTable = "outbox_schema_migrations"

// HeaderEventID carries the event id on every published message (JetStream also gets it as
// Nats-Msg-Id, which the server de-duplicates on).
const HeaderEventID = "event-id"

// HeaderKey carries the aggregate id on JetStream messages, which have no key of their own.
const HeaderKey = "event-key"

//go:embed migrations
var migrations embed.FS

// Migrations returns the outbox schema for a dialect, to apply with migrate.Up and MigrationsTable.
func Migrations(d sqldb.Dialect) (fs.FS, error) {
	sub, err := fs.Sub(migrations, "migrations/"+string(d))
	if err != nil {
		return nil, fmt.Errorf("outbox migrations %s: %w", d, err)
	}
	return sub, nil
}

// Message is one event to publish.
type Message struct {
	// ID is the event id consumers de-duplicate on; Enqueue makes a UUIDv7 when empty.
	ID string
	// Topic is the Kafka topic, or the JetStream subject.
	Topic string
	// Key is the aggregate id: Kafka partitions by it, so one aggregate's events stay in order.
	Key string
	// Payload is the encoded event (protobuf).
	Payload []byte
	// Headers travel with the message; the trace context is added by Enqueue.
	Headers map[string]string
	// CreatedAt is when the event was written; set by Enqueue.
	CreatedAt time.Time
}

// Outbox writes events in the caller's transaction.
type Outbox struct {
	insert string
	prop   propagation.TextMapPropagator
}

// New returns an Outbox for a dialect. prop, when not nil, injects the trace context of Enqueue's ctx
// (W3C traceparent with propagation.TraceContext{}) into each event's headers, so the consumer's span
// continues the trace of the request that caused the event.
func New(d sqldb.Dialect, prop propagation.TextMapPropagator) *Outbox {
	return &Outbox{
		insert: d.Rebind(`INSERT INTO outbox (event_id, topic, msg_key, payload, headers, created_at)
			VALUES (?, ?, ?, ?, ?, ?)`),
		prop: prop,
	}
}

// Enqueue writes msg in tx and returns its event id. The event is published only if tx commits.
func (o *Outbox) Enqueue(ctx context.Context, tx *sql.Tx, msg Message) (string, error) {
	if msg.Topic == "" {
		return "", errors.New("outbox: empty topic")
	}
	if msg.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return "", fmt.Errorf("outbox event id: %w", err)
		}
		msg.ID = id.String()
	}
	headers := make(map[string]string, len(msg.Headers)+2)
	for k, v := range msg.Headers {
		headers[k] = v
	}
	if o.prop != nil {
		o.prop.Inject(ctx, propagation.MapCarrier(headers))
	}
	h, err := json.Marshal(headers)
	if err != nil {
		return "", fmt.Errorf("outbox headers: %w", err)
	}
	if msg.Payload == nil {
		msg.Payload = []byte{}
	}
	if _, err := tx.ExecContext(ctx, o.insert, msg.ID, msg.Topic, msg.Key, msg.Payload, string(h),
		time.Now().UTC()); err != nil {
		return "", fmt.Errorf("outbox insert %s: %w", msg.Topic, err)
	}
	return msg.ID, nil
}
