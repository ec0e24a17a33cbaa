package outbox

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
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
	// MinInterval is the least time between the starts of two batches of one destination, unless the
	// earlier batch was full (default 25 ms; negative: none). Under load the Notify calls of many
	// commits then coalesce into one batch — a claim and a record for many events instead of for each
	// — at the price of up to MinInterval more commit-to-publish latency; an idle destination still
	// claims at once on Notify. On PostgreSQL it is also how often the relay holding a destination
	// looks at the table while rows keep coming (see the package comment).
	MinInterval time.Duration
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
	switch {
	case c.MinInterval == 0:
		c.MinInterval = 25 * time.Millisecond
	case c.MinInterval < 0:
		c.MinInterval = 0
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
	// held is, on PostgreSQL, the connection holding the lane's advisory lock while this relay runs
	// the lane (nil: not held). One goroutine uses it: the lane's loop in Run, or RelayOnce's caller.
	held *sql.Conn
	// unrecorded are, on PostgreSQL, the rows of this relay's last batch on the held lane that it
	// published and has not recorded yet: the next claim records them in the same statement, and
	// release does if no claim comes.
	unrecorded []int64

	lock, unlock, claim, pending, oldest, parkedCount string
	// claimFrom is the claim without its ORDER BY and LIMIT (claimAfterSQL extends it).
	claimFrom string
	// markDone, lockRows, claimAfter and the seqs argument: one statement text whatever the batch's size.
	markDoneSQL, deleteSQL, lockRowsSQL, claimAfterSQL string

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
	for _, l := range r.lanes {
		l.buildRecord()
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
		claimFrom: "SELECT " + cols + " FROM outbox o WHERE " + pendingHere + ` AND NOT EXISTS (
			SELECT 1 FROM outbox p WHERE p.msg_key = o.msg_key AND p.parked <> 0 AND (p.parked & ` + b + `) <> 0 AND p.seq < o.seq)`,
		pending:     "SELECT count(*) FROM outbox WHERE " + pendingHere,
		oldest:      "SELECT created_at FROM outbox WHERE " + pendingHere + " ORDER BY seq LIMIT 1",
		parkedCount: "SELECT count(*) FROM outbox WHERE parked <> 0 AND (parked & " + b + ") <> 0",
	}
	if d.SkipLocked() {
		// One relay at a time per lane and schema: a session lock, held on one connection for as long as
		// the lane has rows (package comment), so a relay that dies hands the lane over with its
		// session. It conflicts with the transaction-level lock of earlier relays on the same key, so
		// both kinds exclude each other during a rolling upgrade. The 2×int4 key space is apart from the
		// services' bigint locks.
		key := "hashtext(coalesce(current_schema(), '') || '.outbox'), " + strconv.Itoa(dest.Lane)
		l.lock = "SELECT pg_try_advisory_lock(" + key + ")"
		l.unlock = "SELECT pg_advisory_unlock(" + key + ")"
	}
	l.claim = d.Rebind(l.claimFrom + " ORDER BY seq LIMIT ?")
	m := r.metrics
	l.pendingG = m.pending.WithLabelValues(dest.Name)
	l.oldestG = m.oldest.WithLabelValues(dest.Name)
	l.parkedG = m.parked.WithLabelValues(dest.Name)
	l.published = m.published.WithLabelValues(dest.Name)
	l.errors = m.errors.WithLabelValues(dest.Name)
	l.parkedEvents = m.parks.WithLabelValues(dest.Name)
	return l
}

// seqIn is the condition "seq is one of the seqs given as one parameter" (seqsArg): one statement text
// whatever the number of rows, for PostgreSQL's plan cache and pg_stat_statements, and SQLite's
// prepared statements.
func (r *Relay) seqIn() string {
	if r.dialect == sqldb.Postgres {
		return "seq = ANY(?::bigint[])"
	}
	return "seq IN (SELECT value FROM json_each(?))"
}

// seqsArg is the parameter of seqIn: a bigint[] on PostgreSQL, a JSON array on SQLite.
func (r *Relay) seqsArg(seqs []int64) any {
	if r.dialect == sqldb.Postgres {
		return seqs
	}
	b := make([]byte, 0, 2+8*len(seqs))
	b = append(b, '[')
	for i, s := range seqs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, s, 10)
	}
	return string(append(b, ']'))
}

