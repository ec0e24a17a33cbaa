package outbox_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

func uniq(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// brokers is where a lanes test runs: SQLite + kfake (+ in-process NATS), or PostgreSQL + the
// harness's Kafka (+ its NATS where the test does not stop NATS).
type brokers struct {
	name string
	real bool
	dsn  func(t testing.TB) string
}

func brokerEnvs() []brokers {
	return []brokers{
		{name: "embedded", dsn: sqldbtest.SQLite},
		{name: "real", real: true, dsn: sqldbtest.Postgres},
	}
}

func (b brokers) kafka(t *testing.T) []string {
	t.Helper()
	if b.real {
		return strings.Split(infratest.Shared(t, "kafka"), ",")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// natsServer is an in-process nats-server with JetStream on a file store that can be stopped and
// started again on the same port, keeping its streams.
type natsServer struct {
	mu   sync.Mutex
	opts *server.Options
	s    *server.Server
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	n := &natsServer{opts: &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	}}
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	n.opts.Port = n.s.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.stop)
	return n
}

func (n *natsServer) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	s, err := server.NewServer(n.opts)
	if err != nil {
		return err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return errors.New("nats-server not ready")
	}
	n.s = s
	return nil
}

func (n *natsServer) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.s != nil {
		n.s.Shutdown()
		n.s.WaitForShutdown()
		n.s = nil
	}
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

// jetStreamAt connects to url, reconnecting for ever, and creates a stream capturing prefix.>.
func jetStreamAt(t *testing.T, url, prefix string) (jetstream.JetStream, string) {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream := strings.ToUpper(strings.ReplaceAll(prefix, ".", "_"))
	ctx := testCtx(t, 10*time.Second)
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), stream) })
	return js, stream
}

// kafkaLog reads every partition of a topic from the start, in the background.
type kafkaLog struct {
	mu   sync.Mutex
	msgs []kafka.Message
}

