package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// Publisher sends a batch of events, in order, and returns only once the broker has them all, or an
// error: a *PublishError says how far the batch got and whose fault the failure is; any other error
// means the whole batch is sent again later.
type Publisher interface {
	Publish(ctx context.Context, msgs []Message) error
}

// RelayConfig tunes a Relay. The zero value gets the defaults.
type RelayConfig struct {
	// BatchSize is the most rows claimed and published at once per destination (default 500: with a
	// broker round trip per batch, 100 drained a backlog at ~10k events/s to a real Kafka and 500 at
	// ~21k, docs/BENCHMARKS.md; a failed batch is retried, and consumers drop the repeats through their
	// inbox).
	BatchSize int
	// PollInterval is how often the table is looked at when nobody calls Notify (default 200 ms).
	PollInterval time.Duration
	// PublishTimeout bounds one batch: claim, publish, mark (default 15 s).
	PublishTimeout time.Duration
	// MaxBackoff caps the wait after a failed batch (default 5 s).
	MaxBackoff time.Duration
	// StatsInterval is how often the lag gauges are refreshed (default 5 s).
	StatsInterval time.Duration
	// MaxAttempts parks a row after this many Retryable failures on one destination (default 20).
	// Transient failures (broker unreachable, timeouts, no leader) never count; Permanent ones park at
	// once.
	MaxAttempts int
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
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 20
	}
	return c
}

// Stats is the relay's view of its lag.
type Stats struct {
	// Pending counts the (row, destination) pairs not yet delivered, parked ones excepted; with one
	// destination, the rows not yet sent.
	Pending int64
	// OldestAge is how long the oldest pending row has waited on any destination (0 when none).
	OldestAge time.Duration
	// Parked counts the (row, destination) pairs parked.
	Parked int64
	// Destinations breaks the figures down, in lane order.
	Destinations []DestinationStats
}

// DestinationStats is one destination's lag.
type DestinationStats struct {
	Name      string
	Pending   int64
	OldestAge time.Duration
	Parked    int64
}

// Relay moves pending outbox rows to its destinations, each on its own lane. Run one per replica;
// see the package comment.
type Relay struct {
	db      *sql.DB
	dialect sqldb.Dialect
	log     *slog.Logger
	cfg     RelayConfig
	tracer  trace.Tracer // nil: no spans
	prop    propagation.TextMapPropagator
	lanes   []*lane
	metrics *metrics

	purge, purgeFailures string
}

// lane is one destination's relay: its own claim, progress bit, backoff and metrics.
type lane struct {
	Destination
	r      *Relay
	bit    int
	notify chan struct{}

	lock, claim, pending, oldest, parkedCount string

	pendingG, oldestG, parkedG      prometheus.Gauge
	published, errors, parkedEvents prometheus.Counter
}

// NewRelay returns a relay of db's outbox to pub: to each destination on its own lane when pub is a
// Router, else to pub on one lane named "default". reg receives the metrics (nil: none); relays
// sharing a registry share them, as they describe the table, not the relay.
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
		db: db, dialect: d, log: log, cfg: cfg,
		metrics: m,
		prop:    propagation.TraceContext{},
		// Rows are deleted once sent; rows marked sent by an older relay (sent_at, during a rolling
		// upgrade) are deleted here, and failure records whose row is gone.
		purge:         "DELETE FROM outbox WHERE sent_at IS NOT NULL",
		purgeFailures: "DELETE FROM outbox_failures WHERE parked_at IS NULL AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.seq = outbox_failures.seq AND o.sent_at IS NULL)",
	}
	if cfg.TracerProvider != nil {
		r.tracer = cfg.TracerProvider.Tracer("github.com/shopmesh/shopmesh/pkg/platform/outbox")
	}
	dests := []Destination{{Lane: 0, Name: "default", Publisher: pub}}
	if rt, ok := pub.(Router); ok {
		dests = rt.Destinations()
	}
	if err := checkDestinations(dests); err != nil {
		return nil, err
	}
	for _, dest := range dests {
		r.lanes = append(r.lanes, r.newLane(dest))
	}
	return r, nil
}

