package consumer_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

var eventsFlag = flag.Int("events", 0, "events per end-to-end run (default 1000 embedded, 10000 on real servers, 1000 with -short)")

func logger(t *testing.T) *slog.Logger {
	if os.Getenv("TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

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

// env is one place the tests run: embedded (SQLite files, kfake, in-process nats-server) or real
// (PostgreSQL schemas, the harness's Kafka and NATS).
type env struct {
	name string
	real bool
	dsn  func(t testing.TB) string
}

func envs() []env {
	return []env{
		{name: "embedded", dsn: sqldbtest.SQLite},
		{name: "real", real: true, dsn: sqldbtest.Postgres},
	}
}

func (e env) events(t *testing.T) int {
	switch {
	case *eventsFlag > 0:
		return *eventsFlag
	case e.real && !testing.Short():
		return 10000
	}
	return 1000
}

// restarter restarts a test's broker in place, keeping its data, and returns once it serves again.
// nil when the broker cannot be restarted (kfake keeps its state in the process).
type restarter func(ctx context.Context) error

// kafkaBrokers returns the brokers of a Kafka: kfake, or the real one under a shared lock — or an
// exclusive one when restartable, with a restarter for infra.sh restart kafka.
func (e env) kafkaBrokers(t *testing.T, restartable bool) ([]string, restarter) {
	t.Helper()
	if e.real {
		if !restartable {
			return strings.Split(infratest.Shared(t, "kafka"), ","), nil
		}
		brokers := strings.Split(infratest.Exclusive(t, "kafka"), ",")
		return brokers, func(ctx context.Context) error { return infratest.Control(ctx, "restart", "kafka") }
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs(), nil
}

// jetStream connects to a NATS with JetStream: an in-process nats-server, or the real one under a
// shared lock — or an exclusive one when restartable. The restarter restarts the server in place
// (the in-process one on the same port and store directory); the client reconnects by itself.
func (e env) jetStream(t *testing.T, restartable bool) (jetstream.JetStream, restarter) {
	t.Helper()
	var (
		url     string
		restart restarter
	)
	switch {
	case e.real && restartable:
		url = infratest.Exclusive(t, "nats")
		restart = func(ctx context.Context) error { return infratest.Control(ctx, "restart", "nats") }
	case e.real:
		url = infratest.Shared(t, "nats")
	default:
		opts := &server.Options{
			Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		}
		var mu sync.Mutex
		start := func() (*server.Server, error) {
			s, err := server.NewServer(opts)
			if err != nil {
				return nil, err
			}
			go s.Start()
			if !s.ReadyForConnections(10 * time.Second) {
				s.Shutdown()
				return nil, errors.New("nats-server not ready")
			}
			return s, nil
		}
		s, err := start()
		if err != nil {
			t.Fatal(err)
		}
		opts.Port = s.Addr().(*net.TCPAddr).Port // a restart comes back where the client looks
		t.Cleanup(func() {
			mu.Lock()
			defer mu.Unlock()
			if s != nil {
				s.Shutdown()
				s.WaitForShutdown()
			}
		})
		url = s.ClientURL()
		restart = func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			if s != nil {
				s.Shutdown()
				s.WaitForShutdown()
			}
			s, err = start()
			return err
		}
	}
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js, restart
}

// producerDB returns a database with the outbox schema.
func (e env) producerDB(t *testing.T) (*sql.DB, sqldb.Dialect) {
	t.Helper()
	dsn := e.dsn(t)
	d, _ := sqldb.ParseDialect(dsn)
	src, err := outbox.Migrations(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate.Up(timeout(t, 30*time.Second), dsn, src, migrate.Options{Table: outbox.MigrationsTable}); err != nil {
		t.Fatal(err)
	}
	return sqldbtest.Open(t, dsn)
}

// consumerDB returns a database with the inbox schema and an effects table, one row per applied effect.
func (e env) consumerDB(t *testing.T) *effects {
	t.Helper()
	return e.consumerDBVia(t, func(dsn string) string { return dsn })
}

// consumerDBVia is consumerDB with the handler's connections opened on via(dsn) (a proxy).
func (e env) consumerDBVia(t *testing.T, via func(dsn string) string) *effects {
	t.Helper()
	dsn := e.dsn(t)
	d, _ := sqldb.ParseDialect(dsn)
	src, err := inbox.Migrations(d)
	if err != nil {
		t.Fatal(err)
	}
	ctx := timeout(t, 30*time.Second)
	if err := migrate.Up(ctx, dsn, src, migrate.Options{Table: inbox.MigrationsTable}); err != nil {
		t.Fatal(err)
	}
	db, _ := sqldbtest.Open(t, via(dsn))
	if _, err := db.ExecContext(ctx, "CREATE TABLE effects (event_id TEXT NOT NULL, agg TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return &effects{db: db, d: d, delivered: map[string]int{}}
}

// effects is the consumer side of a test: the handler applies each event once through the inbox, and
// every delivery is tallied.
type effects struct {
	db *sql.DB
	d  sqldb.Dialect

	mu        sync.Mutex
	delivered map[string]int
	firsts    map[string][]string // key -> event ids in first-delivery order
	total     int
}

func (e *effects) handler(consumerName string) consumer.Handler {
	insert := e.d.Rebind("INSERT INTO effects (event_id, agg) VALUES (?, ?)")
	return func(ctx context.Context, m consumer.Message) error {
		e.note(m)
		return inbox.Process(ctx, e.db, consumerName, m.ID, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, insert, m.ID, string(m.Key))
			return err
		})
	}
}

func (e *effects) note(m consumer.Message) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.firsts == nil {
		e.firsts = map[string][]string{}
	}
	if e.delivered[m.ID] == 0 {
		e.firsts[string(m.Key)] = append(e.firsts[string(m.Key)], m.ID)
	}
	e.delivered[m.ID]++
	e.total++
}

func (e *effects) deliveries(id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.delivered[id]
}

func (e *effects) count(t *testing.T) (rows, distinct int) {
	t.Helper()
	ctx := timeout(t, 10*time.Second)
	if err := e.db.QueryRowContext(ctx, "SELECT count(*), count(DISTINCT event_id) FROM effects").Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	return rows, distinct
}

func (e *effects) countOf(t *testing.T, id string) int {
	t.Helper()
	var n int
	if err := e.db.QueryRowContext(timeout(t, 10*time.Second), e.d.Rebind("SELECT count(*) FROM effects WHERE event_id = ?"), id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitEffects polls until n effects are applied or the context ends.
func (e *effects) waitEffects(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for {
		rows, _ := e.count(t)
		if rows >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("only %d of %d effects applied before the deadline", rows, n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kafkaTopic creates a topic and its dead-letter topic.
func kafkaTopic(t *testing.T, brokers []string, partitions int) string {
	t.Helper()
	topic := uniq("e2e-")
	if err := outbox.EnsureTopics(timeout(t, 30*time.Second), brokers, nil,
		outbox.Topic{Name: topic, Partitions: partitions},
		outbox.Topic{Name: consumer.DeadLetterTopic(topic), Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	return topic
}

// jsSubject creates a stream for a subject and one for its dead letters.
func jsSubject(t *testing.T, js jetstream.JetStream) (stream, subject string) {
	t.Helper()
	stream = uniq("E2E_")
	subject = strings.ToLower(stream) + ".events"
	ctx := timeout(t, 10*time.Second)
	for name, subj := range map[string]string{stream: subject, stream + "_DLQ": consumer.DeadLetterTopic(subject)} {
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: name, Subjects: []string{subj}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	}
	return stream, subject
}

// readKafkaDLQ returns the first n dead letters of topic.
func readKafkaDLQ(t *testing.T, ctx context.Context, brokers []string, topic string, n int) []kafka.Message {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: consumer.DeadLetterTopic(topic), Partition: 0, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	var out []kafka.Message
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("read dead letter %d of %d: %v", len(out)+1, n, err)
		}
		out = append(out, m)
	}
	return out
}

// kafkaDLQCount is how many dead letters topic has (its dead-letter topic has one partition).
func kafkaDLQCount(t *testing.T, ctx context.Context, brokers []string, topic string) int {
	t.Helper()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	res, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		consumer.DeadLetterTopic(topic): {kafka.FirstOffsetOf(0), kafka.LastOffsetOf(0)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	parts := res.Topics[consumer.DeadLetterTopic(topic)]
	if len(parts) != 1 || parts[0].Error != nil {
		t.Fatalf("dead-letter partitions: %+v", parts)
	}
	return int(parts[0].LastOffset - parts[0].FirstOffset)
}
