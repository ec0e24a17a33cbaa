package security

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/consumer/dlq"
	"github.com/shopmesh/shopmesh/pkg/platform/depcheck"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// The Kafka attacks run against the authenticated Kafka of `INFRA_AUTH=1 infra.sh up` (authinfra.sh):
// KAFKA_BROKERS, the admin's KAFKA_USERNAME/KAFKA_PASSWORD and each service's <P>_KAFKA_USERNAME and
// <P>_KAFKA_PASSWORD from its infra.env. The topics and groups are the services' own (the ACLs name
// them literally), so the suite needs a cluster no service of another run consumes from.

// kafkaTries is how many times each Kafka attack is tried, each on new connections (a new SASL
// handshake).
const kafkaTries = 20

// The services' topics and groups (services/*/service.yaml: kafka_writes, kafka_reads, kafka_groups).
const (
	orderTopic     = "shopmesh.order.events"
	inventoryTopic = "shopmesh.inventory.events"
	paymentTopic   = "shopmesh.payment.events"
	orderDLQ       = "shopmesh.order.events.dlq"
)

// kafkaCluster is the authenticated cluster and the credentials of its users.
type kafkaCluster struct {
	brokers []string
	users   map[string]sasl.Mechanism // "admin", "order", "inventory", "payment"
}

// authKafka returns the cluster (skipping, or failing under REQUIRE_INFRA=1, without one) with the
// services' topics created by their owners, as the services do at start.
func authKafka(t *testing.T) kafkaCluster {
	t.Helper()
	k := kafkaCluster{brokers: strings.Split(infratest.Require(t, infratest.KafkaBrokers), ","), users: map[string]sasl.Mechanism{}}
	user := infratest.Require(t, infratest.KafkaUsername)
	cred := map[string][2]string{"admin": {user, infratest.Require(t, infratest.KafkaPassword)}}
	for _, s := range []string{"order", "inventory", "payment"} {
		p := strings.ToUpper(s)
		cred[s] = [2]string{infratest.Require(t, p+"_KAFKA_USERNAME"), infratest.Require(t, p+"_KAFKA_PASSWORD")}
	}
	for name, c := range cred {
		m, err := kafkaauth.Mechanism(c[0], c[1])
		if err != nil {
			t.Fatalf("%s credential: %v", name, err)
		}
		k.users[name] = m
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Each owner creates its topics with its own credential (the ACLs' Create), as service.Kafka does;
	// existing ones are left as they are.
	for _, own := range []struct {
		user   string
		topics []outbox.Topic
	}{
		{"order", []outbox.Topic{{Name: orderTopic, Partitions: 3}}},
		{"inventory", []outbox.Topic{{Name: inventoryTopic, Partitions: 3}, {Name: orderDLQ, Partitions: 1}}},
		{"payment", []outbox.Topic{{Name: paymentTopic, Partitions: 3}}},
	} {
		if err := outbox.EnsureTopics(ctx, k.brokers, k.users[own.user], own.topics...); err != nil {
			t.Fatalf("%s creates its topics: %v", own.user, err)
		}
	}
	return k
}

// alive checks, as admin, that the cluster answers: a refusal counts only while it does.
func (k kafkaCluster) alive() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(k.brokers...), Timeout: 10 * time.Second, Transport: kafkaauth.Transport(k.users["admin"])}
	if _, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{orderTopic}}); err != nil {
		return fmt.Errorf("the cluster does not answer its admin: %w", err)
	}
	return nil
}

