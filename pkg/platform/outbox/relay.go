package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// Publisher sends a batch of events, in order, and returns only once the broker has them all (or an
// error, after which the whole batch is sent again later).
type Publisher interface {
	Publish(ctx context.Context, msgs []Message) error
}

// RelayConfig tunes a Relay. The zero value gets the defaults.
type RelayConfig struct {
	// BatchSize is the most rows claimed and published at once (default 500: with a broker round trip
	// per batch, 100 drained a backlog at ~10k events/s to a real Kafka and 500 at ~21k, docs/BENCHMARKS.md;
	// a failed batch is retried whole, and consumers drop the repeats through their inbox).
	BatchSize int
	// PollInterval is how often the table is looked at when nobody calls Notify (default 200 ms).
	PollInterval time.Duration
	// PublishTimeout bounds one batch: claim, publish, mark (default 15 s).
	PublishTimeout time.Duration
	// MaxBackoff caps the wait after a failed batch (default 5 s).
	MaxBackoff time.Duration
	// StatsInterval is how often the lag gauges are refreshed (default 5 s).
	StatsInterval time.Duration
	// Retention is how long sent rows are kept before the relay deletes them (default 24 h).
	Retention time.Duration
	// TracerProvider, when set, gives every published event a producer span, child of the trace
	// captured by Enqueue (the row's traceparent); the span's context replaces it in the message
	// headers, so the consumer's span hangs under the publish.
	TracerProvider trace.TracerProvider
}

func (c RelayConfig) withDefaults() RelayConfig {
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 200 * time.Millisecond
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 15 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 5 * time.Second
	}
	if c.StatsInterval <= 0 {
		c.StatsInterval = 5 * time.Second
	}
	if c.Retention <= 0 {
		c.Retention = 24 * time.Hour
	}
	return c
}

// Stats is the relay's view of its lag.
type Stats struct {
	// Pending is the number of rows not yet sent.
	Pending int64
	// OldestAge is how long the oldest pending row has waited (0 when none is pending).
	OldestAge time.Duration
}

// Relay moves pending outbox rows to a Publisher. Run one per replica; see the package comment.
type Relay struct {
	db      *sql.DB
	dialect sqldb.Dialect
	pub     Publisher
	log     *slog.Logger
	cfg     RelayConfig
	notify  chan struct{}
	metrics *metrics
	tracer  trace.Tracer // nil: no spans
	prop    propagation.TextMapPropagator

	claim, purge, pending, oldest string
}

// NewRelay returns a relay of db's outbox to pub. reg receives the lag gauges (nil: none); relays
// sharing a registry share the gauges, which describe the table, not the relay.
func NewRelay(db *sql.DB, pub Publisher, log *slog.Logger, reg prometheus.Registerer, cfg RelayConfig) (*Relay, error) {
	d, err := sqldb.DialectOf(db)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &Relay{
		db: db, dialect: d, pub: pub, log: log, cfg: cfg,
		notify:  make(chan struct{}, 1),
		metrics: m,
		prop:    propagation.TraceContext{},
		purge:   d.Rebind("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?"),
		pending: "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
		oldest:  "SELECT created_at FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT 1",
	}
	if cfg.TracerProvider != nil {
		r.tracer = cfg.TracerProvider.Tracer("github.com/shopmesh/shopmesh/pkg/platform/outbox")
	}
	const cols = "seq, event_id, topic, msg_key, payload, headers, created_at"
	if d.SkipLocked() {
		// Rows locked by another relay are skipped; rows whose aggregate has an earlier pending row that
		// this claim does not hold are left for later, to keep per-aggregate order (package comment).
		r.claim = d.Rebind(`WITH claimed AS (
			SELECT ` + cols + ` FROM outbox WHERE sent_at IS NULL
			ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED)
		SELECT ` + cols + ` FROM claimed c
		WHERE NOT EXISTS (
			SELECT 1 FROM outbox o
			WHERE o.msg_key = c.msg_key AND o.sent_at IS NULL AND o.seq < c.seq
			  AND o.seq NOT IN (SELECT seq FROM claimed))
		ORDER BY seq`)
	} else {
		r.claim = d.Rebind("SELECT " + cols + " FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?")
	}
	return r, nil
}