func readKafka(t *testing.T, ctx context.Context, brokers []string, topic string, partitions int) *kafkaLog {
	t.Helper()
	l := &kafkaLog{}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for p := range partitions {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MaxWait: 100 * time.Millisecond})
		wg.Go(func() {
			defer r.Close()
			for {
				m, err := r.ReadMessage(ctx)
				if err != nil {
					return
				}
				l.mu.Lock()
				l.msgs = append(l.msgs, m)
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	return l
}

// byKey returns each key's event ids in the order they were stored.
func (l *kafkaLog) byKey() (map[string][]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]string{}
	for _, m := range l.msgs {
		out[string(m.Key)] = append(out[string(m.Key)], header(m, outbox.HeaderEventID))
	}
	return out, len(l.msgs)
}

func header(m kafka.Message, k string) string {
	for _, h := range m.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// readStream returns each key's event ids in stream order, once the stream holds n messages.
func readStream(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string, n int) map[string][]string {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for got := 0; got < n; {
		batch, err := c.Fetch(n-got, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out[m.Headers().Get(outbox.HeaderKey)] = append(out[m.Headers().Get(outbox.HeaderKey)], m.Headers().Get(outbox.HeaderEventID))
			got++
		}
		if ctx.Err() != nil {
			t.Fatalf("stream %s: %d of %d messages before the deadline", stream, got, n)
		}
	}
	return out
}

func streamCount(ctx context.Context, js jetstream.JetStream, stream string) uint64 {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// orderLanes mirrors the order service: a Kafka row and a NATS status row per event, one lane each.
func orderLanes(kafkaPub, natsPub outbox.Publisher, subjectPrefix string) outbox.Fanout {
	return outbox.Fanout{
		{Lane: 0, Name: "kafka", Publisher: kafkaPub, Route: func(m outbox.Message) (outbox.Message, bool) {
			return m, !strings.HasPrefix(m.Topic, subjectPrefix)
		}},
		{Lane: 1, Name: "nats", Publisher: natsPub, Route: func(m outbox.Message) (outbox.Message, bool) {
			return m, strings.HasPrefix(m.Topic, subjectPrefix)
		}},
	}
}

// While NATS is down, every event still reaches Kafka, in order per key; once NATS is back, every
// event reaches it too, in order per key. Before the lanes, one batch went to NATS first and Kafka
// received nothing until NATS returned.
func TestNATSOutageDoesNotDelayKafka(t *testing.T) {
	t.Parallel()
	for _, e := range brokerEnvs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 90*time.Second)
			db, d := setup(t, e.dsn(t))
			kb := e.kafka(t)
			topic := uniq("lanes-")
			const partitions = 3
			if err := outbox.EnsureTopics(ctx, kb, nil, outbox.Topic{Name: topic, Partitions: partitions}); err != nil {
				t.Fatal(err)
			}
			ns := startNATS(t)
			prefix := uniq("lanes")
			js, stream := jetStreamAt(t, ns.url(), prefix)
			kp := outbox.NewKafka(kb, nil)
			t.Cleanup(func() { _ = kp.Close() })
			reg := prometheus.NewRegistry()
			relay, err := outbox.NewRelay(db, orderLanes(kp, outbox.NewJetStream(js), prefix+"."), discard(), reg, outbox.RelayConfig{
				PollInterval: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, PublishTimeout: 2 * time.Second,
				StatsInterval: 50 * time.Millisecond, BatchSize: 50,
			})
			if err != nil {
				t.Fatal(err)
			}
			ns.stop()
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- relay.Run(runCtx) }()

			ob := outbox.New(d, nil)
			const orders, perOrder = 20, 3
			wantKafka, wantNATS := map[string][]string{}, map[string][]string{}
			for i := range perOrder {
				for o := range orders {
					key := fmt.Sprint("order-", o)
					id := uniq(fmt.Sprintf("ev%d-", i))
					enqueue(t, ctx, db, ob,
						outbox.Message{ID: id, Topic: topic, Key: key, Payload: []byte(id)},
						outbox.Message{ID: id + ".status", Topic: prefix + ".status." + key, Key: key, Payload: []byte(id)})
					wantKafka[key] = append(wantKafka[key], id)
					wantNATS[key] = append(wantNATS[key], id+".status")
					relay.Notify()
				}
			}
			log := readKafka(t, ctx, kb, topic, partitions)
			waitFor(t, ctx, func() bool { _, n := log.byKey(); return n >= orders*perOrder })
			got, n := log.byKey()
			if n != orders*perOrder {
				t.Fatalf("kafka holds %d messages, want %d", n, orders*perOrder)
			}
			for key, want := range wantKafka {
				if !slices.Equal(got[key], want) {
					t.Fatalf("kafka key %s:\n got %v\nwant %v", key, got[key], want)
				}
			}
			// NATS is still down: the Kafka lane finishes (it records a batch after Kafka acknowledged it,
			// so a reader can see the events first), and the NATS lane holds every status row, and says so.
			var st outbox.Stats
			waitFor(t, ctx, func() bool {
				var err error
				st, err = relay.Stats(ctx)
				return err == nil && st.Destinations[0].Pending == 0
			})
			// (The NATS lane also counts the Kafka rows it has not yet passed over.)
			if st.Destinations[0].Pending != 0 || st.Destinations[1].Pending < orders*perOrder {
				t.Fatalf("stats while NATS is down = %+v", st)
			}

			if err := ns.start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, func() bool { return streamCount(ctx, js, stream) >= orders*perOrder })
			gotNATS := readStream(t, ctx, js, stream, orders*perOrder)
			for key, want := range wantNATS {
				if !slices.Equal(gotNATS[key], want) {
					t.Fatalf("nats key %s:\n got %v\nwant %v", key, gotNATS[key], want)
				}
			}
			if c := streamCount(ctx, js, stream); c != orders*perOrder {
				t.Fatalf("stream holds %d, want %d (one per event)", c, orders*perOrder)
			}
			waitFor(t, ctx, func() bool {
				st, err := relay.Stats(ctx)
				return err == nil && st.Pending == 0
			})
			var left int
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM outbox").Scan(&left); err != nil || left != 0 {
				t.Fatalf("rows left = %d, %v; want 0 (deleted once both brokers have them)", left, err)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A message Kafka can never take (over its size limit) and a NATS subject no publish can go to are
// parked: the gauge says 1 per destination, the other keys flow, the poisoned key's later events wait
// behind it on that destination only. Unparked after the fix, each is delivered once, then the rest
// of its key, in order.
func TestPoisonRowsAreParkedAndUnparked(t *testing.T) {
	t.Parallel()
	for _, e := range brokerEnvs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 90*time.Second)
			db, d := setup(t, e.dsn(t))
			kb := e.kafka(t)
			topic := uniq("poison-")
			if err := outbox.EnsureTopics(ctx, kb, nil, outbox.Topic{Name: topic, Partitions: 2}); err != nil {
				t.Fatal(err)
			}
			natsURL := ""
			if e.real {
				natsURL = infratest.Shared(t, "nats")
			} else {
				natsURL = startNATS(t).url()
			}
			prefix := uniq("poison")
			js, stream := jetStreamAt(t, natsURL, prefix)
			kp := outbox.NewKafka(kb, nil)
			t.Cleanup(func() { _ = kp.Close() })
			reg := prometheus.NewRegistry()
			relay, err := outbox.NewRelay(db, orderLanes(kp, outbox.NewJetStream(js), prefix+"."), discard(), reg, outbox.RelayConfig{
				PollInterval: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, StatsInterval: 20 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			ob := outbox.New(d, nil)
			big := make([]byte, outbox.MaxKafkaMessageBytes+1)
			// Key "bad": a too-large Kafka event between two good ones; key "sub": a good status event,
			// then one to a subject with a blank, then a good one. Keys "a" and "b" are healthy.
			ev := func(id, key string, payload []byte) outbox.Message {
				return outbox.Message{ID: id, Topic: topic, Key: key, Payload: payload}
			}
			st := func(id, key, subject string) outbox.Message {
				return outbox.Message{ID: id, Topic: subject, Key: key, Payload: []byte(id)}
			}
			enqueue(t, ctx, db, ob,
				ev("a1", "a", nil), ev("bad1", "bad", nil), st("sub1", "sub", prefix+".status.sub"),
				ev("bad2", "bad", big), st("sub2", "sub", prefix+".status.sub bad"),
				ev("a2", "a", nil), ev("bad3", "bad", nil), st("sub3", "sub", prefix+".status.sub"),
				ev("b1", "b", nil), st("b1s", "b", prefix+".status.b"))
			runCtx, stopRelay := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- relay.Run(runCtx) }()

			log := readKafka(t, ctx, kb, topic, 2)
			waitFor(t, ctx, func() bool { _, n := log.byKey(); return n >= 4 })       // a1 a2 bad1 b1
			waitFor(t, ctx, func() bool { return streamCount(ctx, js, stream) >= 2 }) // sub1 b1s
			parked := func(dest string) float64 {
				return testutil.ToFloat64(labelled(reg, "shopmesh_outbox_parked_rows", dest))
			}
			waitFor(t, ctx, func() bool { return parked("kafka") == 1 && parked("nats") == 1 })
			if n := testutil.ToFloat64(labelled(reg, "shopmesh_outbox_parked_total", "kafka")); n != 1 {
				t.Fatalf("parks on kafka = %v, want 1", n)
			}
			got, _ := log.byKey()
			if !slices.Equal(got["a"], []string{"a1", "a2"}) || !slices.Equal(got["bad"], []string{"bad1"}) || !slices.Equal(got["b"], []string{"b1"}) {
				t.Fatalf("kafka before unpark = %v; want a1 a2, bad1 (bad3 held behind bad2), b1", got)
			}
			list, err := outbox.ListParked(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 2 || list[0].EventID != "bad2" || list[0].Destination != "kafka" || list[0].Attempts != 1 ||
				!strings.Contains(list[0].LastError, "over") || list[1].EventID != "sub2" || list[1].Destination != "nats" {
				t.Fatalf("parked = %+v", list)
			}
			// The fix: the payload is cut down and the subject corrected, then the rows are unparked.
			if _, err := db.ExecContext(ctx, d.Rebind("UPDATE outbox SET payload = ? WHERE event_id = ?"), []byte("bad2"), "bad2"); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, d.Rebind("UPDATE outbox SET topic = ? WHERE event_id = ?"), prefix+".status.sub", "sub2"); err != nil {
				t.Fatal(err)
			}
			if n, err := outbox.Unpark(ctx, db, "bad2", "sub2", "a1"); err != nil || n != 2 {
				t.Fatalf("Unpark = %d, %v; want 2", n, err)
			}
			relay.Notify()
			waitFor(t, ctx, func() bool { _, n := log.byKey(); return n >= 6 })
			waitFor(t, ctx, func() bool { return streamCount(ctx, js, stream) >= 4 })
			waitFor(t, ctx, func() bool { return parked("kafka") == 0 && parked("nats") == 0 })
			got, n := log.byKey()
			if n != 6 || !slices.Equal(got["bad"], []string{"bad1", "bad2", "bad3"}) {
				t.Fatalf("kafka after unpark = %v (%d); want bad1 bad2 bad3 once each", got, n)
			}
			gotNATS := readStream(t, ctx, js, stream, 4)
			if !slices.Equal(gotNATS["sub"], []string{"sub1", "sub2", "sub3"}) || !slices.Equal(gotNATS["b"], []string{"b1s"}) {
				t.Fatalf("nats after unpark = %v", gotNATS)
			}
			if list, err := outbox.ListParked(ctx, db); err != nil || len(list) != 0 {
				t.Fatalf("parked after unpark = %+v, %v", list, err)
			}
			stopRelay()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// labelled exposes one series of a registry's metric (gauge or counter) for testutil.ToFloat64.
func labelled(reg *prometheus.Registry, name, destination string) prometheus.Collector {
	return labelledMetric{reg: reg, name: name, dest: destination}
}

type labelledMetric struct {
	reg        *prometheus.Registry
	name, dest string
}

func (l labelledMetric) Describe(chan<- *prometheus.Desc) {}

func (l labelledMetric) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := l.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != l.name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "destination" && lp.GetValue() == l.dest {
					v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
					ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(l.name, "", nil, nil), prometheus.GaugeValue, v)
				}
			}
		}
	}
}

