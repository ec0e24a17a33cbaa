package outbox_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

// The statement that records a batch has one text whatever the number of rows, so PostgreSQL plans it
// once per connection (and pg_stat_statements counts one statement). Before, every batch size was an
// IN list of its own: batches of 1 to 5 rows made 5 statements per lane.
func TestRecordIsOneStatementWhateverTheBatchSize(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	db, d := setup(t, dsn)
	// One connection: the relay's statements are prepared (pgx's statement cache) on the connection
	// pg_prepared_statements is read from.
	db.SetMaxOpenConns(1)
	ctx := testCtx(t, 60*time.Second)
	ob := outbox.New(d, nil)
	a, b := &recorder{}, &recorder{}
	relay, err := outbox.NewRelay(db, outbox.Fanout{{Lane: 0, Name: "a", Publisher: a}, {Lane: 1, Name: "b", Publisher: b}},
		discard(), nil, outbox.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for n := 1; n <= 5; n++ {
		msgs := make([]outbox.Message, n)
		for i := range msgs {
			msgs[i] = outbox.Message{Topic: "t", Key: fmt.Sprint("k", i), Payload: []byte("x")}
		}
		enqueue(t, ctx, db, ob, msgs...)
		total += n
		if sent, err := relay.RelayOnce(ctx); err != nil || sent != 2*n {
			t.Fatalf("RelayOnce after %d rows = %d, %v; want %d", n, sent, err, 2*n)
		}
	}
	if len(a.got()) != total || len(b.got()) != total {
		t.Fatalf("published %d and %d events; want %d each", len(a.got()), len(b.got()), total)
	}
	rows, err := db.QueryContext(ctx, "SELECT statement FROM pg_prepared_statements")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var marks []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(s, "UPDATE outbox o SET done") {
			marks = append(marks, s)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// One per lane (each sets its own bit).
	if len(marks) != 2 {
		t.Fatalf("%d statements recorded the batches of 1 to 5 rows of two lanes; want 2:\n%s", len(marks), strings.Join(marks, "\n"))
	}
}

// blocking is a Publisher that holds its batch until its context ends.
type blocking struct {
	once    sync.Once
	entered chan struct{}
}

func (b *blocking) Publish(ctx context.Context, _ []outbox.Message) error {
	b.once.Do(func() { close(b.entered) })
	<-ctx.Done()
	return ctx.Err()
}

// A relay holds its lane across its batches (one lock for many batches): while it is publishing,
// another relay cannot take the lane; once it stops, the other takes the lane and sends the rows it
// had not recorded; and neither relay's connection pool keeps the lock after it lets go.
func TestLaneIsHeldByOneRelayAndHandedOver(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	db1, d := setup(t, dsn)
	db2, _ := sqldbtest.Open(t, dsn)
	ctx := testCtx(t, 60*time.Second)
	ob := outbox.New(d, nil)
	want := enqueue(t, ctx, db1, ob,
		outbox.Message{Topic: "t", Key: "k", Payload: []byte("1")},
		outbox.Message{Topic: "t", Key: "k", Payload: []byte("2")})

	stuck := &blocking{entered: make(chan struct{})}
	first, err := outbox.NewRelay(db1, stuck, discard(), nil, outbox.RelayConfig{PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = first.Run(runCtx); close(done) }()
	select {
	case <-stuck.entered:
	case <-ctx.Done():
		t.Fatal("the first relay never published")
	}

	pub := &recorder{}
	second, err := outbox.NewRelay(db2, pub, discard(), nil, outbox.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := second.RelayOnce(ctx); err != nil || n != 0 {
		t.Fatalf("RelayOnce while another relay holds the lane = %d, %v; want 0, nil", n, err)
	}
	stop()
	<-done
	if n, err := second.RelayOnce(ctx); err != nil || n != 2 {
		t.Fatalf("RelayOnce after the holder stopped = %d, %v; want the 2 rows it had not recorded", n, err)
	}
	if got := ids(pub.got()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("published %v; want %v in order", got, want)
	}

	// Neither pool kept the lock: a third relay on the first relay's pool takes the lane at once.
	more := enqueue(t, ctx, db2, ob, outbox.Message{Topic: "t", Key: "k", Payload: []byte("3")})
	third, err := outbox.NewRelay(db1, pub, discard(), nil, outbox.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := third.RelayOnce(ctx); err != nil || n != 1 {
		t.Fatalf("RelayOnce on the stopped relay's pool = %d, %v; want 1", n, err)
	}
	var locks int
	if err := db2.QueryRowContext(ctx, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid IN (0, 1) AND classid::bigint = "+
		"(hashtext(current_schema() || '.outbox')::bigint & 4294967295)").Scan(&locks); err != nil {
		t.Fatal(err)
	}
	if locks != 0 {
		t.Fatalf("%d lane locks held after every relay let go; want 0", locks)
	}
	if got := ids(pub.got()); got[len(got)-1] != more[0] {
		t.Fatalf("last event published %s; want %s", got[len(got)-1], more[0])
	}
}

// A busy lane costs one statement per batch: each claim records the batch before it in the same
// statement, and the claim that finds nothing records the last one before the lane is let go. A
// backlog of 10 rows in batches of 2 is 6 claims per lane and no statement of its own to record a
// batch (before: 5 more per lane). With one lane the record deletes the rows, with two it sets the
// lane's bit and the second lane deletes them; either way every row is sent once per lane, in order,
// and the table ends empty.
func TestBusyLaneRecordsEachBatchWithTheNextClaim(t *testing.T) {
	t.Parallel()
	for _, lanes := range []int{1, 2} {
		t.Run(fmt.Sprint(lanes, " lanes"), func(t *testing.T) {
			t.Parallel()
			dsn := sqldbtest.Postgres(t)
			plain, d := setup(t, dsn)
			ctx := testCtx(t, 60*time.Second)
			ob := outbox.New(d, nil)
			var msgs []outbox.Message
			for i := range 10 {
				msgs = append(msgs, outbox.Message{Topic: "t", Key: fmt.Sprint("k", i%3), Payload: []byte(fmt.Sprint(i))})
			}
			want := enqueue(t, ctx, plain, ob, msgs...)

			spans := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
			db, _, err := sqldb.Open(ctx, dsn, sqldb.Options{TracerProvider: tp})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = db.Close() })
			pubs := make([]*recorder, lanes)
			var fan outbox.Fanout
			for i := range pubs {
				pubs[i] = &recorder{}
				fan = append(fan, outbox.Destination{Lane: i, Name: fmt.Sprint("d", i), Publisher: pubs[i]})
			}
			relay, err := outbox.NewRelay(db, fan, discard(), nil, outbox.RelayConfig{BatchSize: 2, PollInterval: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			runCtx, root := tp.Tracer("test").Start(runCtx, "relay") // statements are traced inside a trace
			done := make(chan struct{})
			go func() { _ = relay.Run(runCtx); close(done) }()
			for {
				var left int
				if err := plain.QueryRowContext(ctx, "SELECT count(*) FROM outbox").Scan(&left); err != nil {
					t.Fatal(err)
				}
				if left == 0 {
					break
				}
				select {
				case <-ctx.Done():
					t.Fatalf("%d rows still in the outbox", left)
				case <-time.After(10 * time.Millisecond):
				}
			}
			stop()
			<-done
			root.End()
			for i, p := range pubs {
				if got := ids(p.got()); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("lane %d published %v; want %v once each, in order", i, got, want)
				}
			}
			var claims, records int
			for _, s := range spans.GetSpans() {
				for _, a := range s.Attributes {
					if a.Key != "db.query.text" {
						continue
					}
					q := a.Value.AsString()
					switch {
					case strings.Contains(q, "event_id"):
						claims++
					case strings.Contains(q, "seq = ANY"):
						records++
						t.Logf("a record of its own: %s", q)
					}
				}
			}
			if claims != 6*lanes || records != 0 {
				t.Fatalf("%d claims and %d statements of their own recorded 5 batches per lane on %d lanes; want %d and 0",
					claims, records, lanes, 6*lanes)
			}
		})
	}
}