// buildRecord writes the lane's recording statements, once every lane of the relay is known.
func (l *lane) buildRecord() {
	r := l.r
	d := r.dialect
	all, b := r.all(), strconv.Itoa(l.bit)
	// complete says whether a row whose done bits are in col is finished once this lane's bit is set.
	complete := func(col string) string {
		return "((" + col + " | " + b + ") & " + strconv.Itoa(all) + ") = " + strconv.Itoa(all)
	}
	l.lockRowsSQL = d.Rebind("SELECT seq FROM outbox WHERE " + r.seqIn() + " ORDER BY seq FOR UPDATE")
	// afterCTEs is the record as WITH items, for claimAfterSQL.
	var afterCTEs string
	switch {
	case all == l.bit:
		// The only lane: done is complete. (One relay at a time runs a lane; nobody else writes these rows
		// but Unpark, which the delete simply wins or follows.)
		del := "DELETE FROM outbox WHERE " + r.seqIn()
		l.markDoneSQL = d.Rebind(del)
		afterCTEs = "rec AS (" + del + ")"
	case d.SkipLocked():
		// Another lane may be marking the same rows: lock them in seq order (two lanes never deadlock) and
		// read their done bits as that lane committed them, then delete the complete rows and mark the
		// rest, in one statement. The lock wait re-reads each row (READ COMMITTED), and so do the DELETE
		// and UPDATE on the rows the other lane changed since this statement's snapshot.
		ctes := "l AS (SELECT seq, done FROM outbox WHERE " + r.seqIn() + " ORDER BY seq FOR UPDATE), " +
			"d AS (DELETE FROM outbox o USING l WHERE o.seq = l.seq AND " + complete("l.done") + ")"
		mark := "UPDATE outbox o SET done = o.done | " + b + " FROM l WHERE o.seq = l.seq AND NOT " + complete("l.done")
		l.markDoneSQL = d.Rebind("WITH " + ctes + " " + mark)
		afterCTEs = ctes + ", rec AS (" + mark + ")"
	default:
		// SQLite: one writer, nothing to race; the rows complete with this lane's bit go, the rest get it.
		l.deleteSQL = "DELETE FROM outbox WHERE " + r.seqIn() + " AND " + complete("done")
		l.markDoneSQL = "UPDATE outbox SET done = done | " + b + " WHERE " + r.seqIn()
	}
	if afterCTEs != "" {
		// The record of the previous batch and the claim of the next, in one statement (batchHeld). The
		// claim reads the snapshot taken before the record's changes, so it leaves those rows out itself.
		// Parameters: the recorded seqs, the same again, the batch size.
		l.claimAfterSQL = d.Rebind("WITH " + afterCTEs + " " + l.claimFrom + " AND NOT (o." + r.seqIn() + ") ORDER BY seq LIMIT ?")
	}
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
	defer l.release(ctx)
	cfg := l.r.cfg
	backoff := cfg.PollInterval
	for {
		started := time.Now()
		res, err := l.relayBatch(ctx)
		if ctx.Err() != nil {
			return
		}
		// The lane sleeps until `until` at the latest; a Notify ends the sleep, but not before earliest:
		// the wake-ups of the commits made meanwhile coalesce into the next batch.
		now := time.Now()
		until, earliest := now.Add(cfg.PollInterval), started.Add(cfg.MinInterval)
		switch {
		case err != nil && !res.progress():
			l.errors.Inc()
			l.r.log.WarnContext(ctx, "outbox relay batch failed", "destination", l.Name, "err", err, "retry_in", backoff)
			until = now.Add(backoff)
			backoff = min(2*backoff, cfg.MaxBackoff)
		case err != nil:
			// Part of the batch went through or a row was parked: go on at once with the rest.
			l.errors.Inc()
			l.r.log.WarnContext(ctx, "outbox relay batch partly failed", "destination", l.Name, "err", err)
			continue
		case res.claimed == cfg.BatchSize:
			backoff = cfg.PollInterval
			continue
		case l.held != nil:
			// This relay holds the lane and rows keep coming: look again after MinInterval, Notify or
			// not — the rows other replicas commit are this relay's to send while it holds the lane, and
			// their Notify does not reach it. The claim that finds nothing releases the lane.
			backoff = cfg.PollInterval
			until = earliest
		case res.busy:
			// Another relay holds the lane and looks at it every MinInterval: a Notify here is for rows it
			// sends anyway. Try again at the poll, or on a Notify, but not before busyRetry MinIntervals —
			// each try is a statement, and it only matters when the holder let go just as this relay
			// tried.
			backoff = cfg.PollInterval
			earliest = started.Add(busyRetry * cfg.MinInterval)
			until = maxTime(until, earliest)
		default:
			backoff = cfg.PollInterval
		}
		if !l.sleep(ctx, until, earliest) {
			return
		}
	}
}

