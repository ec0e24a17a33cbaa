package audit_test

import (
	"cmp"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/loadtest/audit"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
)

// deadLetter is a message as pkg/platform/consumer dead-letters it.
type deadLetter struct {
	eventID, consumer string
	// event is the payload, an OrderConfirmed or OrderCancelled; nil: an undecodable one.
	event proto.Message
}

func produce(t *testing.T, brokers []string, topic string, msgs []deadLetter) {
	t.Helper()
	produceAs(t, nil, brokers, topic, msgs)
}

// produceAs produces as the user of auth (kafkaauth; nil: without authentication).
func produceAs(t *testing.T, auth sasl.Mechanism, brokers []string, topic string, msgs []deadLetter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, RequiredAcks: kafka.RequireAll,
		BatchTimeout: 10 * time.Millisecond, AllowAutoTopicCreation: false, Transport: kafkaauth.Transport(auth)}
	defer func() { _ = w.Close() }()
	out := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		eventType, payload := "shopmesh.events.v1.OrderConfirmed", []byte("undecodable")
		if m.event != nil {
			eventType = string(m.event.ProtoReflect().Descriptor().FullName())
			var err error
			if payload, err = proto.Marshal(m.event); err != nil {
				t.Fatal(err)
			}
		}
		h := []kafka.Header{
			{Key: "event-id", Value: []byte(m.eventID)},
			{Key: "event-type", Value: []byte(eventType)},
			{Key: "dlq-reason", Value: []byte("test: poison")},
			{Key: "dlq-topic", Value: []byte("shopmesh.order.events")},
		}
		if m.consumer != "" {
			h = append(h, kafka.Header{Key: "dlq-consumer", Value: []byte(m.consumer)})
		}
		out[i] = kafka.Message{Key: []byte("order"), Value: payload, Headers: h}
	}
	if err := w.WriteMessages(ctx, out...); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
}

// dlqWorld is the consistent shop with seven dead letters of order events: one replayed (offset 0,
// below the replay group's offset), one applied by the consumer that gave up on it, one never applied
// (offset 2), one without a consumer applied by both order consumers, one without a consumer applied
// by payment only (offset 4), and two whose effect the order service's workers put in place directly
// (o1's capture, o2's release).
func dlqWorld(suffix string) (*world, []deadLetter) {
	w := consistent()
	id := func(s string) string { return s + "-" + suffix }
	w.paymentIn = []inboxRow{{"payment", id("applied")}, {"payment", id("both")}, {"payment", id("half")}}
	w.inventoryIn = []inboxRow{{"inventory", id("both")}}
	return w, []deadLetter{
		{eventID: id("replayed"), consumer: "inventory"},
		{eventID: id("applied"), consumer: "payment"},
		{eventID: id("lost"), consumer: "inventory"},
		{eventID: id("both")},
		{eventID: id("half")},
		{eventID: id("captured"), consumer: "payment", event: &eventsv1.OrderConfirmed{EventId: id("captured"), OrderId: "o1"}},
		{eventID: id("released"), consumer: "inventory", event: &eventsv1.OrderCancelled{EventId: id("released"), OrderId: "o2"}},
	}
}

// markReplayed commits the replay group's offset on partition 0 of topic, as the dlq command does
// after a replay.
func markReplayed(t *testing.T, brokers []string, topic string, next int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	// A fresh broker answers "not coordinator" until its offsets topic is loaded.
	var err error
	for range 40 {
		var res *kafka.OffsetCommitResponse
		res, err = client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: audit.DefaultReplayGroup, GenerationID: -1,
			Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: 0, Offset: next}}}})
		if err == nil {
			for _, ps := range res.Topics {
				for _, p := range ps {
					err = cmp.Or(err, p.Error)
				}
			}
		}
		if err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("commit the replay offset: %v", err)
}

func TestDeadLettersAreAccountedFor(t *testing.T) {
	t.Parallel()
	const dlqTopic = "shopmesh.order.events.dlq"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, dlqTopic, "shopmesh.order.events"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	brokers := cluster.ListenAddrs()
	w, msgs := dlqWorld("x")
	produce(t, brokers, dlqTopic, msgs)
	// Messages on a topic that is not a dead-letter topic are not counted.
	produce(t, brokers, "shopmesh.order.events", []deadLetter{{eventID: "not-a-dead-letter"}})
	d := write(t, sqldbtest.SQLite, w)

	// Before any replay the replay group does not exist (kfake says so with GROUP_ID_NOT_FOUND).
	r := runAudit(t, d, w, brokers...)
	if r.DLQEntries != 7 || r.DLQUnaccounted != 3 || !hasViolation(r, "event replayed-x") {
		t.Fatalf("before the replay: DLQ %d entries, %d unaccounted; want 7, 3 (replayed-x among them)", r.DLQEntries, r.DLQUnaccounted)
	}

	markReplayed(t, brokers, dlqTopic, 1)
	r = runAudit(t, d, w, brokers...)
	if r.DLQEntries != 7 || r.DLQUnaccounted != 2 || r.OK() {
		t.Fatalf("DLQ %d entries, %d unaccounted, OK %v; want 7, 2, false", r.DLQEntries, r.DLQUnaccounted, r.OK())
	}
	for _, want := range []string{
		"dead letter shopmesh.order.events.dlq[0]@2: event lost-x (shopmesh.events.v1.OrderConfirmed) of shopmesh.order.events not applied by inventory, not replayed, effect not in place; reason: test: poison",
		"dead letter shopmesh.order.events.dlq[0]@4: event half-x (shopmesh.events.v1.OrderConfirmed) of shopmesh.order.events not applied by inventory, not replayed, effect not in place",
	} {
		if !hasViolation(r, want) {
			t.Errorf("no violation contains %q; got:\n%s", want, strings.Join(r.Violations, "\n"))
		}
	}
	if !strings.HasSuffix(r.Line(), "DLQ 7 (2 unaccounted); 2 violations") {
		t.Errorf("Line() = %q", r.Line())
	}
}