// A row failing with a Retryable error is parked after MaxAttempts; a Transient failure (the broker
// down) never parks anything however long it lasts.
func TestRetryableParksAfterMaxAttemptsTransientNever(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db, d := setup(t, b.DSN(t))
			ctx := testCtx(t, 30*time.Second)
			ob := outbox.New(d, nil)
			enqueue(t, ctx, db, ob, outbox.Message{ID: "x1", Topic: "t", Key: "x"}, outbox.Message{ID: "y1", Topic: "t", Key: "y"})
			down := &failing{kind: outbox.Transient}
			relay, err := outbox.NewRelay(db, down, discard(), nil, outbox.RelayConfig{MaxAttempts: 3})
			if err != nil {
				t.Fatal(err)
			}
			for range 10 {
				if _, err := relay.RelayOnce(ctx); err == nil {
					t.Fatal("RelayOnce with the broker down: no error")
				}
			}
			if st, err := relay.Stats(ctx); err != nil || st.Parked != 0 || st.Pending != 2 {
				t.Fatalf("after 10 transient failures: %+v, %v", st, err)
			}
			poison := &failing{kind: outbox.Retryable, id: "x1"}
			relay, err = outbox.NewRelay(db, poison, discard(), nil, outbox.RelayConfig{MaxAttempts: 3})
			if err != nil {
				t.Fatal(err)
			}
			for range 4 { // three failures, then y1 behind the parked x1
				_, _ = relay.RelayOnce(ctx)
			}
			list, err := outbox.ListParked(ctx, db)
			if err != nil || len(list) != 1 || list[0].EventID != "x1" || list[0].Attempts != 3 {
				t.Fatalf("parked = %+v, %v; want x1 after 3 attempts", list, err)
			}
			if got := poison.sent(); !slices.Equal(got, []string{"y1"}) {
				t.Fatalf("sent = %v, want y1", got)
			}
		})
	}
}

