// Package outbox publishes domain events exactly when the state change that caused them commits: the
// event is written as a row in the caller's transaction (Enqueue) and a Relay later delivers pending
// rows to its destinations — Kafka and/or JetStream — and deletes each row once every destination has
// it. Delivery is at least once — a relay that dies between publishing and recording re-sends the
// batch — so consumers de-duplicate by event id (inbox).
//
// # One row per event, one lane per destination
//
// A Relay built on a Router (Brokers, Fanout, or a service's own) gives each Destination a lane: its
// own claim, batch, backoff, parking and metrics, and its own bit in the row's done and parked columns.
// Every row goes to every lane; a lane's Route picks the rows it sends (and may rewrite topic or
// subject: Brokers derives a row's JetStream copy from its Kafka event), the others count as done for
// it. The lane that completes a row — every lane of the relay done — deletes it in the transaction
// that records the acknowledgement, so the table holds only what some destination still has to send
// (and parked rows). So a NATS outage leaves the Kafka lane delivering — and the reverse — and the
// lagging lane catches up, in order, when its broker returns. A plain Publisher is one lane, "default".
//
// # The delivery contract
//
// Each event reaches each of its destinations at least once, with the event id it was written with
// (Kafka header event-id, JetStream Nats-Msg-Id and event-id): a lane records a row as done only after
// its broker acknowledged it, and the row is deleted only when every lane has recorded it. A failure
// re-sends only on the lane that failed: the messages of a batch the broker acknowledged before the
// failure (PublishError.Index) are recorded and not sent again; the rest of the batch, and a whole
// batch whose recording did not commit (relay killed, database down, PublishTimeout), are sent again
// on that lane only. So a failure costs a destination at most one more copy of each event it
// re-sends, and the other destinations none (beyond the broker client's own retries inside one
// publish: kafka-go has no idempotent producer). JetStream drops a repeat inside the stream's
// Duplicates window (2 min in shopmesh's streams); every consumer drops the rest through its inbox.
// Nothing is lost: a row stays until its last lane commits.
// Order: on each lane, one aggregate's (key's) events are published in the order they were written;
// the exception is a broker refusing one message of an asynchronous JetStream batch while it accepts
// later ones (below).
//
// # Claiming: a status per lane, one relay per lane at a time
//
// A lane's pending rows are those with its done and parked bits clear (a partial index per lane; the
// index's sent_at IS NULL is left from relays that kept sent rows, and their rows are deleted by the
// housekeeping), read in seq order. This needs no offsets table and never skips a row of a transaction
// still in flight: seq is taken at INSERT, so an open transaction keeps a low seq invisible while later
// rows commit; a reader that remembered "last seq seen" would step over it for ever. Here the row
// simply is not visible yet, stays pending, and the next claim after its commit picks it up.
//
// On PostgreSQL one relay at a time delivers a lane: it holds a session-level advisory lock on (schema,
// lane) — pg_try_advisory_lock, on a connection of its own — taken in a statement before its claim, so
// the claim's snapshot sees everything the previous holder recorded: per-key order holds across relays
// and none re-sends what another recorded. The holder keeps the lane while its claims find rows,
// claiming again every RelayConfig.MinInterval, notified or not (the rows other replicas commit are
// its to send, and their Notify does not reach it), and lets go (pg_advisory_unlock) at the first
// claim that finds nothing, after a failure and when it stops; the others try again at their poll
// interval or on a Notify, at most every 10 MinIntervals. A batch that went through is recorded by the
// statement that claims the next one (a data-modifying WITH before the claim's SELECT), or, when no
// claim follows, before the lane is let go; so a busy lane costs one autocommit statement per batch and
// no transaction (recording a failure or a park takes one, at once). A relay that dies leaves its lock to the server, which ends it with the session once
// any statement still running there is over, and another relay takes the lane over (the rows not yet
// recorded are re-sent: at least once). The session lock and the transaction-level lock that relays
// took per batch before (pg_try_advisory_xact_lock) exclude each other, so both kinds can run during
// a rolling upgrade. The lanes of one relay, and of several, run in parallel. Writers of one aggregate
// serialize on its row, so seq order is their commit order and a lane publishes each key in order.
// Lanes lock the rows they record in seq order (FOR UPDATE in seq order), so two lanes never deadlock,
// and the lane that finds the other lanes' bits set deletes the row. The cost is a connection per busy
// lane; a replica's relay is a standby for the lanes another replica's relay is running. Records name
// their rows in one array parameter (seq = ANY($1)), one statement text whatever the batch's size.
// (Before lanes, relays shared one lane
// through FOR UPDATE SKIP LOCKED row locks; with one row per event and several destinations those
// locks would make one destination's slow publish hold back the others.)
//
// # Poison rows are parked, and their key waits
//
// A Publisher reports a failed message with a *PublishError: Permanent (the message can never be
// sent: too large, invalid topic or subject, undecodable row), Retryable (it may be the message), or
// Transient (the broker: unreachable, timeouts, no leader — retried with backoff for as long as it
// takes, never parked). A Permanent row, or a Retryable one that failed RelayConfig.MaxAttempts times
// (default 20), is parked on that lane: its parked bit is set, outbox_failures keeps the attempts and
// the last error, an error is logged with the row's seq, event id, destination and error, and
// shopmesh_outbox_parked_rows{destination} / shopmesh_outbox_parked_total{destination} count it. The
// later rows of the same key on that lane are not published past it: they wait (counted as pending,
// so the lag gauges grow too) until the row is unparked, because a consumer applying OrderConfirmed
// before the OrderCreated it depends on, or a money event out of order, is worse than a delay. Other
// keys, and the same key on other lanes, go on. Operators list parked rows with ListParked, fix the
// cause (topic, size limit, subject) and call Unpark(ctx, db, eventIDs...): the row and then its
// key's waiting rows are delivered in order. Per message acknowledgements mean that a broker-side
// refusal of one message in an asynchronous JetStream batch can let a later message of its key through
// before it; the Kafka and JetStream publishers check size and subject before sending so that the
// common poison rows never get that far.
//
// # JetStream throughput
//
// The JetStream publisher sends a batch asynchronously with at most a window of acknowledgements
// outstanding (DefaultJetStreamWindow, WithWindow) and waits for them in order. With sync_interval:
// always the server fsyncs every message, one stream at a time: a stream stores at most 1/fsync
// messages per second whatever the client does, and the relay reaches that ceiling (docs/BENCHMARKS.md
// (d)). Messages for several streams in one batch are stored and fsynced in parallel.
//
// # SQLite
//
// SQLite has one writer: a transaction holding an outbox row holds the database's write lock, so no
// later row can commit before it and seq order is commit order — a held row cannot be overtaken. A
// lane reads pending rows, publishes outside any transaction (so the service's writes are not blocked
// by the broker) and records them (deleting the complete ones) in a short write. Two relays on one SQLite file both publish the same
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
	"strconv"
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
	rows, err := o.Prepare(ctx, msgs...)
	if err != nil {
		return nil, err
	}
	for start := 0; start < len(rows.IDs); start += enqueueChunk {
		end := min(start+enqueueChunk, len(rows.IDs))
		args := make([]any, 0, 6*(end-start))
		for i := start; i < end; i++ {
			args = append(args, rows.IDs[i], rows.Topics[i], rows.Keys[i], rows.Payloads[i], rows.Headers[i], rows.CreatedAt)
		}
		if _, err := tx.ExecContext(ctx, o.insertN(end-start), args...); err != nil {
			return nil, fmt.Errorf("outbox insert %s: %w", rows.Topics[start], err)
		}
	}
	return rows.IDs, nil
}

