package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// The command against an in-process Kafka: a dead letter as the consumer writes it is listed,
// replayed to its topic with its event id and without the dead-letter headers, and not replayed twice.
func TestListReplayKafka(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	const topic = "shop.events"
	if err := outbox.EnsureTopics(ctx, brokers, nil, outbox.Topic{Name: topic, Partitions: 1},
		outbox.Topic{Name: consumer.DeadLetterTopic(topic), Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Topic: consumer.DeadLetterTopic(topic), Key: []byte("o1"), Value: []byte("payload"),
		Headers: []kafka.Header{
			{Key: outbox.HeaderEventID, Value: []byte("evt-1")},
			{Key: consumer.HeaderDLQTopic, Value: []byte(topic)},
			{Key: consumer.HeaderDLQPosition, Value: []byte(topic + "/0/7")},
			{Key: consumer.HeaderDLQConsumer, Value: []byte("payment")},
			{Key: consumer.HeaderDLQCause, Value: []byte(consumer.CausePermanent)},
			{Key: consumer.HeaderDLQAttempts, Value: []byte("1")},
			{Key: consumer.HeaderDLQReason, Value: []byte("decode: bad wire type")},
			{Key: consumer.HeaderDLQTime, Value: []byte("2026-12-06T22:00:00Z")},
		}}); err != nil {
		t.Fatal(err)
	}
	cmd := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, append(args, "-brokers", strings.Join(brokers, ","), "-topic", consumer.DeadLetterTopic(topic)), os.Getenv, &out); err != nil {
			t.Fatalf("dlq %v: %v\n%s", args, err, out.String())
		}
		t.Logf("dlq %s:\n%s", args[0], out.String())
		return out.String()
	}
	if out := cmd("list"); !strings.Contains(out, "evt-1") || !strings.Contains(out, "decode: bad wire type") ||
		!strings.Contains(out, "payment") || !strings.Contains(out, "false") {
		t.Errorf("list:\n%s", out)
	}
	if out := cmd("replay"); !strings.Contains(out, "replayed 1,") {
		t.Errorf("replay:\n%s", out)
	}
	if out := cmd("replay"); !strings.Contains(out, "replayed 0,") {
		t.Errorf("second replay:\n%s", out)
	}
	if out := cmd("list"); !strings.Contains(out, "true") {
		t.Errorf("list after replay:\n%s", out)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]string{}
	for _, kh := range m.Headers {
		h[kh.Key] = string(kh.Value)
	}
	if string(m.Key) != "o1" || string(m.Value) != "payload" || h[outbox.HeaderEventID] != "evt-1" || h[consumer.HeaderDLQReason] != "" ||
		h["dlq-replayed-from"] == "" {
		t.Errorf("replayed message key %q value %q headers %v", m.Key, m.Value, h)
	}
	if err := run(ctx, []string{"list"}, os.Getenv, &bytes.Buffer{}); err == nil {
		t.Error("list without a broker accepted")
	}
}
