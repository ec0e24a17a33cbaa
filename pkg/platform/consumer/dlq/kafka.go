package dlq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

// Kafka reads and replays one dead-letter topic.
type Kafka struct {
	Brokers []string
	// SASL authenticates every connection (nil: none; the dlq command uses KAFKA_USERNAME and
	// KAFKA_PASSWORD). The user needs Read on the topic and the group, Write on the original topics.
	SASL sasl.Mechanism
	// Topic is the dead-letter topic, e.g. "shopmesh.order.events.dlq".
	Topic string
	// Group is the consumer group whose committed offsets record the replays (default
	// DefaultReplayer). Nothing consumes as that group: the offsets are committed directly.
	Group string
	// Timeout bounds each broker request (default 10 s).
	Timeout time.Duration
}

func (k Kafka) withDefaults() Kafka {
	if k.Group == "" {
		k.Group = DefaultReplayer
	}
	if k.Timeout <= 0 {
		k.Timeout = 10 * time.Second
	}
	return k
}

// partitionRange is a partition of the dead-letter topic: its first and next offsets, and the replay
// group's committed offset (-1 when it has none).
type partitionRange struct {
	partition               int
	first, next, replayedTo int64
}

func (k Kafka) client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: k.Timeout, Transport: kafkaauth.Transport(k.SASL)}
}

func (k Kafka) ranges(ctx context.Context) ([]partitionRange, error) {
	c := k.client()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{k.Topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", k.Topic, err)
	}
	var parts []int
	for _, t := range md.Topics {
		if t.Name != k.Topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("topic %s: %w", k.Topic, t.Error)
		}
		for _, p := range t.Partitions {
			parts = append(parts, p.ID)
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("topic %s: no partitions", k.Topic)
	}
	slices.Sort(parts)
	var reqs []kafka.OffsetRequest
	for _, p := range parts {
		reqs = append(reqs, kafka.FirstOffsetOf(p), kafka.LastOffsetOf(p))
	}
	offs, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{k.Topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("offsets %s: %w", k.Topic, err)
	}
	fetched, err := k.offsetFetch(ctx, c, parts)
	if err != nil {
		return nil, err
	}
	committed := map[int]int64{}
	for _, p := range fetched.Topics[k.Topic] {
		committed[p.Partition] = p.CommittedOffset
	}
	var out []partitionRange
	for _, p := range offs.Topics[k.Topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("offsets %s/%d: %w", k.Topic, p.Partition, p.Error)
		}
		r := partitionRange{partition: p.Partition, first: p.FirstOffset, next: p.LastOffset, replayedTo: -1}
		if c, ok := committed[p.Partition]; ok {
			r.replayedTo = c
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b partitionRange) int { return a.partition - b.partition })
	return out, nil
}

// read calls fn for every message of a partition from offset from up to next (exclusive).
// coordinatorBusy are the answers of a broker whose group coordinator is not ready yet (a broker just
// started loads __consumer_offsets, or the coordinator moved): worth asking again.
var coordinatorBusy = []error{kafka.GroupLoadInProgress, kafka.GroupCoordinatorNotAvailable, kafka.NotCoordinatorForGroup}

