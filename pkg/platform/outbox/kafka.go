package outbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/segmentio/kafka-go"
)

// Kafka publishes to Kafka with every replica's acknowledgement and keys hashed to partitions, so the
// events of one aggregate stay in one partition, in order.
type Kafka struct {
	w *kafka.Writer
}

// NewKafka returns a publisher to the brokers ("host:port"). Topics must exist (EnsureTopics): auto
// creation would give them the broker's default partition count.
func NewKafka(brokers []string) *Kafka {
	return &Kafka{w: &kafka.Writer{
		Addr: kafka.TCP(brokers...),
		// The zero value is RequireNone: the broker would not even have to write the event.
		RequiredAcks: kafka.RequireAll,
		Balancer:     &kafka.Hash{},
		// The default 1 s makes every small batch wait; the relay already batches.
		BatchTimeout: 5 * time.Millisecond,
		BatchSize:    1000,
		MaxAttempts:  3,
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
	}}
}

// Publish writes msgs and returns once all are acknowledged.
func (k *Kafka) Publish(ctx context.Context, msgs []Message) error {
	km := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		headers := make([]kafka.Header, 0, len(m.Headers)+1)
		headers = append(headers, kafka.Header{Key: HeaderEventID, Value: []byte(m.ID)})
		for k, v := range m.Headers {
			headers = append(headers, kafka.Header{Key: k, Value: []byte(v)})
		}
		km[i] = kafka.Message{Topic: m.Topic, Key: []byte(m.Key), Value: m.Payload, Headers: headers, Time: m.CreatedAt}
	}
	if err := k.w.WriteMessages(ctx, km...); err != nil {
		return fmt.Errorf("kafka write: %w", err)
	}
	return nil
}

// Close flushes and closes the writer.
func (k *Kafka) Close() error { return k.w.Close() }

// Topic is a topic EnsureTopics creates.
type Topic struct {
	Name              string
	Partitions        int
	ReplicationFactor int
}

// EnsureTopics creates the topics that do not exist yet, with explicit partition counts, and waits
// until the cluster's metadata lists them all. Existing topics are left as they are.
func EnsureTopics(ctx context.Context, brokers []string, topics ...Topic) error {
	if len(brokers) == 0 {
		return errors.New("ensure topics: no brokers")
	}
	addr, err := net.ResolveTCPAddr("tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	client := &kafka.Client{Addr: addr, Timeout: 10 * time.Second}
	req := &kafka.CreateTopicsRequest{Addr: addr}
	names := make([]string, 0, len(topics))
	for _, t := range topics {
		rf := t.ReplicationFactor
		if rf <= 0 {
			rf = 1
		}
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: t.Name, NumPartitions: t.Partitions, ReplicationFactor: rf})
		names = append(names, t.Name)
	}
	resp, err := client.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for name, err := range resp.Errors {
		if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", name, err)
		}
	}
	for {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Addr: addr, Topics: names})
		if err == nil && allReady(md, names) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics %v not ready: %w", names, errors.Join(ctx.Err(), err))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func allReady(md *kafka.MetadataResponse, names []string) bool {
	ready := make(map[string]bool, len(md.Topics))
	for _, t := range md.Topics {
		if t.Error != nil || len(t.Partitions) == 0 {
			continue
		}
		ok := true
		for _, p := range t.Partitions {
			if p.Error != nil || p.Leader.Host == "" {
				ok = false
			}
		}
		ready[t.Name] = ok
	}
	for _, n := range names {
		if !ready[n] {
			return false
		}
	}
	return true
}
