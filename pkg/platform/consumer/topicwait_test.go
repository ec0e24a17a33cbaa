package consumer_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// signalWriter is a log sink that closes seen once a line containing want was written.
type signalWriter struct {
	mu   sync.Mutex
	want []byte
	seen chan struct{}
	done bool
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done && bytes.Contains(p, w.want) {
		w.done = true
		close(w.seen)
	}
	return len(p), nil
}

// TestKafkaConsumerStartedBeforeItsTopic: a consumer whose topic does not exist yet neither creates it
// (the real harness broker has auto.create.topics.enable=true, which kafka-go's group leader would
// trigger) nor stays idle once the producer creates it, with the producer's partition count.
func TestKafkaConsumerStartedBeforeItsTopic(t *testing.T) {
	t.Parallel()
	for _, e := range envs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			brokers, _ := e.kafkaBrokers(t, false)
			ctx := timeout(t, 2*time.Minute)
			topic := uniq("wait-")
			const partitions, messages = 5, 40

			got := make(chan string, messages)
			sink := &signalWriter{want: []byte("waits for its topics"), seen: make(chan struct{})}
			c, err := consumer.NewKafka(consumer.KafkaConfig{Brokers: brokers, GroupID: uniq("g-"), Topics: []string{topic},
				MaxWait: 100 * time.Millisecond}, func(_ context.Context, m consumer.Message) error {
				got <- string(m.Key)
				return nil
			}, slog.New(slog.NewTextHandler(sink, nil)))
			if err != nil {
				t.Fatal(err)
			}
			runCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- c.Run(runCtx) }()
			t.Cleanup(func() {
				stop()
				if err := <-done; err != nil {
					t.Errorf("run: %v", err)
				}
			})
			select {
			case <-sink.seen:
			case <-ctx.Done():
				t.Fatal("the consumer never reported waiting for its topic")
			}
			client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
			md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
			if err != nil {
				t.Fatal(err)
			}
			for _, tp := range md.Topics {
				if tp.Name == topic && tp.Error == nil {
					t.Fatalf("the waiting consumer created %s (%d partitions)", topic, len(tp.Partitions))
				}
			}

			// The producer creates its topic, with its own partition count, and publishes.
			if err := outbox.EnsureTopics(ctx, brokers, nil, outbox.Topic{Name: topic, Partitions: partitions},
				outbox.Topic{Name: consumer.DeadLetterTopic(topic), Partitions: 1}); err != nil {
				t.Fatal(err)
			}
			pub := outbox.NewKafka(brokers, nil)
			t.Cleanup(func() { _ = pub.Close() })
			var msgs []outbox.Message
			for i := range messages {
				id := uniq("m-")
				msgs = append(msgs, outbox.Message{ID: id, Topic: topic, Key: id, Payload: []byte{byte(i)}})
			}
			if err := pub.Publish(ctx, msgs); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for len(seen) < messages {
				select {
				case k := <-got:
					seen[k] = true
				case <-ctx.Done():
					t.Fatalf("consumed %d of %d messages", len(seen), messages)
				}
			}
			md, err = client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
			if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) != partitions {
				t.Fatalf("topic metadata = %+v, %v; want %d partitions (the producer's)", md, err, partitions)
			}
			t.Logf("%s: consumer started before %s; all %d messages consumed from the producer's %d partitions",
				e.name, topic, messages, partitions)
		})
	}
}
