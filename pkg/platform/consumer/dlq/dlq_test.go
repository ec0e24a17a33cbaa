package dlq_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/consumer/dlq"
	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

func uniq(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var quiet = slog.New(slog.DiscardHandler)

// effects applies events once per consumer through the inbox and tallies deliveries.
type effects struct {
	db *sql.DB
	d  sqldb.Dialect

	mu        sync.Mutex
	delivered map[string]int // consumer/event -> deliveries
}

func newEffects(t *testing.T, dsn string) *effects {
	t.Helper()
	ctx := timeout(t, 30*time.Second)
	d, _ := sqldb.ParseDialect(dsn)
	src, err := inbox.Migrations(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.Up(ctx, dsn, src, migrate.Options{Table: inbox.MigrationsTable}); err != nil {
		t.Fatal(err)
	}
	db, _ := sqldbtest.Open(t, dsn)
	if _, err := db.ExecContext(ctx, "CREATE TABLE effects (consumer TEXT NOT NULL, event_id TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return &effects{db: db, d: d, delivered: map[string]int{}}
}

func (e *effects) handler(name string, broken func(consumer.Message) error) consumer.Handler {
	insert := e.d.Rebind("INSERT INTO effects (consumer, event_id) VALUES (?, ?)")
	return func(ctx context.Context, m consumer.Message) error {
		e.mu.Lock()
		e.delivered[name+"/"+m.ID]++
		e.mu.Unlock()
		if err := broken(m); err != nil {
			return err
		}
		return inbox.Process(ctx, e.db, name, m.ID, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, insert, name, m.ID)
			return err
		})
	}
}

func (e *effects) deliveries(name, id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.delivered[name+"/"+id]
}

func (e *effects) count(t *testing.T, name, id string) int {
	t.Helper()
	q := "SELECT count(*) FROM effects WHERE consumer = ?"
	args := []any{name}
	if id != "" {
		q += " AND event_id = ?"
		args = append(args, id)
	}
	var n int
	if err := e.db.QueryRow(e.d.Rebind(q), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// broker is one broker as the scenario sees it.
type broker struct {
	topic   string
	publish func(ctx context.Context, msgs []outbox.Message) error
	// run runs a consumer named name until ctx ends.
	run  func(ctx context.Context, name string, h consumer.Handler) error
	tool interface {
		List(context.Context) ([]dlq.Entry, error)
		Replay(context.Context, func(dlq.Entry) bool) (dlq.Report, error)
	}
}

type env struct {
	name string
	real bool
	dsn  func(testing.TB) string
}

func envs() []env {
	return []env{{name: "embedded", dsn: sqldbtest.SQLite}, {name: "real", real: true, dsn: sqldbtest.Postgres}}
}

func kafkaBroker(t *testing.T, e env) broker {
	var brokers []string
	if e.real {
		brokers = strings.Split(infratest.Shared(t, "kafka"), ",")
	} else {
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		brokers = c.ListenAddrs()
	}
	topic := uniq("dlq-")
	if err := outbox.EnsureTopics(timeout(t, 30*time.Second), brokers, nil, outbox.Topic{Name: topic, Partitions: 3},
		outbox.Topic{Name: consumer.DeadLetterTopic(topic), Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	pub := outbox.NewKafka(brokers, nil)
	t.Cleanup(func() { _ = pub.Close() })
	groups := &names{m: map[string]string{}}
	return broker{
		topic:   topic,
		publish: pub.Publish,
		run: func(ctx context.Context, name string, h consumer.Handler) error {
			c, err := consumer.NewKafka(consumer.KafkaConfig{Brokers: brokers, GroupID: groups.of(name), Topics: []string{topic},
				MaxWait: 100 * time.Millisecond, Retry: consumer.Retry{MaxBackoff: 100 * time.Millisecond}}, h, quiet)
			if err != nil {
				return err
			}
			return c.Run(ctx)
		},
		tool: dlq.Kafka{Brokers: brokers, Topic: consumer.DeadLetterTopic(topic), Group: uniq("replay-")},
	}
}

// names gives each consumer name of a test its own group or durable, the same on every run of it;
// consumers of the test run concurrently.
type names struct {
	mu sync.Mutex
	m  map[string]string
}

func (n *names) of(name string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m[name] == "" {
		n.m[name] = uniq(name + "-")
	}
	return n.m[name]
}

func jetStreamBroker(t *testing.T, e env) broker {
	var url string
	if e.real {
		url = infratest.Shared(t, "nats")
	} else {
		s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-server not ready")
		}
		t.Cleanup(s.Shutdown)
		url = s.ClientURL()
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream := uniq("DLQT_")
	subject := strings.ToLower(stream) + ".events"
	ctx := timeout(t, 10*time.Second)
	for name, subj := range map[string]string{stream: subject, stream + "_DLQ": consumer.DeadLetterTopic(subject)} {
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Duplicates: 2 * time.Minute}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	}
	durables := &names{m: map[string]string{}}
	return broker{
		topic:   subject,
		publish: outbox.NewJetStream(js).Publish,
		run: func(ctx context.Context, name string, h consumer.Handler) error {
			c, err := consumer.NewJetStream(js, consumer.JetStreamConfig{Stream: stream, Durable: durables.of(name),
				FilterSubjects: []string{subject}, AckWait: 2 * time.Second, FetchWait: 500 * time.Millisecond,
				Retry: consumer.Retry{MaxBackoff: 100 * time.Millisecond}}, h, quiet)
			if err != nil {
				return err
			}
			return c.Run(ctx)
		},
		tool: dlq.JetStream{JS: js, Stream: stream + "_DLQ", Durable: uniq("replay-")},
	}
}

func TestKafkaListReplay(t *testing.T) {
	t.Parallel()
	for _, e := range envs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			listReplay(t, e, kafkaBroker(t, e))
		})
	}
}

func TestJetStreamListReplay(t *testing.T) {
	t.Parallel()
	for _, e := range envs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			listReplay(t, e, jetStreamBroker(t, e))
		})
	}
}

