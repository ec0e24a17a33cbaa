package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
)

// Headers of a dead letter, as pkg/platform/consumer writes them (next to the original message's).
const (
	headerEventID     = "event-id"
	headerEventType   = "event-type"
	headerDLQReason   = "dlq-reason"
	headerDLQTopic    = "dlq-topic"
	headerDLQConsumer = "dlq-consumer"
	dlqSuffix         = ".dlq"
)

// dlqEntry is one message on a dead-letter topic.
type dlqEntry struct {
	// position is "<dlq topic>[<partition>]@<offset>".
	position string
	// topic is the original topic; consumer the group that gave up on it, when the entry says.
	topic, consumer            string
	eventID, eventType, reason string
	// orderID is the order an order event is about (its payload's, else the message key).
	orderID string
	// replayed: the replay group's committed offset is past the entry (pkg/platform/consumer/dlq).
	replayed bool
}

// DefaultReplayGroup is the Kafka consumer group whose committed offsets on a dead-letter topic
// record what the dlq command replayed (pkg/platform/consumer/dlq.DefaultReplayer).
const DefaultReplayGroup = "shopmesh-dlq-replay"

// readDLQ reads every partition of every "*.dlq" topic (of those in only, when set) from its first
// offset to its high watermark, leaves out those written before since (when set), and marks the
// entries replayGroup has replayed.
func readDLQ(ctx context.Context, brokers []string, auth sasl.Mechanism, only []string, since time.Time, replayGroup string) ([]dlqEntry, error) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: kafkaauth.Transport(auth)}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	var out []dlqEntry
	for _, t := range md.Topics {
		if t.Error != nil || !strings.HasSuffix(t.Name, dlqSuffix) || (len(only) > 0 && !slices.Contains(only, t.Name)) {
			continue
		}
		req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
		for _, p := range t.Partitions {
			req.Topics[t.Name] = append(req.Topics[t.Name], kafka.FirstOffsetOf(p.ID), kafka.LastOffsetOf(p.ID))
		}
		offs, err := client.ListOffsets(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("offsets of %s: %w", t.Name, err)
		}
		if gone(offs.Topics[t.Name]) {
			continue // deleted since the metadata was read
		}
		parts := offs.Topics[t.Name]
		slices.SortFunc(parts, func(a, b kafka.PartitionOffsets) int { return a.Partition - b.Partition })
		replayedTo, err := committed(ctx, client, replayGroup, t)
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			if p.Error != nil {
				return nil, fmt.Errorf("offsets of %s[%d]: %w", t.Name, p.Partition, p.Error)
			}
			if p.LastOffset <= p.FirstOffset {
				continue
			}
			entries, err := readPartition(ctx, brokers, auth, t.Name, p.Partition, p.FirstOffset, p.LastOffset, replayedTo[p.Partition], since)
			if err != nil {
				return nil, err
			}
			out = append(out, entries...)
		}
	}
	return out, nil
}

// committed returns the replay group's committed offset per partition of t (-1: none). A broker that
// is still loading its offsets topic (first use of a fresh cluster, a restart) is asked again.
func committed(ctx context.Context, client *kafka.Client, group string, t kafka.Topic) (map[int]int64, error) {
	parts := make([]int, len(t.Partitions))
	for i, p := range t.Partitions {
		parts[i] = p.ID
	}
	for attempt := 1; ; attempt++ {
		out, err := fetchCommitted(ctx, client, group, t.Name, parts)
		if err == nil || attempt == 20 || !coordinatorBusy(err) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(err, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func fetchCommitted(ctx context.Context, client *kafka.Client, group, topic string, parts []int) (map[int]int64, error) {
	res, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("offsets of group %s on %s: %w", group, topic, err)
	}
	if errors.Is(res.Error, kafka.GroupIdNotFound) {
		return map[int]int64{}, nil // never replayed anything (Kafka answers -1 offsets, kfake this)
	}
	if res.Error != nil {
		return nil, fmt.Errorf("offsets of group %s on %s: %w", group, topic, res.Error)
	}
	out := map[int]int64{}
	for _, p := range res.Topics[topic] {
		if errors.Is(p.Error, kafka.GroupIdNotFound) {
			continue
		}
		if p.Error != nil {
			return nil, fmt.Errorf("offsets of group %s on %s[%d]: %w", group, topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.CommittedOffset
	}
	return out, nil
}

func gone(parts []kafka.PartitionOffsets) bool {
	for _, p := range parts {
		if errors.Is(p.Error, kafka.UnknownTopicOrPartition) {
			return true
		}
	}
	return false
}

func coordinatorBusy(err error) bool {
	return errors.Is(err, kafka.NotCoordinatorForGroup) || errors.Is(err, kafka.GroupCoordinatorNotAvailable) ||
		errors.Is(err, kafka.GroupLoadInProgress)
}

// readPartition reads [first, last) of one partition, each fetch under a short deadline; entries below
// replayedTo were replayed.
func readPartition(ctx context.Context, brokers []string, auth sasl.Mechanism, topic string, partition int, first, last, replayedTo int64, since time.Time) ([]dlqEntry, error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, Dialer: kafkaauth.Dialer(auth), Topic: topic, Partition: partition,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	if err := r.SetOffset(first); err != nil {
		return nil, fmt.Errorf("%s[%d]: %w", topic, partition, err)
	}
	var out []dlqEntry
	for {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := r.FetchMessage(fctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return nil, fmt.Errorf("%s[%d]: no message at offset %d of %d within 10 s", topic, partition, r.Offset(), last)
			}
			return nil, fmt.Errorf("%s[%d]: %w", topic, partition, err)
		}
		e := dlqEntry{position: fmt.Sprintf("%s[%d]@%d", topic, partition, m.Offset), replayed: m.Offset < replayedTo}
		for _, h := range m.Headers {
			v := string(h.Value)
			switch h.Key {
			case headerEventID:
				e.eventID = v
			case headerEventType:
				e.eventType = v
			case headerDLQReason:
				e.reason = v
			case headerDLQTopic:
				e.topic = v
			case headerDLQConsumer:
				e.consumer = v
			}
		}
		if e.topic == "" {
			e.topic = strings.TrimSuffix(topic, dlqSuffix)
		}
		e.orderID = orderOf(e.eventType, m.Value, m.Key)
		if since.IsZero() || !m.Time.Before(since) {
			out = append(out, e)
		}
		if m.Offset+1 >= last {
			return out, nil
		}
	}
}

// orderOf returns the order an OrderConfirmed or OrderCancelled is about: its payload's order id, else
// the message key (the outbox keys order events by order id); "" for other events.
func orderOf(eventType string, payload, key []byte) string {
	var ev interface {
		proto.Message
		GetOrderId() string
	}
	switch protoreflect.FullName(eventType) {
	case (&eventsv1.OrderConfirmed{}).ProtoReflect().Descriptor().FullName():
		ev = &eventsv1.OrderConfirmed{}
	case (&eventsv1.OrderCancelled{}).ProtoReflect().Descriptor().FullName():
		ev = &eventsv1.OrderCancelled{}
	default:
		return ""
	}
	if err := proto.Unmarshal(payload, ev); err == nil && ev.GetOrderId() != "" {
		return ev.GetOrderId()
	}
	return string(key)
}