// failing fails with kind: every batch (id empty), or at the message with that id.
type failing struct {
	mu   sync.Mutex
	kind outbox.ErrorKind
	id   string
	ok   []string
}

func (f *failing) Publish(_ context.Context, msgs []outbox.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, m := range msgs {
		if f.id == "" || m.ID == f.id {
			return &outbox.PublishError{Index: i, Kind: f.kind, Err: errors.New("refused")}
		}
		f.ok = append(f.ok, m.ID)
	}
	return nil
}

func (f *failing) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ok)
}

// Undecodable headers park the row instead of failing every claim.
func TestUndecodableRowIsParked(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			if b.Name == "postgres" {
				t.Skip("headers is JSONB on PostgreSQL: the server refuses undecodable headers at insert")
			}
			db, d := setup(t, b.DSN(t))
			ctx := testCtx(t, 30*time.Second)
			ob := outbox.New(d, nil)
			enqueue(t, ctx, db, ob, outbox.Message{ID: "k1", Topic: "t", Key: "k"}, outbox.Message{ID: "k2", Topic: "t", Key: "k"},
				outbox.Message{ID: "j1", Topic: "t", Key: "j"})
			if _, err := db.ExecContext(ctx, "UPDATE outbox SET headers = '{not json' WHERE event_id = 'k1'"); err != nil {
				t.Fatal(err)
			}
			rec := &recorder{}
			relay, err := outbox.NewRelay(db, rec, discard(), nil, outbox.RelayConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := relay.RelayOnce(ctx); err != nil || n != 1 {
				t.Fatalf("RelayOnce = %d, %v; want j1 only", n, err)
			}
			if got := ids(rec.got()); !slices.Equal(got, []string{"j1"}) {
				t.Fatalf("published %v, want j1 (k2 waits behind k1)", got)
			}
			if list, err := outbox.ListParked(ctx, db); err != nil || len(list) != 1 || list[0].EventID != "k1" {
				t.Fatalf("parked = %+v, %v", list, err)
			}
		})
	}
}

