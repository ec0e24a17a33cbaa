package outbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

// Kafka publishes to Kafka with every replica's acknowledgement and keys hashed to partitions, so the
// events of one aggregate stay in one partition, in order.
type Kafka struct {
	w        *kafka.Writer
	maxBytes int
}

// MaxKafkaMessageBytes is the largest message (key, value and headers) NewKafka's publisher sends: the
// broker's default message.max.bytes (1 MiB + 12). A larger one is refused as Permanent, so the relay
// parks it instead of retrying it for ever.
const MaxKafkaMessageBytes = 1048588

// NewKafka returns a publisher to the brokers ("host:port") authenticating with auth (nil: none; see
// config.Kafka.SASL). Topics must exist (EnsureTopics): auto creation would give them the broker's
// default partition count.
func NewKafka(brokers []string, auth sasl.Mechanism) *Kafka {
	return &Kafka{w: &kafka.Writer{
		Addr:      kafka.TCP(brokers...),
		Transport: kafkaauth.Transport(auth),
		// The zero value is RequireNone: the broker would not even have to write the event.
		RequiredAcks: kafka.RequireAll,
		Balancer:     &kafka.Hash{},
		// The relay hands a whole batch to one WriteMessages call, and kafka-go adds a call's messages to
		// a partition's batch under the partition's lock, so there is nothing to wait for: the timeout
		// only delays every publish (the default 1 s would make every small batch wait that long, and
		// 5 ms did; RelayConfig.MinInterval is what coalesces commits into batches).
		BatchTimeout: time.Millisecond,
		BatchSize:    1000,
		MaxAttempts:  3,
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		// Above any message Publish lets through, so the writer never refuses a whole batch for one.
		BatchBytes: MaxKafkaMessageBytes + 64<<10,
	}, maxBytes: MaxKafkaMessageBytes}
}

// Publish writes msgs and returns once all are acknowledged. A failure is a *PublishError naming the
// first message not acknowledged: Permanent when the message itself is refused (larger than
// MaxKafkaMessageBytes, invalid topic, invalid record), Retryable for an unknown topic, Transient when the cluster is the cause
// (unreachable, timeouts, no leader, authorization), Retryable otherwise.
func (k *Kafka) Publish(ctx context.Context, msgs []Message) error {
	km := make([]kafka.Message, len(msgs))
	tooLarge := -1
	for i, m := range msgs {
		headers := make([]kafka.Header, 0, len(m.Headers)+1)
		headers = append(headers, kafka.Header{Key: HeaderEventID, Value: []byte(m.ID)})
		size := len(m.Key) + len(m.Payload) + len(HeaderEventID) + len(m.ID)
		for k, v := range m.Headers {
			headers = append(headers, kafka.Header{Key: k, Value: []byte(v)})
			size += len(k) + len(v)
		}
		km[i] = kafka.Message{Topic: m.Topic, Key: []byte(m.Key), Value: m.Payload, Headers: headers, Time: m.CreatedAt}
		if tooLarge < 0 && size > k.maxBytes {
			tooLarge = i
		}
	}
	if tooLarge >= 0 {
		// Send what comes before it; the relay parks it and holds back its key's later events.
		km = km[:tooLarge]
	}
	if len(km) > 0 {
		if err := k.w.WriteMessages(ctx, km...); err != nil {
			return kafkaError(err)
		}
	}
	if tooLarge >= 0 {
		return &PublishError{Index: tooLarge, Kind: Permanent, Err: fmt.Errorf("kafka message of %s over %d bytes: %w",
			msgs[tooLarge].ID, k.maxBytes, kafka.MessageSizeTooLarge)}
	}
	return nil
}

// kafkaError turns a writer error into a *PublishError at the first message that failed.
func kafkaError(err error) error {
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for i, e := range we {
			if e != nil {
				return &PublishError{Index: i, Kind: kafkaKind(e), Err: fmt.Errorf("kafka write: %w", e)}
			}
		}
	}
	var mtl kafka.MessageTooLargeError
	if errors.As(err, &mtl) {
		// Not expected (BatchBytes is above maxBytes); the writer sent nothing and does not say which.
		return &PublishError{Index: 0, Kind: Retryable, Err: fmt.Errorf("kafka write: %w", err)}
	}
	return &PublishError{Index: 0, Kind: kafkaKind(err), Err: fmt.Errorf("kafka write: %w", err)}
}

// kafkaKind classifies a Kafka error for the relay.
func kafkaKind(err error) ErrorKind {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return Transient // network, timeouts, a closed writer: the cluster, not the message
	}
	switch ke {
	case kafka.MessageSizeTooLarge, kafka.InvalidTopic, kafka.RecordListTooLarge, kafka.InvalidRecord,
		kafka.InvalidMessageSize, kafka.InvalidTimestamp:
		return Permanent
	case kafka.UnknownTopicOrPartition:
		// kafka-go calls it temporary, but producers create their topics before they relay (EnsureTopics):
		// a topic still missing after MaxAttempts is the row's fault. Counted as Transient it stalled the
		// whole lane for ever, with nothing parked or recorded.
		return Retryable
	case kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed, kafka.SASLAuthenticationFailed,
		kafka.BrokerNotAvailable, kafka.ReplicaNotAvailable:
		return Transient
	}
	if ke.Temporary() || ke.Timeout() {
		return Transient
	}
	return Retryable
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
// until the cluster's metadata lists them all, authenticating with auth (nil: none). Existing topics are
// left as they are. On a broker with ACLs the user needs Create on each topic (infra.sh's kafkaacl
// grants it on the topics the service writes).
func EnsureTopics(ctx context.Context, brokers []string, auth sasl.Mechanism, topics ...Topic) error {
	if len(brokers) == 0 {
		return errors.New("ensure topics: no brokers")
	}
	addr, err := net.ResolveTCPAddr("tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("ensure topics: %w", err)
	}
	client := &kafka.Client{Addr: addr, Timeout: 10 * time.Second, Transport: kafkaauth.Transport(auth)}
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
