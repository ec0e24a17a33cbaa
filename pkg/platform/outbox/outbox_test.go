package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func setup(t testing.TB, dsn string) (*sql.DB, sqldb.Dialect) {
	t.Helper()
	d, err := sqldb.ParseDialect(dsn)
	if err != nil {
		t.Fatal(err)
	}
	src, err := outbox.Migrations(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.Up(testCtx(t, 30*time.Second), dsn, src, migrate.Options{Table: outbox.MigrationsTable}); err != nil {
		t.Fatal(err)
	}
	return sqldbtest.Open(t, dsn)
}

// recorder is a Publisher that keeps what it was given, optionally failing the first calls.
type recorder struct {
	mu    sync.Mutex
	msgs  []outbox.Message
	fails int
	// refuse makes a message with this topic a Permanent failure, after the messages before it.
	refuse string
}

func (r *recorder) Publish(_ context.Context, msgs []outbox.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fails > 0 {
		r.fails--
		return errors.New("broker down")
	}
	for i, m := range msgs {
		if r.refuse != "" && m.Topic == r.refuse {
			return &outbox.PublishError{Index: i, Kind: outbox.Permanent, Err: errors.New("refused")}
		}
		r.msgs = append(r.msgs, m)
	}
	return nil
}

func (r *recorder) got() []outbox.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]outbox.Message(nil), r.msgs...)
}

func enqueue(t *testing.T, ctx context.Context, db *sql.DB, ob *outbox.Outbox, msgs ...outbox.Message) []string {
	t.Helper()
	var ids []string
	if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
		for _, m := range msgs {
			id, err := ob.Enqueue(ctx, tx, m)
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestEnqueueAndRelay(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db, d := setup(t, b.DSN(t))
			ctx := testCtx(t, 30*time.Second)
			ob := outbox.New(d, propagation.TraceContext{})
			sc := trace.NewSpanContext(trace.SpanContextConfig{
				TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
				SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
				TraceFlags: trace.FlagsSampled,
			})
			tctx := trace.ContextWithSpanContext(ctx, sc)
			ids := enqueue(t, tctx, db, ob,
				outbox.Message{Topic: "orders", Key: "o1", Payload: []byte("a"), Headers: map[string]string{"type": "placed"}},
				outbox.Message{Topic: "orders", Key: "o1", Payload: []byte("b")})
			// A rolled-back transaction's event is never published.
			_ = sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
				if _, err := ob.Enqueue(ctx, tx, outbox.Message{Topic: "orders", Key: "o2"}); err != nil {
					return err
				}
				return errors.New("abort")
			})
			rec := &recorder{}
			relay, err := outbox.NewRelay(db, rec, discard(), nil, outbox.RelayConfig{})
			if err != nil {
				t.Fatal(err)
			}
			st, err := relay.Stats(ctx)
			if err != nil || st.Pending != 2 {
				t.Fatalf("stats before = %+v, %v", st, err)
			}
			if n, err := relay.RelayOnce(ctx); err != nil || n != 2 {
				t.Fatalf("RelayOnce = %d, %v; want 2", n, err)
			}
			if n, err := relay.RelayOnce(ctx); err != nil || n != 0 {
				t.Fatalf("second RelayOnce = %d, %v; want 0", n, err)
			}
			got := rec.got()
			if len(got) != 2 || got[0].ID != ids[0] || got[1].ID != ids[1] {
				t.Fatalf("published %+v, want ids %v in order", got, ids)
			}
			m := got[0]
			if string(m.Payload) != "a" || m.Key != "o1" || m.Topic != "orders" || m.Headers["type"] != "placed" ||
				m.Headers["traceparent"] != "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01" || m.CreatedAt.IsZero() {
				t.Fatalf("published message = %+v", m)
			}
			if st, err := relay.Stats(ctx); err != nil || st.Pending != 0 || st.OldestAge != 0 {
				t.Fatalf("stats after = %+v, %v", st, err)
			}
		})
	}
}