// listReplay: two consumers of one topic (like payment and inventory on the order events). "pay" cannot
// decode one event and dead-letters it; "inv" applies everything. The dead letter is listed with its
// reason; pay's handler is fixed; a replay republishes it: pay applies it once, inv's inbox drops the
// copy, and a second replay sends nothing.
func listReplay(t *testing.T, e env, b broker) {
	ctx := timeout(t, 2*time.Minute)
	fx := newEffects(t, e.dsn(t))
	const n = 6
	var msgs []outbox.Message
	for i := range n {
		msgs = append(msgs, outbox.Message{ID: uniq(fmt.Sprintf("ev%d-", i)), Topic: b.topic, Key: fmt.Sprint("k", i%2),
			Payload: []byte("x"), Headers: map[string]string{"event-type": "Test"}})
	}
	victim := msgs[2].ID
	if err := b.publish(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	var broken atomic.Bool
	broken.Store(true)
	pay := fx.handler("pay", func(m consumer.Message) error {
		if broken.Load() && m.ID == victim {
			return consumer.Permanent(errors.New("decode: unknown event version"))
		}
		return nil
	})
	inv := fx.handler("inv", func(consumer.Message) error { return nil })
	cctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for name, h := range map[string]consumer.Handler{"pay": pay, "inv": inv} {
		wg.Go(func() {
			if err := b.run(cctx, name, h); err != nil {
				t.Error(err)
			}
		})
	}
	defer func() { stop(); wg.Wait() }()

	var entries []dlq.Entry
	waitFor(t, ctx, "the dead letter and the other effects", func() bool {
		var err error
		if entries, err = b.tool.List(ctx); err != nil {
			t.Fatal(err)
		}
		return len(entries) == 1 && fx.count(t, "pay", "") == n-1 && fx.count(t, "inv", "") == n
	})
	got := entries[0]
	t.Logf("listed: %s event %s from %s (%s) by %s: %s after %d attempt(s) at %s: %q",
		got.Position, got.EventID, got.Topic, got.Origin, got.Consumer, got.Cause, got.Attempts, got.Time.Format(time.RFC3339), got.Reason)
	if got.EventID != victim || got.Topic != b.topic || got.Origin == "" || !strings.Contains(got.Consumer, "pay") ||
		got.Cause != consumer.CausePermanent || got.Attempts != 1 || got.Time.IsZero() ||
		!strings.Contains(got.Reason, "unknown event version") || got.Replayed {
		t.Fatalf("entry = %+v", got)
	}

	broken.Store(false) // the handler is fixed
	rep, err := b.tool.Replay(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Replayed) != 1 || rep.Replayed[0].EventID != victim {
		t.Fatalf("replay = %+v", rep)
	}
	waitFor(t, ctx, "the replayed event applied by pay and seen again by inv", func() bool {
		return fx.count(t, "pay", victim) == 1 && fx.deliveries("inv", victim) >= 2
	})
	again, err := b.tool.Replay(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	entries, err = b.tool.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after replay: pay applied victim %d time(s), inv %d time(s) (delivered %d); second replay sent %d; listed replayed=%v",
		fx.count(t, "pay", victim), fx.count(t, "inv", victim), fx.deliveries("inv", victim), len(again.Replayed), entries[0].Replayed)
	if fx.count(t, "pay", "") != n || fx.count(t, "inv", "") != n || fx.count(t, "inv", victim) != 1 {
		t.Errorf("effects pay=%d inv=%d, want %d each", fx.count(t, "pay", ""), fx.count(t, "inv", ""), n)
	}
	if len(again.Replayed) != 0 || len(entries) != 1 || !entries[0].Replayed {
		t.Errorf("second replay sent %d, entries %+v", len(again.Replayed), entries)
	}
}