// busyRetry is, in MinIntervals, how soon a relay tries again for a lane another relay holds (100 ms
// by default; later when its PollInterval is longer and no Notify comes).
const busyRetry = 10

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// sleep waits until until, or a Notify after earliest; false when ctx ended.
func (l *lane) sleep(ctx context.Context, until, earliest time.Time) bool {
	d := time.Until(until)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	case <-l.notify:
	}
	if d := time.Until(earliest); d > 0 {
		timer.Reset(min(d, time.Until(until))) // Go ≥ 1.23: no stale value to drain
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
		}
	}
	return true
}

// RelayOnce publishes at most one batch per destination and reports how many events it sent. Run
// calls the same step in a loop; it is exported for tools and tests that drain the outbox step by step
// (not while Run runs). On PostgreSQL each call takes and releases the lanes' locks.
func (r *Relay) RelayOnce(ctx context.Context) (int, error) {
	var (
		n    int
		errs []error
	)
	for _, l := range r.lanes {
		res, err := l.relayBatch(ctx)
		l.release(ctx) // a step: the next one, by this relay or another, takes the lane again
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
	busy    bool     // another relay holds the lane (PostgreSQL)
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
		err  error
	)
	if r.dialect.SkipLocked() {
		res, perr, err = l.batchHeld(ctx)
	} else {
		res, perr, err = l.batchSQLite(ctx)
	}
	if err != nil {
		return result{}, err
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

// batchSQLite reads pending rows, publishes them outside any transaction and records them in a short
// write (package comment).
func (l *lane) batchSQLite(ctx context.Context) (res result, perr, err error) {
	r := l.r
	rows, err := l.load(ctx, r.db, l.claim, r.cfg.BatchSize)
	if err != nil || len(rows) == 0 {
		return result{}, nil, err
	}
	res, perr = l.deliver(ctx, rows)
	if err := sqldb.InTx(ctx, r.db, func(tx *sql.Tx) error { return l.record(ctx, tx, &res) }); err != nil {
		return result{}, nil, err
	}
	return res, perr, nil
}

// batchHeld runs a batch on PostgreSQL under the lane's advisory lock, taking it first when this relay
// does not hold it: claim, publish, record, on the lock's connection. A batch that went through is
// recorded by the statement that claims the next batch (claimAfterSQL), so a busy lane costs one
// autocommit statement per batch; the lane stays held while claims find rows, and a claim that finds
// none lets it go, its batch recorded. A failure records at once, and lets go.
func (l *lane) batchHeld(ctx context.Context) (res result, perr, err error) {
	if l.held == nil {
		mine, err := l.acquire(ctx)
		if err != nil || !mine {
			return result{busy: err == nil}, nil, err
		}
	}
	var rows []row
	if seqs := l.unrecorded; len(seqs) > 0 {
		arg := l.r.seqsArg(seqs)
		rows, err = l.load(ctx, l.held, l.claimAfterSQL, arg, arg, l.r.cfg.BatchSize)
	} else {
		rows, err = l.load(ctx, l.held, l.claim, l.r.cfg.BatchSize)
	}
	// Recorded by that statement; or, when it failed, dropped with the connection: the next holder
	// sends those rows again (at least once, as after a crash between publishing and recording).
	l.unrecorded = nil
	if err != nil {
		l.drop()
		return result{}, nil, err
	}
	if len(rows) == 0 {
		l.release(ctx)
		return result{}, nil, nil
	}
	res, perr = l.deliver(ctx, rows)
	switch {
	case len(res.park) == 0 && res.retry == nil && perr == nil:
		// The next claim records them: within MinInterval while the lane is held (Run), or release.
		l.unrecorded = res.done
	case len(res.park) == 0 && res.retry == nil:
		if len(res.done) > 0 {
			err = l.markDone(ctx, l.held, res.done)
		}
	default:
		// Failures and parks take several statements: one transaction on the lock's connection.
		var tx *sql.Tx
		if tx, err = l.held.BeginTx(ctx, nil); err == nil {
			if err = l.record(ctx, tx, &res); err == nil {
				err = tx.Commit()
			} else {
				_ = tx.Rollback()
			}
		}
	}
	if err != nil {
		l.drop()
		return result{}, nil, fmt.Errorf("record: %w", err)
	}
	if perr != nil {
		// The broker failed: another relay may try the lane while this one backs off.
		l.release(ctx)
	}
	return res, perr, nil
}

// acquire takes the lane's advisory lock on a connection of its own, which holds it until release.
func (l *lane) acquire(ctx context.Context) (bool, error) {
	c, err := l.r.db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("lane lock: %w", err)
	}
	var mine bool
	if err := c.QueryRowContext(ctx, l.lock).Scan(&mine); err != nil {
		discard(c) // the lock's state is unknown: end the session, which ends the lock
		return false, fmt.Errorf("lane lock: %w", err)
	}
	if !mine {
		_ = c.Close()
		return false, nil
	}
	l.held = c
	return true, nil
}

// releaseTimeout bounds the unlock of a lane.
const releaseTimeout = 5 * time.Second

// release lets go of the lane, if held: unlocks it and returns the connection to the pool, or, when
// the unlock fails, closes the connection (the server then ends the session and its lock).
func (l *lane) release(ctx context.Context) {
	c := l.held
	if c == nil {
		return
	}
	l.held = nil
	// Also when ctx has ended (the relay stops): the lock must not go back to the pool with the
	// connection.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if seqs := l.unrecorded; len(seqs) > 0 {
		l.unrecorded = nil
		if err := l.markDone(ctx, c, seqs); err != nil {
			// Not recorded: the next holder sends them again (at least once).
			l.r.log.WarnContext(ctx, "outbox relay: record before letting go of the lane", "destination", l.Name, "err", err)
			discard(c)
			return
		}
	}
	var was bool
	if err := c.QueryRowContext(ctx, l.unlock).Scan(&was); err != nil || !was {
		discard(c)
		return
	}
	_ = c.Close()
}