// The lanes migration goes down and up again, and rows sent before it stay sent: a relay with two
// destinations delivers only the pending row, to each; the housekeeping then deletes the sent row.
func TestLanesMigrationKeepsSentRowsSent(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			db, d := setup(t, dsn)
			ctx := testCtx(t, 30*time.Second)
			src, err := outbox.Migrations(d)
			if err != nil {
				t.Fatal(err)
			}
			var out strings.Builder
			if err := migrate.Command(ctx, dsn, src, migrate.Options{Table: outbox.MigrationsTable}, []string{"down", "1"}, &out); err != nil {
				t.Fatalf("down: %v", err)
			}
			insert := d.Rebind("INSERT INTO outbox (event_id, topic, msg_key, payload, headers, created_at, sent_at) VALUES (?, 't', 'k', ?, '{}', ?, ?)")
			now := time.Now().UTC()
			if _, err := db.ExecContext(ctx, insert, "old-sent", []byte{}, now, now); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, insert, "old-pending", []byte{}, now, nil); err != nil {
				t.Fatal(err)
			}
			if err := migrate.Up(ctx, dsn, src, migrate.Options{Table: outbox.MigrationsTable}); err != nil {
				t.Fatalf("up again: %v", err)
			}
			k, n := &recorder{}, &recorder{}
			relay, err := outbox.NewRelay(db, outbox.Fanout{{Lane: 0, Name: "kafka", Publisher: k}, {Lane: 1, Name: "nats", Publisher: n}},
				discard(), nil, outbox.RelayConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := relay.RelayOnce(ctx); err != nil || got != 2 {
				t.Fatalf("RelayOnce = %d, %v; want old-pending on both lanes", got, err)
			}
			if !slices.Equal(ids(k.got()), []string{"old-pending"}) || !slices.Equal(ids(n.got()), []string{"old-pending"}) {
				t.Fatalf("kafka %v, nats %v; want old-pending once each", ids(k.got()), ids(n.got()))
			}
			if st, err := relay.Stats(ctx); err != nil || st.Pending != 0 {
				t.Fatalf("stats = %+v, %v", st, err)
			}
			// The row sent before (sent_at set, as relays that kept sent rows left them) is deleted by the
			// housekeeping; old-pending was deleted when its last lane recorded it.
			h, err := outbox.NewRelay(db, outbox.Fanout{{Lane: 0, Name: "kafka", Publisher: k}, {Lane: 1, Name: "nats", Publisher: n}},
				discard(), nil, outbox.RelayConfig{StatsInterval: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- h.Run(runCtx) }()
			waitFor(t, ctx, func() bool {
				var left int
				return db.QueryRowContext(ctx, "SELECT count(*) FROM outbox").Scan(&left) == nil && left == 0
			})
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if len(k.got()) != 1 || len(n.got()) != 1 {
				t.Fatalf("kafka %v, nats %v; want nothing sent again", ids(k.got()), ids(n.got()))
			}
		})
	}
}