// offsetFetch returns the group's committed offsets of parts, asking again (up to 20 times, 100 ms to 1 s
// apart, within ctx) while the group coordinator is not ready. A group that never committed is no error.
func (k Kafka) offsetFetch(ctx context.Context, c *kafka.Client, parts []int) (*kafka.OffsetFetchResponse, error) {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		fetched, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: k.Group, Topics: map[string][]int{k.Topic: parts}})
		if err == nil {
			err = fetched.Error
			// A group that never committed: kfake says so, Kafka answers offset -1.
			if errors.Is(err, kafka.GroupIdNotFound) {
				err = nil
			}
			for _, p := range fetched.Topics[k.Topic] {
				if err == nil && p.Error != nil && !errors.Is(p.Error, kafka.GroupIdNotFound) {
					err = fmt.Errorf("partition %d: %w", p.Partition, p.Error)
				}
			}
		}
		if err == nil {
			return fetched, nil
		}
		busy := slices.ContainsFunc(coordinatorBusy, func(e error) bool { return errors.Is(err, e) })
		if !busy || attempt == 20 {
			return nil, fmt.Errorf("replay offsets of %s on %s: %w", k.Group, k.Topic, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("replay offsets of %s on %s: %w (last: %w)", k.Group, k.Topic, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

func (k Kafka) read(ctx context.Context, partition int, from, next int64, fn func(kafka.Message) error) error {
	if from >= next {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Dialer: kafkaauth.Dialer(k.SASL), Topic: k.Topic, Partition: partition,
		MaxWait: 500 * time.Millisecond, MaxBytes: 10 << 20})
	defer r.Close()
	if err := r.SetOffset(from); err != nil {
		return err
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 3*k.Timeout)
		m, err := r.FetchMessage(rctx)
		cancel()
		if err != nil {
			return fmt.Errorf("read %s/%d at %d: %w", k.Topic, partition, from, err)
		}
		if err := fn(m); err != nil {
			return err
		}
		if m.Offset+1 >= next {
			return nil
		}
	}
}

func kafkaEntry(m kafka.Message, replayedTo int64) Entry {
	h := make(map[string]string, len(m.Headers))
	for _, kh := range m.Headers {
		h[kh.Key] = string(kh.Value)
	}
	e := entry(fmt.Sprintf("%s/%d/%d", m.Topic, m.Partition, m.Offset), m.Key, m.Value, h)
	e.Replayed = m.Offset < replayedTo
	return e
}

// List returns every dead letter the topic holds, in partition and offset order.
func (k Kafka) List(ctx context.Context) ([]Entry, error) {
	k = k.withDefaults()
	ranges, err := k.ranges(ctx)
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, r := range ranges {
		err := k.read(ctx, r.partition, r.first, r.next, func(m kafka.Message) error {
			out = append(out, kafkaEntry(m, r.replayedTo))
			return nil
		})
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// Replay republishes the dead letters not replayed yet to their original topics (key, payload and
// headers as consumed, event id included, with HeaderReplayedFrom added) and then commits the replay
// group's offset past them. only, when not nil, selects entries by event id: the others are skipped,
// and then nothing is committed, so a later full replay still sends them (entries sent twice are
// dropped by the consumers' inboxes). Two replays running at once may both send an entry; the
// inboxes drop the second too.
func (k Kafka) Replay(ctx context.Context, only func(Entry) bool) (Report, error) {
	k = k.withDefaults()
	ranges, err := k.ranges(ctx)
	if err != nil {
		return Report{}, err
	}
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Transport: kafkaauth.Transport(k.SASL), RequiredAcks: kafka.RequireAll, Balancer: &kafka.Hash{},
		BatchTimeout: 5 * time.Millisecond, MaxAttempts: 3, WriteTimeout: k.Timeout}
	defer func() { _ = w.Close() }()
	var rep Report
	commits := map[string][]kafka.OffsetCommit{}
	for _, r := range ranges {
		from := max(r.first, r.replayedTo)
		var batch []kafka.Message
		var entries []Entry
		err := k.read(ctx, r.partition, from, r.next, func(m kafka.Message) error {
			e := kafkaEntry(m, r.replayedTo)
			switch {
			case only != nil && !only(e):
				rep.Skipped++
				return nil
			case e.Topic == "":
				rep.Unroutable++
				return nil
			}
			out := kafka.Message{Topic: e.Topic, Key: e.Key, Value: e.Payload}
			for hk, hv := range e.republished() {
				out.Headers = append(out.Headers, kafka.Header{Key: hk, Value: []byte(hv)})
			}
			batch = append(batch, out)
			entries = append(entries, e)
			return nil
		})
		if err != nil {
			return rep, err
		}
		if len(batch) > 0 {
			wctx, cancel := context.WithTimeout(ctx, 3*k.Timeout)
			err := w.WriteMessages(wctx, batch...)
			cancel()
			if err != nil {
				return rep, fmt.Errorf("republish %d entries of %s/%d: %w", len(batch), k.Topic, r.partition, err)
			}
			rep.Replayed = append(rep.Replayed, entries...)
		}
		if from < r.next {
			commits[k.Topic] = append(commits[k.Topic], kafka.OffsetCommit{Partition: r.partition, Offset: r.next})
		}
	}
	if only != nil || len(commits) == 0 {
		return rep, nil
	}
	// No member consumes as the replay group, so the commit is a standalone one (generation -1).
	res, err := k.client().OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: k.Group, GenerationID: -1, Topics: commits})
	if err != nil {
		return rep, fmt.Errorf("record replay in group %s: %w", k.Group, err)
	}
	var errs []error
	for _, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				errs = append(errs, fmt.Errorf("record replay of %s/%d: %w", k.Topic, p.Partition, p.Error))
			}
		}
	}
	return rep, errors.Join(errs...)
}