func checkDestinations(dests []Destination) error {
	if len(dests) == 0 {
		return errors.New("outbox relay: no destinations")
	}
	lanes, names := map[int]bool{}, map[string]bool{}
	for _, d := range dests {
		switch {
		case d.Lane < 0 || d.Lane >= MaxLanes:
			return fmt.Errorf("outbox relay: destination %q: lane %d not in [0, %d)", d.Name, d.Lane, MaxLanes)
		case d.Name == "" || d.Publisher == nil:
			return fmt.Errorf("outbox relay: lane %d needs a name and a publisher", d.Lane)
		case lanes[d.Lane] || names[d.Name]:
			return fmt.Errorf("outbox relay: destination %q (lane %d) given twice", d.Name, d.Lane)
		}
		lanes[d.Lane], names[d.Name] = true, true
	}
	return nil
}

func (r *Relay) newLane(dest Destination) *lane {
	d := r.dialect
	bit := 1 << dest.Lane
	b := strconv.Itoa(bit)
	// The lane's rows: not complete, not done and not parked on this lane. The predicate is written as
	// the lane's partial index is, so that the planner uses it.
	pendingHere := "sent_at IS NULL AND ((done | parked) & " + b + ") = 0"
	const cols = "seq, event_id, topic, msg_key, payload, headers, created_at"
	l := &lane{
		Destination: dest, r: r, bit: bit,
		notify: make(chan struct{}, 1),
		// A row whose key has an earlier row parked on this lane waits behind it (package comment).
		claim: d.Rebind("SELECT " + cols + " FROM outbox o WHERE " + pendingHere + ` AND NOT EXISTS (
			SELECT 1 FROM outbox p WHERE p.msg_key = o.msg_key AND p.parked <> 0 AND (p.parked & ` + b + `) <> 0 AND p.seq < o.seq)
		ORDER BY seq LIMIT ?`),
		pending:     "SELECT count(*) FROM outbox WHERE " + pendingHere,
		oldest:      "SELECT created_at FROM outbox WHERE " + pendingHere + " ORDER BY seq LIMIT 1",
		parkedCount: "SELECT count(*) FROM outbox WHERE parked <> 0 AND (parked & " + b + ") <> 0",
	}
	if d.SkipLocked() {
		// One relay at a time per lane and schema; the lock goes with the transaction, so a relay that
		// dies hands the lane over. The 2×int4 key space is apart from the services' bigint locks.
		l.lock = "SELECT pg_try_advisory_xact_lock(hashtext(coalesce(current_schema(), '') || '.outbox'), " + strconv.Itoa(dest.Lane) + ")"
	}
	m := r.metrics
	l.pendingG = m.pending.WithLabelValues(dest.Name)
	l.oldestG = m.oldest.WithLabelValues(dest.Name)
	l.parkedG = m.parked.WithLabelValues(dest.Name)
	l.published = m.published.WithLabelValues(dest.Name)
	l.errors = m.errors.WithLabelValues(dest.Name)
	l.parkedEvents = m.parks.WithLabelValues(dest.Name)
	return l
}

// all is the done mask of a complete row: every lane of this relay.
func (r *Relay) all() int {
	m := 0
	for _, l := range r.lanes {
		m |= l.bit
	}
	return m
}

// Notify wakes the relay to publish now, typically right after a transaction that enqueued commits.
// It never blocks.
func (r *Relay) Notify() {
	for _, l := range r.lanes {
		select {
		case l.notify <- struct{}{}:
		default:
		}
	}
}