// Notify wakes the relay to publish now, typically right after a transaction that enqueued commits.
// It never blocks.
func (r *Relay) Notify() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// Run relays until ctx is cancelled, then returns nil. A batch interrupted by the cancellation is
// rolled back and published again by the next relay to run (at least once).
func (r *Relay) Run(ctx context.Context) error {
	backoff := r.cfg.PollInterval
	var lastStats time.Time
	for {
		n, err := r.relayBatch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait := r.cfg.PollInterval
		switch {
		case err != nil:
			r.metrics.errors.Inc()
			r.log.WarnContext(ctx, "outbox relay batch failed", "err", err, "retry_in", backoff)
			wait = backoff
			backoff = min(2*backoff, r.cfg.MaxBackoff)
		case n == r.cfg.BatchSize:
			wait = 0
			backoff = r.cfg.PollInterval
		default:
			backoff = r.cfg.PollInterval
		}
		if time.Since(lastStats) >= r.cfg.StatsInterval {
			lastStats = time.Now()
			r.housekeep(ctx)
		}
		if wait == 0 {
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-r.notify:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// RelayOnce publishes at most one batch and reports how many events it sent. Run calls it in a loop;
// it is exported for tools and tests that drain the outbox step by step.
func (r *Relay) RelayOnce(ctx context.Context) (int, error) { return r.relayBatch(ctx) }

func (r *Relay) relayBatch(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	if r.dialect.SkipLocked() {
		var n int
		err := sqldb.InTx(ctx, r.db, func(tx *sql.Tx) error {
			msgs, seqs, err := r.load(ctx, tx)
			if err != nil || len(msgs) == 0 {
				return err
			}
			if err := r.publish(ctx, msgs); err != nil {
				return fmt.Errorf("publish %d events: %w", len(msgs), err)
			}
			n = len(msgs)
			return r.markSent(ctx, tx, seqs)
		})
		if err != nil {
			return 0, err
		}
		r.metrics.published.Add(float64(n))
		return n, nil
	}
	msgs, seqs, err := r.load(ctx, r.db)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	if err := r.publish(ctx, msgs); err != nil {
		return 0, fmt.Errorf("publish %d events: %w", len(msgs), err)
	}
	if err := sqldb.InTx(ctx, r.db, func(tx *sql.Tx) error { return r.markSent(ctx, tx, seqs) }); err != nil {
		return 0, err
	}
	r.metrics.published.Add(float64(len(msgs)))
	return len(msgs), nil
}

// publish hands msgs to the publisher, each under a producer span continuing its row's trace.
func (r *Relay) publish(ctx context.Context, msgs []Message) error {
	if r.tracer == nil {
		return r.pub.Publish(ctx, msgs)
	}
	spans := make([]trace.Span, 0, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		if m.Headers == nil {
			m.Headers = map[string]string{}
		}
		parent := r.prop.Extract(context.Background(), propagation.MapCarrier(m.Headers))
		sctx, span := r.tracer.Start(parent, m.Topic+" publish",
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("messaging.operation.type", "send"),
				attribute.String("messaging.destination.name", m.Topic),
				attribute.String("messaging.message.id", m.ID),
				attribute.String("messaging.kafka.message.key", m.Key),
			))
		if span.SpanContext().IsValid() {
			r.prop.Inject(sctx, propagation.MapCarrier(m.Headers))
		}
		spans = append(spans, span)
	}
	err := r.pub.Publish(ctx, msgs)
	for _, span := range spans {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "publish failed")
		}
		span.End()
	}
	return err
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (r *Relay) load(ctx context.Context, q querier) ([]Message, []int64, error) {
	rows, err := q.QueryContext(ctx, r.claim, r.cfg.BatchSize)
	if err != nil {
		return nil, nil, fmt.Errorf("claim: %w", err)
	}
	defer rows.Close()
	var (
		msgs []Message
		seqs []int64
	)
	for rows.Next() {
		var (
			m       Message
			seq     int64
			headers []byte
		)
		if err := rows.Scan(&seq, &m.ID, &m.Topic, &m.Key, &m.Payload, &headers, &m.CreatedAt); err != nil {
			return nil, nil, fmt.Errorf("claim scan: %w", err)
		}
		if err := json.Unmarshal(headers, &m.Headers); err != nil {
			return nil, nil, fmt.Errorf("claim headers of %s: %w", m.ID, err)
		}
		msgs = append(msgs, m)
		seqs = append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("claim: %w", err)
	}
	return msgs, seqs, nil
}

func (r *Relay) markSent(ctx context.Context, tx *sql.Tx, seqs []int64) error {
	args := make([]any, 0, len(seqs)+1)
	args = append(args, time.Now().UTC())
	for _, s := range seqs {
		args = append(args, s)
	}
	q := r.dialect.Rebind("UPDATE outbox SET sent_at = ? WHERE seq IN (?" + strings.Repeat(", ?", len(seqs)-1) + ")")
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("mark sent: %w", err)
	}
	if n, err := res.RowsAffected(); err == nil && n != int64(len(seqs)) {
		// Only with two relays on one SQLite file: the other marked them first. Already published.
		r.log.DebugContext(ctx, "outbox rows already marked", "want", len(seqs), "got", n)
	}
	return nil
}

// Stats reads the relay's lag from the table.
func (r *Relay) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	if err := r.db.QueryRowContext(ctx, r.pending).Scan(&s.Pending); err != nil {
		return Stats{}, fmt.Errorf("outbox pending: %w", err)
	}
	if s.Pending == 0 {
		return s, nil
	}
	var oldest time.Time
	switch err := r.db.QueryRowContext(ctx, r.oldest).Scan(&oldest); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return Stats{}, fmt.Errorf("outbox oldest: %w", err)
	default:
		s.OldestAge = max(time.Since(oldest), 0)
	}
	return s, nil
}

func (r *Relay) housekeep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	s, err := r.Stats(ctx)
	if err != nil {
		r.log.WarnContext(ctx, "outbox stats", "err", err)
		return
	}
	r.metrics.pending.Set(float64(s.Pending))
	r.metrics.oldest.Set(s.OldestAge.Seconds())
	if _, err := r.db.ExecContext(ctx, r.purge, time.Now().Add(-r.cfg.Retention).UTC()); err != nil {
		r.log.WarnContext(ctx, "outbox purge", "err", err)
	}
}

type metrics struct {
	pending, oldest   prometheus.Gauge
	published, errors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shopmesh_outbox_pending_events", Help: "Outbox rows not yet published.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shopmesh_outbox_oldest_pending_age_seconds", Help: "Age of the oldest unpublished outbox row.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shopmesh_outbox_published_events_total", Help: "Events the relay published and marked sent.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shopmesh_outbox_relay_errors_total", Help: "Relay batches that failed and will be retried.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.pending, err = register(reg, m.pending)
	if err != nil {
		return nil, err
	}
	m.oldest, err = register(reg, m.oldest)
	if err != nil {
		return nil, err
	}
	m.published, err = register(reg, m.published)
	if err != nil {
		return nil, err
	}
	m.errors, err = register(reg, m.errors)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// register returns the collector already registered under c's name, so several relays of one process
// can share a registry.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("outbox metrics: %w", err)
	}
	return c, nil
}
