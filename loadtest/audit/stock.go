package audit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
)

// readStockHistory adds to events the StockChanged events on inventory's Kafka topic written at or
// after since (zero: all), each event id once: the relay deletes an outbox row once it is sent, so the
// topic is where a product's history is kept. A missing topic adds nothing.
func readStockHistory(ctx context.Context, brokers []string, auth sasl.Mechanism, since time.Time, events map[string][]stockEvent) error {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: kafkaauth.Transport(auth)}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{inventoryTopic}})
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	var parts []int
	for _, t := range md.Topics {
		if t.Name != inventoryTopic || t.Error != nil {
			continue
		}
		for _, p := range t.Partitions {
			parts = append(parts, p.ID)
		}
	}
	if len(parts) == 0 {
		return nil
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range parts {
		req.Topics[inventoryTopic] = append(req.Topics[inventoryTopic], kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	offs, err := client.ListOffsets(ctx, req)
	if err != nil {
		return fmt.Errorf("%s offsets: %w", inventoryTopic, err)
	}
	seen := map[string]bool{}
	for _, evs := range events {
		for _, e := range evs {
			seen[e.id] = true
		}
	}
	for _, p := range offs.Topics[inventoryTopic] {
		if p.Error != nil {
			return fmt.Errorf("%s[%d] offsets: %w", inventoryTopic, p.Partition, p.Error)
		}
		if p.FirstOffset >= p.LastOffset {
			continue
		}
		if err := readStockPartition(ctx, brokers, auth, p.Partition, p.FirstOffset, p.LastOffset, since, seen, events); err != nil {
			return err
		}
	}
	return nil
}

func readStockPartition(ctx context.Context, brokers []string, auth sasl.Mechanism, partition int, first, last int64, since time.Time,
	seen map[string]bool, events map[string][]stockEvent) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, Dialer: kafkaauth.Dialer(auth), Topic: inventoryTopic, Partition: partition,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 250 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	if err := r.SetOffset(first); err != nil {
		return fmt.Errorf("%s[%d]: %w", inventoryTopic, partition, err)
	}
	for {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := r.FetchMessage(fctx)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				return fmt.Errorf("%s[%d]: no message at offset %d of %d within 10 s", inventoryTopic, partition, r.Offset(), last)
			}
			return fmt.Errorf("%s[%d]: %w", inventoryTopic, partition, err)
		}
		var ev eventsv1.StockChanged
		if (since.IsZero() || !m.Time.Before(since)) && proto.Unmarshal(m.Value, &ev) == nil && ev.GetSku() != "" && !seen[ev.GetEventId()] {
			seen[ev.GetEventId()] = true // the relay delivers at least once: a repeat is the same event
			events[ev.GetSku()] = append(events[ev.GetSku()], stockEvent{
				id: ev.GetEventId(), version: ev.GetAggregateVersion(), delta: ev.GetDelta(), cause: ev.GetCause(),
			})
		}
		if m.Offset+1 >= last {
			return nil
		}
	}
}