func TestRelayRetriesAndMetrics(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db, d := setup(t, b.DSN(t))
			ctx := testCtx(t, 30*time.Second)
			ob := outbox.New(d, nil)
			for i := range 5 {
				enqueue(t, ctx, db, ob, outbox.Message{Topic: "t", Key: fmt.Sprint(i)})
			}
			reg := prometheus.NewRegistry()
			rec := &recorder{fails: 2}
			relay, err := outbox.NewRelay(db, rec, discard(), reg, outbox.RelayConfig{
				PollInterval: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, StatsInterval: time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			// A second relay on the same registry shares the gauges instead of failing.
			if _, err := outbox.NewRelay(db, rec, discard(), reg, outbox.RelayConfig{}); err != nil {
				t.Fatal(err)
			}
			st, err := relay.Stats(ctx)
			if err != nil || st.Pending != 5 || st.OldestAge <= 0 {
				t.Fatalf("stats = %+v, %v", st, err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- relay.Run(runCtx) }()
			waitFor(t, ctx, func() bool { return len(rec.got()) == 5 })
			relay.Notify()
			waitFor(t, ctx, func() bool {
				return testutil.ToFloat64(mustGauge(t, reg, "shopmesh_outbox_pending_events")) == 0
			})
			stop()
			if err := <-done; err != nil {
				t.Fatalf("Run = %v", err)
			}
			n, err := testutil.GatherAndCount(reg)
			if err != nil || n != 6 { // pending, oldest, parked, published, errors, parks; destination="default"
				t.Fatalf("metrics = %d, %v", n, err)
			}
		})
	}
}

func mustGauge(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return gathered{reg: reg, name: name}
}

// gathered exposes one metric of a registry as a collector for testutil.ToFloat64.
type gathered struct {
	reg  *prometheus.Registry
	name string
}

func (g gathered) Describe(ch chan<- *prometheus.Desc) {}

func (g gathered) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.GaugeValue, m.GetGauge().GetValue())
		}
	}
}

func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before the deadline")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A transaction that took its seq early and commits late is still published: a cursor over seq would
// skip it, the pending-status claim does not.
func TestHeldTransactionIsNotSkipped(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			if b.Name == "sqlite" {
				t.Skip("cannot happen on SQLite: the held transaction owns the single write lock, so no later " +
					"row commits before it and seq order is commit order")
			}
			db, d := setup(t, b.DSN(t))
			ctx := testCtx(t, 30*time.Second)
			ob := outbox.New(d, nil)
			held, err := db.BeginTx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			heldID, err := ob.Enqueue(ctx, held, outbox.Message{Topic: "t", Key: "held"})
			if err != nil {
				t.Fatal(err)
			}
			later := enqueue(t, ctx, db, ob,
				outbox.Message{Topic: "t", Key: "a"}, outbox.Message{Topic: "t", Key: "b"})
			rec := &recorder{}
			relay, err := outbox.NewRelay(db, rec, discard(), nil, outbox.RelayConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := relay.RelayOnce(ctx); err != nil || n != 2 {
				t.Fatalf("RelayOnce while held = %d, %v; want the 2 later rows", n, err)
			}
			if err := held.Commit(); err != nil {
				t.Fatal(err)
			}
			if n, err := relay.RelayOnce(ctx); err != nil || n != 1 {
				t.Fatalf("RelayOnce after commit = %d, %v; want the held row", n, err)
			}
			got := rec.got()
			want := []string{later[0], later[1], heldID}
			for i, m := range got {
				if m.ID != want[i] {
					t.Fatalf("published %v, want %v", ids(got), want)
				}
			}
		})
	}
}

