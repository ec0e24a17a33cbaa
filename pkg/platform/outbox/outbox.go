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
	"strings"
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
	d       sqldb.Dialect
	inserts []string // inserts[n-1] writes n rows
	prop    propagation.TextMapPropagator
}

// New returns an Outbox for a dialect. prop, when not nil, injects the trace context of Enqueue's ctx
// (W3C traceparent with propagation.TraceContext{}) into each event's headers, so the consumer's span
// continues the trace of the request that caused the event.
func New(d sqldb.Dialect, prop propagation.TextMapPropagator) *Outbox {
	o := &Outbox{d: d, prop: prop}
	for n := 1; n <= 4; n++ {
		o.inserts = append(o.inserts, buildInsert(d, n))
	}
	return o
}

// Enqueue writes msg in tx and returns its event id. The event is published only if tx commits.
func (o *Outbox) Enqueue(ctx context.Context, tx *sql.Tx, msg Message) (string, error) {
	ids, err := o.EnqueueAll(ctx, tx, msg)
	if err != nil {
		return "", err
	}
	return ids[0], nil
}

// enqueueChunk bounds the rows of one INSERT (6 parameters each; PostgreSQL allows 65,535).
const enqueueChunk = 100

// EnqueueAll writes msgs in tx with one INSERT (per 100 messages) and returns their event ids: one
// database round trip for all the events of a state change. They are published in the order given.
func (o *Outbox) EnqueueAll(ctx context.Context, tx *sql.Tx, msgs ...Message) ([]string, error) {
	ids := make([]string, 0, len(msgs))
	for start := 0; start < len(msgs); start += enqueueChunk {
		part := msgs[start:min(start+enqueueChunk, len(msgs))]
		args := make([]any, 0, 6*len(part))
		now := time.Now().UTC()
		for _, msg := range part {
			if msg.Topic == "" {
				return nil, errors.New("outbox: empty topic")
			}
			if msg.ID == "" {
				id, err := uuid.NewV7()
				if err != nil {
					return nil, fmt.Errorf("outbox event id: %w", err)
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
				return nil, fmt.Errorf("outbox headers: %w", err)
			}
			if msg.Payload == nil {
				msg.Payload = []byte{}
			}
			args = append(args, msg.ID, msg.Topic, msg.Key, msg.Payload, string(h), now)
			ids = append(ids, msg.ID)
		}
		if _, err := tx.ExecContext(ctx, o.insertN(len(part)), args...); err != nil {
			return nil, fmt.Errorf("outbox insert %s: %w", part[0].Topic, err)
		}
	}
	return ids, nil
}

// insertN is the INSERT of n rows; the one- and two-row forms (the common ones) are built once.
func (o *Outbox) insertN(n int) string {
	if n <= len(o.inserts) {
		return o.inserts[n-1]
	}
	return buildInsert(o.d, n)
}

func buildInsert(d sqldb.Dialect, n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO outbox (event_id, topic, msg_key, payload, headers, created_at) VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?)")
	}
	return d.Rebind(b.String())
}