// On a Kafka that requires SASL/SCRAM-SHA-512 (an INFRA_AUTH=1 set) the audit reads the dead letters
// with the credential it is given (Config.KafkaSASL, the admin's KAFKA_USERNAME/KAFKA_PASSWORD in the
// audit and chaos commands); without one the broker refuses it and the audit says so.
func TestDeadLettersOnAuthenticatingKafka(t *testing.T) {
	t.Parallel()
	const dlqTopic = "shopmesh.order.events.dlq"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, dlqTopic),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "admin", "kafka-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	admin, err := kafkaauth.Mechanism("admin", "kafka-secret")
	if err != nil {
		t.Fatal(err)
	}
	brokers := cluster.ListenAddrs()
	w, msgs := dlqWorld("auth")
	produceAs(t, admin, brokers, dlqTopic, msgs)
	d := write(t, sqldbtest.SQLite, w)
	cfg := audit.Config{Order: strings.TrimPrefix(d.order, "sqlite:"), Inventory: strings.TrimPrefix(d.inventory, "sqlite:"),
		Payment: strings.TrimPrefix(d.payment, "sqlite:"), Kafka: brokers, DLQTopics: []string{dlqTopic}}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := audit.Run(ctx, cfg); err == nil {
		t.Error("the audit read the dead letters of an authenticating Kafka without a credential")
	} else {
		t.Logf("without a credential: %v", err)
	}
	cfg.KafkaSASL = admin
	r, err := audit.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.DLQEntries != 7 {
		t.Fatalf("DLQ %d entries, want 7", r.DLQEntries)
	}
}

// A campaign's scenario counts only the dead letters written since it started: the Kafka is shared
// with earlier scenarios and with test suites that dead-letter on purpose.
func TestDeadLettersBeforeSinceAreLeftOut(t *testing.T) {
	t.Parallel()
	const dlqTopic = "shopmesh.order.events.dlq"
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, dlqTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	brokers := cluster.ListenAddrs()
	w, msgs := dlqWorld("old")
	produce(t, brokers, dlqTopic, msgs)
	time.Sleep(50 * time.Millisecond) // broker timestamps have millisecond resolution
	w.dlqSince = time.Now()
	produce(t, brokers, dlqTopic, []deadLetter{{eventID: "lost-new", consumer: "inventory"}})
	d := write(t, sqldbtest.SQLite, w)

	r := runAudit(t, d, w, brokers...)
	if r.DLQEntries != 1 || r.DLQUnaccounted != 1 || !hasViolation(r, "event lost-new") {
		t.Fatalf("DLQ %d entries, %d unaccounted; want only the one written since: 1, 1", r.DLQEntries, r.DLQUnaccounted)
	}
}

// The same against the real Kafka, on a dead-letter topic of its own: other tests' dead letters on the
// shared broker are read too, unless the audit is limited to this test's topic.
func TestDeadLettersOnRealKafka(t *testing.T) {
	t.Parallel()
	brokers := strings.Split(infratest.Require(t, infratest.KafkaBrokers), ",")
	infratest.Shared(t, "kafka")
	suffix := uuid.NewString()[:8]
	topic := "audit-test-" + suffix + ".dlq"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	if _, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: topic, NumPartitions: 1, ReplicationFactor: 1},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	})
	w, msgs := dlqWorld(suffix)
	produce(t, brokers, topic, msgs)
	markReplayed(t, brokers, topic, 1)

	r := runAudit(t, write(t, sqldbtest.SQLite, w), w, brokers...)
	if r.DLQEntries < 7 {
		t.Fatalf("DLQ %d entries, want at least this test's 7", r.DLQEntries)
	}
	// Limited to this test's topic, the figures are exact.
	w.dlqTopics = []string{topic}
	r = runAudit(t, write(t, sqldbtest.SQLite, w), w, brokers...)
	mine := 0
	for _, v := range r.Violations {
		if strings.Contains(v, suffix) {
			mine++
		}
	}
	if r.DLQEntries != 7 || r.DLQUnaccounted != 2 || mine != 2 || !hasViolation(r, "event lost-"+suffix) || !hasViolation(r, "event half-"+suffix) {
		t.Fatalf("DLQ %d entries; %d violations of this test (want 2: lost-, half-):\n%s", r.DLQEntries, mine, strings.Join(r.Violations, "\n"))
	}
}
