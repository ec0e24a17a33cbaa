package smoke_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
)

func TestKafka(t *testing.T) {
	t.Parallel()
	brokers := strings.Split(infratest.Require(t, infratest.KafkaBrokers), ",")
	kafkaSmoke(t, brokers)
}

func TestKafkaEmbedded(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatalf("kfake: %v", err)
	}
	defer c.Close()
	kafkaSmoke(t, c.ListenAddrs())
}

// kafkaSmoke creates a topic with explicit partitions, produces with acks=all and a
// key, consumes through a consumer group with FetchMessage + CommitMessages, and
// proves the commit held: a second reader of the group sees only what came after.
func kafkaSmoke(t *testing.T, brokers []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topic := fmt.Sprintf("smoke.%d", time.Now().UnixNano())
	group := topic + ".group"

	createTopic(ctx, t, brokers[0], topic, 3)

	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
	}
	defer w.Close()

	const n = 20
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{
			Key:     []byte(fmt.Sprintf("order-%d", i%4)),
			Value:   []byte(strconv.Itoa(i)),
			Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")}},
		}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}

	seen := consume(ctx, t, brokers, topic, group, n)
	if len(seen) != n {
		t.Fatalf("consumed %d distinct messages, want %d", len(seen), n)
	}

	// The group's offsets were committed: a new member starts after them.
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("order-0"), Value: []byte("after-commit")}); err != nil {
		t.Fatalf("produce: %v", err)
	}
	next := consume(ctx, t, brokers, topic, group, 1)
	if _, ok := next["after-commit"]; !ok || len(next) != 1 {
		t.Fatalf("after commit, group read %v; want only the new message", keys(next))
	}
	t.Logf("Kafka %v: %d messages over 3 partitions consumed and committed by group %s", brokers, n+1, group)
}

func createTopic(ctx context.Context, t *testing.T, broker, topic string, partitions int) {
	t.Helper()
	var d kafka.Dialer
	conn, err := d.DialContext(ctx, "tcp", broker)
	if err != nil {
		t.Fatalf("dial %s: %v", broker, err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		t.Fatalf("controller: %v", err)
	}
	cc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		t.Fatalf("dial controller: %v", err)
	}
	defer cc.Close()
	if err := cc.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1}); err != nil {
		t.Fatalf("create topic: %v", err)
	}
}

// consume reads want messages through the consumer group, committing each one
// after it was handled, and returns them by value.
func consume(ctx context.Context, t *testing.T, brokers []string, topic, group string, want int) map[string]int {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        brokers,
		GroupID:        group,
		Topic:          topic,
		MaxWait:        100 * time.Millisecond,
		StartOffset:    kafka.FirstOffset,
		CommitInterval: 0, // synchronous commits
	})
	defer r.Close()
	seen := map[string]int{}
	for len(seen) < want {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch after %d of %d: %v", len(seen), want, err)
		}
		seen[string(m.Value)]++
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	return seen
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
