package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

// jetStreams connects to url with at most maxPending async publishes outstanding on the connection and
// creates n streams, stream i capturing prefix.s<i>.>.
func jetStreams(t testing.TB, url, prefix string, n, maxPending int) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxPending))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range n {
		name := fmt.Sprintf("%s_S%d", prefix, i)
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name: name, Subjects: []string{fmt.Sprintf("%s.s%d.>", prefix, i)}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	}
	return js
}

// keyed returns n messages over keys keys, key k's on subject prefix.s<k mod streams>.<k>.
func keyed(prefix string, n, keys, streams int) []outbox.Message {
	msgs := make([]outbox.Message, n)
	for i := range msgs {
		k := i % keys
		msgs[i] = outbox.Message{ID: fmt.Sprintf("%s-%d", prefix, i), Topic: fmt.Sprintf("%s.s%d.%d", prefix, k%streams, k),
			Key: fmt.Sprint(k), Payload: []byte{byte(i)}}
	}
	return msgs
}

// One Publish of far more messages than the publisher's window and the connection's own limit of
// outstanding async publishes, to two streams: every message is stored once, each key's in the order
// given. (nats.go fails a publish that waits 200 ms for room under the connection's limit; the
// publisher waits as long as the batch's deadline allows, and never has more than its window in flight.)
func TestJetStreamPublishesBeyondItsWindow(t *testing.T) {
	t.Parallel()
	for _, e := range brokerEnvs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			url := ""
			if e.real {
				url = infratest.Shared(t, "nats")
			} else {
				url = startNATS(t).url()
			}
			prefix := uniq("WIN")
			js := jetStreams(t, url, prefix, 2, 16)
			pub := outbox.NewJetStream(js, outbox.WithWindow(40))
			ctx := testCtx(t, 60*time.Second)
			msgs := keyed(prefix, 600, 12, 2)
			if err := pub.Publish(ctx, msgs); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			// Sent again (a relay retrying the batch): the streams drop every copy.
			if err := pub.Publish(ctx, msgs[:100]); err != nil {
				t.Fatalf("Publish again: %v", err)
			}
			want := map[string][]string{}
			for _, m := range msgs {
				want[m.Key] = append(want[m.Key], m.ID)
			}
			got := map[string][]string{}
			for i := range 2 {
				stream := fmt.Sprintf("%s_S%d", prefix, i)
				if n := streamCount(ctx, js, stream); n != 300 {
					t.Fatalf("stream %s holds %d, want 300", stream, n)
				}
				for k, ids := range readStream(t, ctx, js, stream, 300) {
					got[k] = append(got[k], ids...)
				}
			}
			for k, w := range want {
				if !slices.Equal(got[k], w) {
					t.Fatalf("key %s:\n got %v\nwant %v", k, got[k], w)
				}
			}
		})
	}
}

// BenchmarkJetStreamRelay drains b.N outbox rows from PostgreSQL to the harness's JetStream
// (sync_interval: always) through the relay, beside a bare asynchronous publisher of the same messages
// in one call, its window sliding over them all (the server's own ceiling), to one stream and to eight. events/s is the figure; run it with a fixed
// count, interleaved, e.g. -bench JetStreamRelay -benchtime 5000x -count 3.
func BenchmarkJetStreamRelay(b *testing.B) {
	url := infratest.Shared(b, "nats")
	dsn := sqldbtest.Postgres(b)
	for _, streams := range []int{1, 8} {
		b.Run(fmt.Sprintf("bare/streams=%d", streams), func(b *testing.B) {
			prefix := uniq("BARE")
			js := jetStreams(b, url, prefix, streams, 4096)
			msgs := keyed(prefix, b.N, 100, streams)
			ctx := testCtx(b, 5*time.Minute)
			pub := outbox.NewJetStream(js)
			b.ResetTimer()
			t0 := time.Now()
			if err := pub.Publish(ctx, msgs); err != nil { // one window sliding over every message
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "events/s")
		})
		for _, batch := range []int{500, 2000} {
			b.Run(fmt.Sprintf("relay/streams=%d/batch=%d", streams, batch), func(b *testing.B) { benchRelay(b, url, dsn, streams, batch) })
		}
	}
}

// benchRelay drains b.N rows over streams streams through a relay of batch rows.
func benchRelay(b *testing.B, url, dsn string, streams, batch int) {
	prefix := uniq("RELAY")
	js := jetStreams(b, url, prefix, streams, 4096)
	db, d := setup(b, dsn)
	ctx := testCtx(b, 5*time.Minute)
	if _, err := db.ExecContext(ctx, "DELETE FROM outbox"); err != nil {
		b.Fatal(err)
	}
	ob := outbox.New(d, nil)
	msgs := keyed(prefix, b.N, 100, streams)
	for start := 0; start < len(msgs); start += 500 {
		if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
			_, err := ob.EnqueueAll(ctx, tx, msgs[start:min(start+500, len(msgs))]...)
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	relay, err := outbox.NewRelay(db, outbox.NewJetStream(js), discard(), nil, outbox.RelayConfig{BatchSize: batch})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	t0 := time.Now()
	for {
		n, err := relay.RelayOnce(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "events/s")
}