// hidden reports whether topic exists (its admin sees its partitions) and user may not even describe
// it: the broker answers user's metadata request for it as for a topic that does not exist
// (UNKNOWN_TOPIC_OR_PARTITION; Kafka 3.9 does not tell a user without Describe that the topic exists)
// or with TOPIC_AUTHORIZATION_FAILED. kafka-go's writer and Fetch then report the topic as unknown: the
// refusal, not a missing topic.
func (k kafkaCluster) hidden(user, topic string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	meta := func(who string) (kafka.Topic, error) {
		c := &kafka.Client{Addr: kafka.TCP(k.brokers...), Timeout: 10 * time.Second, Transport: kafkaauth.Transport(k.users[who])}
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			return kafka.Topic{}, err
		}
		for _, t := range md.Topics {
			if t.Name == topic {
				return t, nil
			}
		}
		return kafka.Topic{}, fmt.Errorf("metadata without %s", topic)
	}
	a, err := meta("admin")
	if err != nil || a.Error != nil || len(a.Partitions) == 0 {
		return false, fmt.Errorf("topic %s as admin: %w", topic, errors.Join(err, a.Error))
	}
	u, err := meta(user)
	if err != nil {
		return false, err
	}
	return errors.Is(u.Error, kafka.TopicAuthorizationFailed) || errors.Is(u.Error, kafka.UnknownTopicOrPartition), nil
}

// refusedTopic reports whether err is user's refusal on topic: TOPIC_AUTHORIZATION_FAILED, or the
// topic reported unknown while it exists and is hidden from user.
func (k kafkaCluster) refusedTopic(err error, user, topic string) (bool, error) {
	if errors.Is(err, kafka.TopicAuthorizationFailed) {
		return true, nil
	}
	if !errors.Is(err, kafka.UnknownTopicOrPartition) && !strings.Contains(err.Error(), "topic not found") {
		return false, nil
	}
	return k.hidden(user, topic)
}

// kafkaOutcome names a Kafka error for the table.
func kafkaOutcome(err error) string {
	var ke kafka.Error
	switch {
	case err == nil:
		return "accepted"
	case errors.As(err, &ke):
		return ke.Title()
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return "connection closed"
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer (deadline)"
	case strings.Contains(err.Error(), "topic not found"):
		return "topic not in the user's metadata"
	}
	return "error"
}

func uniqueID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// TestKafkaWithoutCredentials: a client without a credential, or with a wrong one, gets neither the
// topics' metadata nor a produce through.
func TestKafkaWithoutCredentials(t *testing.T) {
	wrong, err := kafkaauth.Mechanism("order", "not-the-password")
	if err != nil {
		t.Fatal(err)
	}
	unknown, err := kafkaauth.Mechanism("mallory", "whatever")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		auth sasl.Mechanism
	}{
		{"Kafka: metadata and produce without credentials", nil},
		{"Kafka: metadata and produce with a wrong password", wrong},
		{"Kafka: metadata and produce as an unknown user", unknown},
	}
	// The rows first: without the cluster the test skips, and the table lists them as skipped.
	rows := make([]*Attack, len(cases))
	for i, c := range cases {
		rows[i] = attack(t, c.name, "connection refused before any request (no SASL) / SASL_AUTHENTICATION_FAILED")
	}
	k := authKafka(t)
	for ci, c := range cases {
		a := rows[ci]
		for i := range kafkaTries {
			a.try(func() (bool, error) {
				if err := k.alive(); err != nil {
					return false, err
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if i%2 == 0 {
					cl := &kafka.Client{Addr: kafka.TCP(k.brokers...), Timeout: 5 * time.Second, Transport: kafkaauth.Transport(c.auth)}
					if c.auth == nil {
						// A transport of its own: kafka-go's shared one would keep the refused connection.
						cl.Transport = &kafka.Transport{}
					}
					md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{orderTopic}})
					a.saw("metadata: " + kafkaOutcome(err))
					return err == nil && len(md.Topics) > 0, nil
				}
				w := &kafka.Writer{Addr: kafka.TCP(k.brokers...), Transport: kafkaauth.Transport(c.auth), MaxAttempts: 1,
					RequiredAcks: kafka.RequireAll, WriteTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second}
				if c.auth == nil {
					w.Transport = &kafka.Transport{}
				}
				defer func() { _ = w.Close() }()
				err := w.WriteMessages(ctx, kafka.Message{Topic: orderTopic, Key: []byte("forged"), Value: []byte(`{"forged":true}`),
					Headers: []kafka.Header{{Key: outbox.HeaderEventID, Value: []byte(uniqueID("forged-"))}}})
				a.saw("produce: " + kafkaOutcome(err))
				return err == nil, nil
			})
		}
	}
}