func ids(msgs []outbox.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// slow is a Publisher that takes its time, so that concurrent relays overlap.
type slow struct{ recorder }

func (s *slow) Publish(ctx context.Context, msgs []outbox.Message) error {
	time.Sleep(2 * time.Millisecond)
	return s.recorder.Publish(ctx, msgs)
}

// Three relays drain one table at once: every event is published once, and each aggregate's events
// come out in the order they were written.
func TestConcurrentRelaysKeepPerKeyOrder(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	db, d := setup(t, dsn)
	ctx := testCtx(t, 60*time.Second)
	ob := outbox.New(d, nil)
	const keys, perKey = 10, 30
	want := map[string][]string{}
	for i := range perKey {
		for k := range keys {
			key := fmt.Sprint("agg-", k)
			id := enqueue(t, ctx, db, ob, outbox.Message{Topic: "t", Key: key, Payload: []byte(fmt.Sprint(i))})[0]
			want[key] = append(want[key], id)
		}
	}
	pub := &slow{}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 3 {
		relay, err := outbox.NewRelay(db, pub, discard(), nil, outbox.RelayConfig{BatchSize: 7, PollInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { _ = relay.Run(runCtx) })
	}
	waitFor(t, ctx, func() bool { return len(pub.got()) >= keys*perKey })
	stop()
	wg.Wait()
	got := map[string][]string{}
	seen := map[string]bool{}
	for _, m := range pub.got() {
		if seen[m.ID] {
			t.Errorf("event %s published twice without a failure", m.ID)
		}
		seen[m.ID] = true
		got[m.Key] = append(got[m.Key], m.ID)
	}
	for key, w := range want {
		if fmt.Sprint(got[key]) != fmt.Sprint(w) {
			t.Fatalf("key %s published out of order:\n got %v\nwant %v", key, got[key], w)
		}
	}
}

func TestEnqueueAllWritesEveryMessageInOrder(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db, d := setup(t, b.DSN(t))
			ctx := testCtx(t, 30*time.Second)
			ob := outbox.New(d, nil)
			// 250 messages: two full INSERT chunks and a partial one, keys interleaved.
			msgs := make([]outbox.Message, 250)
			for i := range msgs {
				msgs[i] = outbox.Message{Topic: "stock", Key: fmt.Sprintf("k%d", i%7), Payload: fmt.Appendf(nil, "%d", i)}
			}
			msgs[3].ID = "caller-chosen-id"
			var ids []string
			if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
				var err error
				ids, err = ob.EnqueueAll(ctx, tx, msgs...)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if len(ids) != len(msgs) || ids[3] != "caller-chosen-id" {
				t.Fatalf("ids: %d returned, ids[3] = %q", len(ids), ids[3])
			}
			// A rolled-back batch writes nothing; an empty topic is refused before anything is written.
			_ = sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
				if _, err := ob.EnqueueAll(ctx, tx, outbox.Message{Topic: "stock"}, outbox.Message{Topic: "stock"}); err != nil {
					return err
				}
				return errors.New("abort")
			})
			if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
				_, err := ob.EnqueueAll(ctx, tx, outbox.Message{Topic: "stock"}, outbox.Message{})
				return err
			}); err == nil {
				t.Fatal("EnqueueAll with an empty topic: no error")
			}
			rec := &recorder{}
			relay, err := outbox.NewRelay(db, rec, discard(), nil, outbox.RelayConfig{BatchSize: 64})
			if err != nil {
				t.Fatal(err)
			}
			for {
				n, err := relay.RelayOnce(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
			got := rec.got()
			if len(got) != len(msgs) {
				t.Fatalf("published %d, want %d", len(got), len(msgs))
			}
			for i, m := range got {
				if m.ID != ids[i] || string(m.Payload) != fmt.Sprint(i) || m.Key != msgs[i].Key {
					t.Fatalf("published[%d] = %s %q key %s; want %s %d key %s", i, m.ID, m.Payload, m.Key, ids[i], i, msgs[i].Key)
				}
			}
		})
	}
}

// A row is deleted in the transaction that records its last destination's acknowledgement: with one
// destination at once; with two, it stays (pending on the other only) until that one has it too, and
// then nothing is left. A row one destination refuses stays, parked, and goes once unparked and sent.
func TestSentRowsAreDeleted(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db, d := setup(t, b.DSN(t))
			ctx := testCtx(t, 30*time.Second)
			ob := outbox.New(d, nil)
			rows := func() int {
				t.Helper()
				var n int
				if err := db.QueryRowContext(ctx, "SELECT count(*) FROM outbox").Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}

			enqueue(t, ctx, db, ob, outbox.Message{Topic: "t", Key: "a"}, outbox.Message{Topic: "t", Key: "b"})
			one, err := outbox.NewRelay(db, &recorder{}, discard(), nil, outbox.RelayConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := one.RelayOnce(ctx); err != nil || n != 2 {
				t.Fatalf("one destination: RelayOnce = %d, %v; want 2", n, err)
			}
			if n := rows(); n != 0 {
				t.Fatalf("one destination: %d rows left after sending, want 0", n)
			}

			ids := enqueue(t, ctx, db, ob, outbox.Message{Topic: "t", Key: "a"}, outbox.Message{Topic: "t", Key: "b"},
				outbox.Message{Topic: "t", Key: "c"})
			k, n := &recorder{}, &recorder{fails: 1}
			two, err := outbox.NewRelay(db, outbox.Fanout{
				{Lane: 0, Name: "kafka", Publisher: k},
				{Lane: 1, Name: "nats", Publisher: n, Route: func(m outbox.Message) (outbox.Message, bool) {
					if m.Key == "c" {
						m.Topic = "bad subject" // refused below: parked on this lane only
					}
					return m, true
				}},
			}, discard(), nil, outbox.RelayConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := two.RelayOnce(ctx); err == nil {
				t.Fatal("RelayOnce with nats down: no error")
			}
			if got := rows(); got != 3 {
				t.Fatalf("kafka done, nats down: %d rows, want 3", got)
			}
			if st, err := two.Stats(ctx); err != nil || st.Destinations[0].Pending != 0 || st.Destinations[1].Pending != 3 {
				t.Fatalf("stats with nats down = %+v, %v", st, err)
			}
			n.refuse = "bad subject"
			if _, err := two.RelayOnce(ctx); err == nil {
				t.Fatal("RelayOnce with a refused row: no error")
			}
			if got := rows(); got != 1 {
				t.Fatalf("after nats sent 2 and parked 1: %d rows, want the parked one", got)
			}
			if len(k.got()) != 3 || len(n.got()) != 2 {
				t.Fatalf("kafka got %d, nats %d; want 3 and 2, each once", len(k.got()), len(n.got()))
			}
			n.refuse = ""
			if got, err := outbox.Unpark(ctx, db, ids[2]); err != nil || got != 1 {
				t.Fatalf("Unpark = %d, %v", got, err)
			}
			if got, err := two.RelayOnce(ctx); err != nil || got != 1 {
				t.Fatalf("RelayOnce after unpark = %d, %v; want 1", got, err)
			}
			if got := rows(); got != 0 {
				t.Fatalf("%d rows left, want 0", got)
			}
			if len(k.got()) != 3 || len(n.got()) != 3 {
				t.Fatalf("kafka got %d, nats %d; want 3 each", len(k.got()), len(n.got()))
			}
		})
	}
}

