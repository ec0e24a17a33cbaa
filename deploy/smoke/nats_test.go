package smoke_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
)

func TestJetStream(t *testing.T) {
	t.Parallel()
	jetStreamSmoke(t, infratest.Require(t, infratest.NatsURL))
}

func TestJetStreamEmbedded(t *testing.T) {
	t.Parallel()
	ns, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded nats-server not ready")
	}
	jetStreamSmoke(t, ns.ClientURL())
}

// jetStreamSmoke publishes with Nats-Msg-Id (a duplicate is dropped by the
// server), consumes through a durable consumer with explicit acks, and checks the
// consumer's ack floor moved past every message.
func jetStreamSmoke(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	name := fmt.Sprintf("SMOKE_%d", time.Now().UnixNano())
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       name,
		Subjects:   []string{name + ".>"},
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	defer js.DeleteStream(context.Background(), name) //nolint:errcheck // best-effort cleanup

	const n = 10
	for i := 0; i < n; i++ {
		for attempt := 0; attempt < 2; attempt++ { // every message is published twice
			msg := nats.NewMsg(fmt.Sprintf("%s.order.%d", name, i))
			msg.Data = []byte(fmt.Sprint(i))
			msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("evt-%d", i))
			ack, err := js.PublishMsg(ctx, msg)
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			if attempt == 1 && !ack.Duplicate {
				t.Fatalf("second publish of evt-%d was not flagged duplicate", i)
			}
		}
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.State.Msgs != n {
		t.Fatalf("stream holds %d messages, want %d (de-duplicated)", info.State.Msgs, n)
	}

	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:    "smoke",
		AckPolicy:  jetstream.AckExplicitPolicy,
		AckWait:    5 * time.Second,
		MaxDeliver: 5,
	})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	got := 0
	for got < n {
		batch, err := cons.Fetch(n-got, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("fetch: %v", err)
		}
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("ack: %v", err)
			}
			got++
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("batch: %v", err)
		}
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	if ci.AckFloor.Stream != n || ci.NumAckPending != 0 {
		t.Fatalf("ack floor %d, pending %d; want %d and 0", ci.AckFloor.Stream, ci.NumAckPending, n)
	}
	t.Logf("JetStream %s: %d messages (%d publishes) consumed and acked by durable consumer", url, n, 2*n)
}