// TestKafkaForgedEvent: a service writing onto a topic that is not its own is refused
// (TOPIC_AUTHORIZATION_FAILED), so a consumer never acts on an event from a producer that may not write
// that topic: the consumer of shopmesh.order.events (the platform consumer with inventory's credential)
// sees the order service's events before and after the forgeries, and none of them. The publishers are
// the platform's (outbox.NewKafka), as the relay of the forging service would use them.
func TestKafkaForgedEvent(t *testing.T) {
	forgeries := []struct{ user, topic string }{
		{"payment", orderTopic},
		{"inventory", orderTopic},
		{"payment", inventoryTopic},
		{"order", paymentTopic},
	}
	// The rows first: without the cluster the test skips, and the table lists them as skipped.
	rows := make([]*Attack, len(forgeries))
	for i, f := range forgeries {
		rows[i] = attack(t, fmt.Sprintf("Kafka: %s forges an event onto %s", f.user, f.topic), "TOPIC_AUTHORIZATION_FAILED, or the topic hidden (no Describe: UNKNOWN_TOPIC_OR_PARTITION)")
	}
	k := authKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	publish := func(user, topic, id string) error {
		p := outbox.NewKafka(k.brokers, k.users[user])
		defer func() { _ = p.Close() }()
		pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		return p.Publish(pctx, []outbox.Message{{ID: id, Topic: topic, Key: uniqueID("order-"), Payload: []byte(`{"id":"` + id + `"}`), CreatedAt: time.Now()}})
	}
	first, last := uniqueID("legit-"), uniqueID("legit-")
	if err := publish("order", orderTopic, first); err != nil {
		t.Fatalf("order publishing its own event: %v", err)
	}
	forged := map[string]bool{}
	for fi, f := range forgeries {
		a := rows[fi]
		for range kafkaTries {
			a.try(func() (bool, error) {
				id := uniqueID("forged-")
				forged[id] = true
				err := publish(f.user, f.topic, id)
				a.saw(kafkaOutcome(err))
				if err == nil {
					return true, nil
				}
				if ok, herr := k.refusedTopic(err, f.user, f.topic); ok || herr != nil {
					return false, herr
				}
				return false, err // not the refusal: the try says nothing
			})
		}
	}
	if err := publish("order", orderTopic, last); err != nil {
		t.Fatalf("order publishing its own event: %v", err)
	}

	// The consumer: inventory's group on the order events, as the inventory service consumes them.
	var mu sync.Mutex
	seen := map[string]bool{}
	done := make(chan struct{})
	var once sync.Once
	c, err := consumer.NewKafka(consumer.KafkaConfig{Brokers: k.brokers, SASL: k.users["inventory"], GroupID: "inventory",
		Topics: []string{orderTopic}, CommitInterval: 200 * time.Millisecond},
		func(_ context.Context, m consumer.Message) error {
			mu.Lock()
			seen[m.ID] = true
			mu.Unlock()
			if m.ID == last {
				once.Do(func() { close(done) })
			}
			return nil
		}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- c.Run(cctx) }()
	select {
	case <-done:
		// Partitions are read in parallel: the first event may still be on its way.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			mu.Lock()
			got := seen[first]
			mu.Unlock()
			if got {
				break
			}
		}
	case <-ctx.Done():
		t.Error("the inventory consumer did not receive the order service's events")
	}
	stop()
	if err := <-ran; err != nil {
		t.Errorf("consumer: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !seen[first] || !seen[last] {
		t.Errorf("legitimate events received: first %v, last %v", seen[first], seen[last])
	}
	for id := range forged {
		if seen[id] {
			t.Errorf("the consumer received the forged event %s", id)
		}
	}
}