// Three relays drain one table to two destinations at once: each destination gets every event once,
// each aggregate's events in the order they were written, and every row ends deleted.
func TestConcurrentRelaysTwoLanes(t *testing.T) {
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
	a, b := &slow{}, &slow{}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 3 {
		relay, err := outbox.NewRelay(db, outbox.Fanout{{Lane: 0, Name: "a", Publisher: a}, {Lane: 1, Name: "b", Publisher: b}},
			discard(), nil, outbox.RelayConfig{BatchSize: 7, PollInterval: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { _ = relay.Run(runCtx) })
	}
	waitFor(t, ctx, func() bool { return len(a.got()) >= keys*perKey && len(b.got()) >= keys*perKey })
	waitFor(t, ctx, func() bool {
		var n int
		return db.QueryRowContext(ctx, "SELECT count(*) FROM outbox").Scan(&n) == nil && n == 0
	})
	stop()
	wg.Wait()
	for name, pub := range map[string]*slow{"a": a, "b": b} {
		got := map[string][]string{}
		seen := map[string]bool{}
		for _, m := range pub.got() {
			if seen[m.ID] {
				t.Errorf("%s: event %s published twice without a failure", name, m.ID)
			}
			seen[m.ID] = true
			got[m.Key] = append(got[m.Key], m.ID)
		}
		for key, w := range want {
			if !slices.Equal(got[key], w) {
				t.Fatalf("%s: key %s out of order:\n got %v\nwant %v", name, key, got[key], w)
			}
		}
	}
}

// A row for a topic that does not exist (producers create their topics at start, so the row is
// misrouted) is parked after MaxAttempts instead of stalling its lane for ever, and the rows after
// it flow. kafka-go calls UnknownTopicOrPartition temporary; counted as Transient, it never parked.
func TestUnknownTopicIsParkedNotRetriedForEver(t *testing.T) {
	t.Parallel()
	for _, e := range brokerEnvs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 60*time.Second)
			db, d := setup(t, e.dsn(t))
			kb := e.kafka(t)
			topic := uniq("known-")
			if err := outbox.EnsureTopics(ctx, kb, nil, outbox.Topic{Name: topic, Partitions: 1}); err != nil {
				t.Fatal(err)
			}
			kp := outbox.NewKafka(kb, nil)
			t.Cleanup(func() { _ = kp.Close() })
			reg := prometheus.NewRegistry()
			relay, err := outbox.NewRelay(db, kp, discard(), reg, outbox.RelayConfig{
				PollInterval: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, StatsInterval: 20 * time.Millisecond,
				MaxAttempts: 3,
			})
			if err != nil {
				t.Fatal(err)
			}
			ob := outbox.New(d, nil)
			enqueue(t, ctx, db, ob,
				outbox.Message{ID: "lost1", Topic: uniq("nobody-made-"), Key: "k"},
				outbox.Message{ID: "ok1", Topic: topic, Key: "other"},
				outbox.Message{ID: "ok2", Topic: topic, Key: "other"})
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- relay.Run(runCtx) }()
			log := readKafka(t, ctx, kb, topic, 1)
			waitFor(t, ctx, func() bool { _, n := log.byKey(); return n >= 2 })
			stop()
			<-done
			list, err := outbox.ListParked(ctx, db)
			if err != nil || len(list) != 1 || list[0].EventID != "lost1" || list[0].Attempts != 3 {
				t.Fatalf("parked = %+v, %v; want lost1 after 3 attempts", list, err)
			}
			if got, _ := log.byKey(); !slices.Equal(got["other"], []string{"ok1", "ok2"}) {
				t.Fatalf("kafka = %v, want ok1 ok2 after the parked row", got)
			}
		})
	}
}