// Run relays until ctx is cancelled, then returns nil: one loop per destination, each with its own
// backoff, and one refreshing the gauges. A batch interrupted by the cancellation is rolled back and
// published again by the next relay to run (at least once).
func (r *Relay) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, l := range r.lanes {
		wg.Go(func() { l.run(ctx) })
	}
	wg.Go(func() {
		t := time.NewTicker(r.cfg.StatsInterval)
		defer t.Stop()
		for {
			r.housekeep(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	wg.Wait()
	return nil
}

func (l *lane) run(ctx context.Context) {
	cfg := l.r.cfg
	backoff := cfg.PollInterval
	for {
		res, err := l.relayBatch(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := cfg.PollInterval
		switch {
		case err != nil && !res.progress():
			l.errors.Inc()
			l.r.log.WarnContext(ctx, "outbox relay batch failed", "destination", l.Name, "err", err, "retry_in", backoff)
			wait = backoff
			backoff = min(2*backoff, cfg.MaxBackoff)
		case err != nil:
			// Part of the batch went through or a row was parked: go on at once with the rest.
			l.errors.Inc()
			l.r.log.WarnContext(ctx, "outbox relay batch partly failed", "destination", l.Name, "err", err)
			wait = 0
		case res.claimed == cfg.BatchSize:
			wait = 0
			backoff = cfg.PollInterval
		default:
			backoff = cfg.PollInterval
		}
		if wait == 0 {
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-l.notify:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// RelayOnce publishes at most one batch per destination and reports how many events it sent. Run
// calls the same step in a loop; it is exported for tools and tests that drain the outbox step by step.
func (r *Relay) RelayOnce(ctx context.Context) (int, error) {
	var (
		n    int
		errs []error
	)
	for _, l := range r.lanes {
		res, err := l.relayBatch(ctx)
		n += res.sent
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", l.Name, err))
		}
	}
	return n, errors.Join(errs...)
}

// row is a claimed outbox row; bad is set when it cannot even be decoded.
type row struct {
	seq int64
	msg Message
	bad error
}

// result is what one batch did.
type result struct {
	claimed int     // rows claimed
	sent    int     // messages the broker acknowledged
	done    []int64 // rows this lane is finished with (sent, or not for it)
	park    []failure
	retry   *failure // a Retryable failure to count
}

func (res result) progress() bool { return len(res.done) > 0 || len(res.park) > 0 }

type failure struct {
	row     row
	err     error
	counted bool // its attempt is already recorded
}

func (l *lane) relayBatch(ctx context.Context) (result, error) {
	r := l.r
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	var (
		res  result
		perr error
	)
	if r.dialect.SkipLocked() {
		err := sqldb.InTx(ctx, r.db, func(tx *sql.Tx) error {
			var mine bool
			if err := tx.QueryRowContext(ctx, l.lock).Scan(&mine); err != nil {
				return fmt.Errorf("lane lock: %w", err)
			}
			if !mine {
				return nil // another relay has this lane now
			}
			rows, err := l.load(ctx, tx)
			if err != nil || len(rows) == 0 {
				return err
			}
			res, perr = l.deliver(ctx, rows)
			return l.record(ctx, tx, &res)
		})
		if err != nil {
			return result{}, err
		}
	} else {
		rows, err := l.load(ctx, r.db)
		if err != nil || len(rows) == 0 {
			return result{}, err
		}
		res, perr = l.deliver(ctx, rows)
		if err := sqldb.InTx(ctx, r.db, func(tx *sql.Tx) error { return l.record(ctx, tx, &res) }); err != nil {
			return result{}, err
		}
	}
	l.published.Add(float64(res.sent))
	for _, f := range res.park {
		l.parkedEvents.Inc()
		r.log.ErrorContext(ctx, "outbox row parked: its key waits on this destination until outbox.Unpark",
			"destination", l.Name, "seq", f.row.seq, "event_id", f.row.msg.ID, "topic", f.row.msg.Topic,
			"key", f.row.msg.Key, "err", f.err)
	}
	return res, perr
}

// deliver routes and publishes a claimed batch and works out what to record. Rows after a failure
// stay pending; so do the rows of a key whose earlier row is parked in this batch.
func (l *lane) deliver(ctx context.Context, rows []row) (result, error) {
	res := result{claimed: len(rows)}
	var (
		out     []Message
		outRows []row
		held    map[string]bool
	)
	for _, rw := range rows {
		switch {
		case held[rw.msg.Key]:
			continue
		case rw.bad != nil:
			res.park = append(res.park, failure{row: rw, err: rw.bad})
			if held == nil {
				held = map[string]bool{}
			}
			held[rw.msg.Key] = true
			continue
		}
		m := rw.msg
		if l.Route != nil {
			var ok bool
			if m, ok = l.Route(m); !ok {
				res.done = append(res.done, rw.seq)
				continue
			}
		}
		out = append(out, m)
		outRows = append(outRows, rw)
	}
	if len(out) == 0 {
		return res, nil
	}
	err := l.publish(ctx, out)
	if err == nil {
		res.sent = len(out)
		for _, rw := range outRows {
			res.done = append(res.done, rw.seq)
		}
		return res, nil
	}
	kind, at := errKind(err)
	if at < 0 || at >= len(out) {
		kind, at = Transient, 0
	}
	res.sent = at
	for _, rw := range outRows[:at] {
		res.done = append(res.done, rw.seq)
	}
	switch kind {
	case Permanent:
		res.park = append(res.park, failure{row: outRows[at], err: err})
	case Retryable:
		res.retry = &failure{row: outRows[at], err: err}
	}
	return res, fmt.Errorf("publish %d events: %w", len(out), err)
}

// publish hands msgs to the lane's publisher, each under a producer span continuing its row's trace.
func (l *lane) publish(ctx context.Context, msgs []Message) error {
	r := l.r
	if r.tracer == nil {
		return l.Publisher.Publish(ctx, msgs)
	}
	spans := make([]trace.Span, 0, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		headers := make(map[string]string, len(m.Headers)+1)
		for k, v := range m.Headers {
			headers[k] = v
		}
		m.Headers = headers
		parent := r.prop.Extract(context.Background(), propagation.MapCarrier(m.Headers))
		sctx, span := r.tracer.Start(parent, m.Topic+" publish",
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(
				attribute.String("messaging.system", l.Name),
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
	err := l.Publisher.Publish(ctx, msgs)
	acked := len(spans)
	if err != nil {
		_, acked = errKind(err)
	}
	for i, span := range spans {
		if i >= acked {
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

func (l *lane) load(ctx context.Context, q querier) ([]row, error) {
	rs, err := q.QueryContext(ctx, l.claim, l.r.cfg.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	defer rs.Close()
	var rows []row
	for rs.Next() {
		var (
			rw      row
			headers []byte
		)
		m := &rw.msg
		if err := rs.Scan(&rw.seq, &m.ID, &m.Topic, &m.Key, &m.Payload, &headers, &m.CreatedAt); err != nil {
			return nil, fmt.Errorf("claim scan: %w", err)
		}
		if err := json.Unmarshal(headers, &m.Headers); err != nil {
			rw.bad = fmt.Errorf("undecodable headers: %w", err)
		}
		rows = append(rows, rw)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("claim: %w", err)
	}
	return rows, nil
}

// record writes a batch's outcome: done rows (deleted once every lane is done), failures, parks.
func (l *lane) record(ctx context.Context, tx *sql.Tx, res *result) error {
	r := l.r
	now := time.Now().UTC()
	if r.dialect.SkipLocked() && (len(res.park) > 0 || res.retry != nil) {
		// Parking writes rows outside the done list: lock them all first, in seq order (see below).
		seqs := slices.Clone(res.done)
		for _, f := range res.park {
			seqs = append(seqs, f.row.seq)
		}
		if res.retry != nil {
			seqs = append(seqs, res.retry.row.seq)
		}
		args := make([]any, len(seqs))
		for i, s := range seqs {
			args[i] = s
		}
		rows, err := tx.QueryContext(ctx, r.dialect.Rebind("SELECT seq FROM outbox WHERE seq IN (?"+
			strings.Repeat(", ?", len(seqs)-1)+") ORDER BY seq FOR UPDATE"), args...)
		if err != nil {
			return fmt.Errorf("lock rows: %w", err)
		}
		for rows.Next() {
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil { //nolint:sqlclosecheck // closed here, its error checked
			return fmt.Errorf("lock rows: %w", err)
		}
	}
	if len(res.done) > 0 {
		if err := l.markDone(ctx, tx, res.done); err != nil {
			return err
		}
	}
	if f := res.retry; f != nil {
		attempts, err := l.fail(ctx, tx, *f, nil)
		if err != nil {
			return err
		}
		if attempts >= r.cfg.MaxAttempts {
			res.park = append(res.park, failure{row: f.row, err: fmt.Errorf("%d attempts: %w", attempts, f.err), counted: true})
			res.retry = nil
		}
	}
	for _, f := range res.park {
		if f.counted {
			if _, err := tx.ExecContext(ctx, r.dialect.Rebind("UPDATE outbox_failures SET parked_at = ? WHERE seq = ? AND lane = ?"),
				now, f.row.seq, l.Lane); err != nil {
				return fmt.Errorf("park %d: %w", f.row.seq, err)
			}
		} else if _, err := l.fail(ctx, tx, f, &now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, r.dialect.Rebind("UPDATE outbox SET parked = parked | "+strconv.Itoa(l.bit)+" WHERE seq = ?"), f.row.seq); err != nil {
			return fmt.Errorf("park %d: %w", f.row.seq, err)
		}
	}
	return nil
}

// markDone records that this lane is finished with the rows seqs: a row every lane of the relay is
// now done with is deleted (the table holds only what some destination still has to send), the others
// get this lane's done bit. One statement on PostgreSQL, two on SQLite (one writer, nothing to race).
func (l *lane) markDone(ctx context.Context, tx *sql.Tx, seqs []int64) error {
	r := l.r
	in := "(?" + strings.Repeat(", ?", len(seqs)-1) + ")"
	args := make([]any, len(seqs))
	for i, s := range seqs {
		args[i] = s
	}
	all, b := r.all(), strconv.Itoa(l.bit)
	if all == l.bit {
		// The only lane: done is complete. (One relay at a time runs a lane; nobody else writes these rows
		// but Unpark, which the delete simply wins or follows.)
		if _, err := tx.ExecContext(ctx, r.dialect.Rebind("DELETE FROM outbox WHERE seq IN "+in), args...); err != nil {
			return fmt.Errorf("delete sent: %w", err)
		}
		return nil
	}
	// complete says whether a row whose done bits are in col is finished once this lane's bit is set.
	complete := func(col string) string {
		return "((" + col + " | " + b + ") & " + strconv.Itoa(all) + ") = " + strconv.Itoa(all)
	}
	if r.dialect.SkipLocked() {
		// Another lane may be marking the same rows: lock them in seq order (two lanes never deadlock) and
		// read their done bits as that lane committed them, then delete the complete rows and mark the
		// rest, in one statement. The lock wait re-reads each row (READ COMMITTED), and so do the DELETE
		// and UPDATE on the rows the other lane changed since this statement's snapshot.
		q := r.dialect.Rebind("WITH l AS (SELECT seq, done FROM outbox WHERE seq IN " + in + " ORDER BY seq FOR UPDATE), " +
			"d AS (DELETE FROM outbox o USING l WHERE o.seq = l.seq AND " + complete("l.done") + ") " +
			"UPDATE outbox o SET done = o.done | " + b + " FROM l WHERE o.seq = l.seq AND NOT " + complete("l.done"))
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("mark sent: %w", err)
		}
		return nil
	}
	del := "DELETE FROM outbox WHERE seq IN " + in + " AND " + complete("done")
	if _, err := tx.ExecContext(ctx, r.dialect.Rebind(del), args...); err != nil {
		return fmt.Errorf("delete sent: %w", err)
	}
	if _, err := tx.ExecContext(ctx, r.dialect.Rebind("UPDATE outbox SET done = done | "+b+" WHERE seq IN "+in), args...); err != nil {
		return fmt.Errorf("mark sent: %w", err)
	}
	return nil
}

// fail counts a failure of f's row on this lane and returns its attempts; parkedAt parks it.
func (l *lane) fail(ctx context.Context, tx *sql.Tx, f failure, parkedAt *time.Time) (int, error) {
	q := l.r.dialect.Rebind(`INSERT INTO outbox_failures (seq, lane, destination, attempts, last_error, failed_at, parked_at)
		VALUES (?, ?, ?, 1, ?, ?, ?)
		ON CONFLICT (seq, lane) DO UPDATE SET attempts = outbox_failures.attempts + 1,
			last_error = excluded.last_error, failed_at = excluded.failed_at, parked_at = excluded.parked_at
		RETURNING attempts`)
	msg := f.err.Error()
	if len(msg) > 2000 {
		msg = msg[:2000]
	}
	var pa any
	if parkedAt != nil {
		pa = *parkedAt
	}
	var attempts int
	if err := tx.QueryRowContext(ctx, q, f.row.seq, l.Lane, l.Name, msg, time.Now().UTC(), pa).Scan(&attempts); err != nil {
		return 0, fmt.Errorf("record failure of %d: %w", f.row.seq, err)
	}
	return attempts, nil
}

// Stats reads the relay's lag from the table.
func (r *Relay) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	for _, l := range r.lanes {
		ds := DestinationStats{Name: l.Name}
		if err := r.db.QueryRowContext(ctx, l.pending).Scan(&ds.Pending); err != nil {
			return Stats{}, fmt.Errorf("outbox pending %s: %w", l.Name, err)
		}
		if err := r.db.QueryRowContext(ctx, l.parkedCount).Scan(&ds.Parked); err != nil {
			return Stats{}, fmt.Errorf("outbox parked %s: %w", l.Name, err)
		}
		if ds.Pending > 0 {
			var oldest time.Time
			switch err := r.db.QueryRowContext(ctx, l.oldest).Scan(&oldest); {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return Stats{}, fmt.Errorf("outbox oldest %s: %w", l.Name, err)
			default:
				ds.OldestAge = max(time.Since(oldest), 0)
			}
		}
		s.Pending += ds.Pending
		s.Parked += ds.Parked
		s.OldestAge = max(s.OldestAge, ds.OldestAge)
		s.Destinations = append(s.Destinations, ds)
	}
	return s, nil
}

func (r *Relay) housekeep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	s, err := r.Stats(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.WarnContext(ctx, "outbox stats", "err", err)
		}
		return
	}
	for i, l := range r.lanes {
		ds := s.Destinations[i]
		l.pendingG.Set(float64(ds.Pending))
		l.oldestG.Set(ds.OldestAge.Seconds())
		l.parkedG.Set(float64(ds.Parked))
	}
	if _, err := r.db.ExecContext(ctx, r.purge); err != nil {
		r.log.WarnContext(ctx, "outbox purge", "err", err)
	}
	if _, err := r.db.ExecContext(ctx, r.purgeFailures); err != nil {
		r.log.WarnContext(ctx, "outbox purge failures", "err", err)
	}
}

type metrics struct {
	pending, oldest, parked  *prometheus.GaugeVec
	published, errors, parks *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	dest := []string{"destination"}
	m := &metrics{
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopmesh_outbox_pending_events", Help: "Outbox rows not yet delivered to a destination (parked ones excepted).",
		}, dest),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopmesh_outbox_oldest_pending_age_seconds", Help: "Age of the oldest outbox row not yet delivered to a destination.",
		}, dest),
		parked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopmesh_outbox_parked_rows", Help: "Outbox rows a destination refused, parked until outbox.Unpark; their keys wait behind them.",
		}, dest),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shopmesh_outbox_published_events_total", Help: "Events the relay published and marked sent.",
		}, dest),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shopmesh_outbox_relay_errors_total", Help: "Relay batches that failed, in whole or in part, and will be retried.",
		}, dest),
		parks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shopmesh_outbox_parked_total", Help: "Outbox rows parked: refused permanently, or failing MaxAttempts times.",
		}, dest),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	for _, g := range []**prometheus.GaugeVec{&m.pending, &m.oldest, &m.parked} {
		if *g, err = register(reg, *g); err != nil {
			return nil, err
		}
	}
	for _, c := range []**prometheus.CounterVec{&m.published, &m.errors, &m.parks} {
		if *c, err = register(reg, *c); err != nil {
			return nil, err
		}
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