// TestKafkaForeignRead: a service cannot read a topic it does not consume, nor use another service's
// consumer group, and cannot create topics that are not its own.
func TestKafkaForeignRead(t *testing.T) {
	var k kafkaCluster // authKafka, once the rows are declared
	fetch := func(user, topic string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := &kafka.Client{Addr: kafka.TCP(k.brokers...), Timeout: 5 * time.Second, Transport: kafkaauth.Transport(k.users[user])}
		r, err := c.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: 0, Offset: 0, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
		if err == nil && r.Error != nil {
			err = r.Error
		}
		return err
	}
	offsets := func(user, group string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := &kafka.Client{Addr: kafka.TCP(k.brokers...), Timeout: 5 * time.Second, Transport: kafkaauth.Transport(k.users[user])}
		r, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{orderTopic: {0}}})
		if err == nil && r.Error != nil {
			err = r.Error
		}
		return err
	}
	forged := uniqueID("shopmesh.forged.")
	cases := []struct {
		name, expected string
		try            func() error
		// refused tells the refusal from another error
		refused func(error) (bool, error)
	}{
		{"Kafka: inventory reads shopmesh.payment.events (it does not consume it)", "TOPIC_AUTHORIZATION_FAILED, or the topic hidden (no Describe: UNKNOWN_TOPIC_OR_PARTITION)",
			func() error { return fetch("inventory", paymentTopic) },
			func(err error) (bool, error) { return k.refusedTopic(err, "inventory", paymentTopic) }},
		{"Kafka: order reads its own events topic (it does not consume it)", "TOPIC_AUTHORIZATION_FAILED",
			func() error { return fetch("order", orderTopic) },
			func(err error) (bool, error) { return errors.Is(err, kafka.TopicAuthorizationFailed), nil }},
		{"Kafka: payment uses inventory's consumer group", "GROUP_AUTHORIZATION_FAILED",
			func() error { return offsets("payment", "inventory") },
			func(err error) (bool, error) { return errors.Is(err, kafka.GroupAuthorizationFailed), nil }},
		{"Kafka: order creates a topic it does not own", "TOPIC_AUTHORIZATION_FAILED",
			func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return outbox.EnsureTopics(ctx, k.brokers, k.users["order"], outbox.Topic{Name: forged, Partitions: 1})
			},
			func(err error) (bool, error) { return errors.Is(err, kafka.TopicAuthorizationFailed), nil }},
	}
	// The rows first: without the cluster the test skips, and the table lists them as skipped.
	rows := make([]*Attack, len(cases))
	for i, c := range cases {
		rows[i] = attack(t, c.name, c.expected)
	}
	k = authKafka(t)

	// Controls: the legitimate reads pass, so the refusals below are the ACLs'; the platform's other
	// Kafka clients authenticate too (the readiness check, the dead-letter tool as admin), and the
	// readiness check without a credential reports the cluster down.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := depcheck.Kafka(k.brokers, k.users["payment"])(ctx); err != nil {
		t.Fatalf("readiness check with payment's credential: %v", err)
	}
	if err := depcheck.Kafka(k.brokers, nil)(ctx); err == nil {
		t.Error("readiness check without a credential passed")
	}
	if _, err := (dlq.Kafka{Brokers: k.brokers, SASL: k.users["admin"], Topic: orderDLQ}).List(ctx); err != nil {
		t.Fatalf("dlq list as admin: %v", err)
	}
	if err := fetch("inventory", orderTopic); err != nil {
		t.Fatalf("inventory fetching the order events it consumes: %v", err)
	}
	if err := offsets("payment", "payment"); err != nil {
		t.Fatalf("payment reading its own group's offsets: %v", err)
	}
	for ci, c := range cases {
		a := rows[ci]
		for range kafkaTries {
			a.try(func() (bool, error) {
				err := c.try()
				a.saw(kafkaOutcome(err))
				if err == nil {
					return true, nil
				}
				if ok, rerr := c.refused(err); ok || rerr != nil {
					return false, rerr
				}
				return false, err
			})
		}
	}
}