// drop lets go of the lane after a failed statement: the connection, whose state is unknown, is
// closed, and the server releases the lock with the session once any statement still running on it
// is over — so another relay claims only after this one's last record committed or rolled back.
func (l *lane) drop() {
	l.unrecorded = nil
	if l.held != nil {
		discard(l.held)
		l.held = nil
	}
}

// discard closes c's connection instead of returning it to the pool.
func discard(c *sql.Conn) {
	_ = c.Raw(func(any) error { return driver.ErrBadConn })
	_ = c.Close()
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

func (l *lane) load(ctx context.Context, q querier, query string, args ...any) ([]row, error) {
	rs, err := q.QueryContext(ctx, query, args...)
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
		rows, err := tx.QueryContext(ctx, l.lockRowsSQL, r.seqsArg(seqs))
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
// get this lane's done bit. One statement on PostgreSQL (buildRecord), two on SQLite (one writer,
// nothing to race), whatever the number of rows.
func (l *lane) markDone(ctx context.Context, db execer, seqs []int64) error {
	arg := l.r.seqsArg(seqs)
	if l.deleteSQL != "" {
		if _, err := db.ExecContext(ctx, l.deleteSQL, arg); err != nil {
			return fmt.Errorf("delete sent: %w", err)
		}
	}
	if _, err := db.ExecContext(ctx, l.markDoneSQL, arg); err != nil {
		return fmt.Errorf("mark sent: %w", err)
	}
	return nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
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