// Rows are events ready to be written, column by column, as EnqueueAll writes them: for a store that
// writes its events in the same SQL statement as the state change that causes them (see InsertSQL).
type Rows struct {
	IDs, Topics, Keys []string
	Payloads          [][]byte
	// Headers are the JSON-encoded headers, the trace context included.
	Headers   []string
	CreatedAt time.Time
}

// Prepare turns msgs into Rows: event ids (UUIDv7 where empty), the trace context of ctx injected into
// the headers, the creation time. It writes nothing.
func (o *Outbox) Prepare(ctx context.Context, msgs ...Message) (Rows, error) {
	n := len(msgs)
	r := Rows{IDs: make([]string, 0, n), Topics: make([]string, 0, n), Keys: make([]string, 0, n),
		Payloads: make([][]byte, 0, n), Headers: make([]string, 0, n), CreatedAt: time.Now().UTC()}
	for _, msg := range msgs {
		if msg.Topic == "" {
			return Rows{}, errors.New("outbox: empty topic")
		}
		if msg.ID == "" {
			id, err := uuid.NewV7()
			if err != nil {
				return Rows{}, fmt.Errorf("outbox event id: %w", err)
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
			return Rows{}, fmt.Errorf("outbox headers: %w", err)
		}
		if msg.Payload == nil {
			msg.Payload = []byte{}
		}
		r.IDs, r.Topics, r.Keys = append(r.IDs, msg.ID), append(r.Topics, msg.Topic), append(r.Keys, msg.Key)
		r.Payloads, r.Headers = append(r.Payloads, msg.Payload), append(r.Headers, string(h))
	}
	return r, nil
}

// InsertSQL is, on PostgreSQL only, an INSERT of r for a store's own statement — typically the last
// part of a data-modifying WITH, so that the state change and its events are one statement, one round
// trip and (in autocommit) one transaction. Its parameters are numbered from first ($first…$first+5);
// args are their values, to append after the statement's own. when is a SQL condition deciding whether
// the rows are written at all ("true", or e.g. "EXISTS (SELECT 1 FROM upd)" to write them only when the
// statement's UPDATE matched).
//
// Per-key order: the relay publishes a key's rows in seq order, and seq is taken when a row is
// inserted, so a statement that changes an aggregate must take the aggregate's row lock BEFORE its
// outbox rows get their seq. Make when depend on the CTE that locks (as the EXISTS example does): the
// rows are then produced, and numbered, only after that CTE has run, and writers of one aggregate
// serialize on its row as they do with EnqueueAll after their UPDATE.
func (r Rows) InsertSQL(first int, when string) (string, []any) {
	p := func(i int) string { return "$" + strconv.Itoa(first+i) }
	q := "INSERT INTO outbox (event_id, topic, msg_key, payload, headers, created_at) " +
		"SELECT e.event_id, e.topic, e.msg_key, e.payload, e.headers::jsonb, " + p(5) + "::timestamptz " +
		"FROM unnest(" + p(0) + "::text[], " + p(1) + "::text[], " + p(2) + "::text[], " + p(3) + "::bytea[], " + p(4) + "::text[]) " +
		"WITH ORDINALITY AS e(event_id, topic, msg_key, payload, headers, n) WHERE " + when + " ORDER BY e.n"
	return q, []any{r.IDs, r.Topics, r.Keys, r.Payloads, r.Headers, r.CreatedAt}
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