// A store's own statement writes its events with Prepare and InsertSQL: only when its condition holds,
// in the order given, and the relay publishes them as EnqueueAll's (ids, headers with the trace context,
// payloads).
func TestInsertSQLWritesEventsInTheCallersStatement(t *testing.T) {
	t.Parallel()
	db, d := setup(t, sqldbtest.Postgres(t))
	ctx := testCtx(t, 30*time.Second)
	if _, err := db.ExecContext(ctx, `CREATE TABLE agg (id TEXT PRIMARY KEY, v INT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO agg VALUES ('a', 0)`); err != nil {
		t.Fatal(err)
	}
	ob := outbox.New(d, propagation.TraceContext{})
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:  trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled,
	})
	tctx := trace.ContextWithSpanContext(ctx, sc)
	bump := func(id string, msgs ...outbox.Message) (outbox.Rows, int64) {
		t.Helper()
		rows, err := ob.Prepare(tctx, msgs...)
		if err != nil {
			t.Fatal(err)
		}
		ins, args := rows.InsertSQL(2, "EXISTS (SELECT 1 FROM upd)")
		res, err := db.ExecContext(ctx, `WITH upd AS (UPDATE agg SET v = v + 1 WHERE id = $1 RETURNING id) `+ins,
			append([]any{id}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			t.Fatal(err)
		}
		return rows, n
	}
	written, n := bump("a",
		outbox.Message{Topic: "agg", Key: "a", Payload: []byte("one"), Headers: map[string]string{"type": "bumped"}},
		outbox.Message{Topic: "agg", Key: "a", Payload: nil, ID: "caller-chosen"})
	if n != 2 || written.IDs[1] != "caller-chosen" {
		t.Fatalf("rows written = %d, ids %v", n, written.IDs)
	}
	if _, n := bump("missing", outbox.Message{Topic: "agg", Key: "missing"}); n != 0 {
		t.Fatalf("an UPDATE matching nothing wrote %d events", n)
	}
	if _, err := ob.Prepare(ctx, outbox.Message{Key: "a"}); err == nil {
		t.Fatal("Prepare with an empty topic: no error")
	}
	rec := &recorder{}
	relay, err := outbox.NewRelay(db, rec, discard(), nil, outbox.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := relay.RelayOnce(ctx); err != nil || n != 2 {
		t.Fatalf("RelayOnce = %d, %v; want 2", n, err)
	}
	got := rec.got()
	if len(got) != 2 || got[0].ID != written.IDs[0] || got[1].ID != "caller-chosen" {
		t.Fatalf("published %+v, want ids %v in order", got, written.IDs)
	}
	if m := got[0]; string(m.Payload) != "one" || m.Headers["type"] != "bumped" || m.Topic != "agg" ||
		m.Headers["traceparent"] != "00-0102030405060708090a0b0c0d0e0f10-0102030405060708-01" || m.CreatedAt.IsZero() {
		t.Fatalf("published message = %+v", m)
	}
	if len(got[1].Payload) != 0 {
		t.Fatalf("nil payload published as %q", got[1].Payload)
	}
}
