package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// batchPartitions is the partition count of the batch tests' topics: batches then mix partitions.
const batchPartitions = 4

// applied is a consumer's effects as an inbox would keep them: each event id with what applied it
// ("batch" or "handler") and how many times, and each key's event ids in the order they were applied.
// A batch is recorded only when its handler returns nil: all or none, like one transaction.
type applied struct {
	mu      sync.Mutex
	by      map[string]string
	times   map[string]int
	order   map[string][]string
	batches []int // sizes of the Batch calls, whatever they returned
}

func newApplied() *applied {
	return &applied{by: map[string]string{}, times: map[string]int{}, order: map[string][]string{}}
}

func (a *applied) apply(by string, ms ...consumer.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, m := range ms {
		a.by[m.ID] = by
		a.times[m.ID]++
		a.order[string(m.Key)] = append(a.order[string(m.Key)], m.ID)
	}
}

func (a *applied) called(ms []consumer.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.batches = append(a.batches, len(ms))
}

func (a *applied) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.times)
}

// waitFor polls until n distinct events are applied.
func (a *applied) waitFor(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for a.count() < n {
		select {
		case <-ctx.Done():
			t.Fatalf("only %d of %d events applied before the deadline", a.count(), n)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// handler is a Handler that applies each message.
func (a *applied) handler() consumer.Handler {
	return func(_ context.Context, m consumer.Message) error {
		a.apply("handler", m)
		return nil
	}
}

// checkKeyOrder fails t unless each key's events were applied in the order byKey gives; a.mu is held.
func (a *applied) checkKeyOrder(t *testing.T, byKey map[string][]string) {
	t.Helper()
	for key, want := range byKey {
		if !slices.Equal(a.order[key], want) {
			t.Errorf("key %s applied in order %v, want %v", key, a.order[key], want)
		}
	}
}

// batchKit is a topic with a backlog and a consumer group over it.
type batchKit struct {
	brokers []string
	topic   string
	group   string
	retry   consumer.Retry
	// maxBatch is KafkaConfig.MaxBatch (0: the default).
	maxBatch int
	observe  consumer.Observe
}

func newBatchKit(t *testing.T, e env) *batchKit {
	t.Helper()
	brokers, _ := e.kafkaBrokers(t, false)
	return &batchKit{brokers: brokers, topic: kafkaTopic(t, brokers, batchPartitions), group: uniq("g-"), retry: testRetry}
}

// eachEnv runs fn in a parallel subtest per env, with a two-minute deadline and a new batchKit.
func eachEnv(t *testing.T, fn func(t *testing.T, ctx context.Context, k *batchKit)) {
	t.Helper()
	for _, e := range envs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			fn(t, timeout(t, 2*time.Minute), newBatchKit(t, e))
		})
	}
}

// backlog publishes n events over keys k0..k(keys-1) and returns their ids in publish order and each
// key's ids in that order.
func (k *batchKit) backlog(t *testing.T, ctx context.Context, n, keys int) ([]string, map[string][]string) {
	t.Helper()
	return k.backlogWith(t, ctx, n, keys, func(int) map[string]string { return map[string]string{} })
}

// backlogWith is backlog with the headers of the i-th event from headers(i).
func (k *batchKit) backlogWith(t *testing.T, ctx context.Context, n, keys int, headers func(i int) map[string]string) ([]string, map[string][]string) {
	t.Helper()
	pub := outbox.NewKafka(k.brokers, nil)
	defer func() { _ = pub.Close() }()
	var (
		msgs  []outbox.Message
		ids   []string
		byKey = map[string][]string{}
	)
	for i := range n {
		id := uniq(fmt.Sprintf("ev%03d-", i))
		key := fmt.Sprint("k", i%keys)
		ids = append(ids, id)
		byKey[key] = append(byKey[key], id)
		msgs = append(msgs, outbox.Message{ID: id, Topic: k.topic, Key: key, Payload: []byte("x"), Headers: headers(i)})
	}
	if err := pub.Publish(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	return ids, byKey
}

// start runs one member of the group with h and b (b may be nil) until the returned stop is called;
// stop returns Run's error.
func (k *batchKit) start(t *testing.T, ctx context.Context, h consumer.Handler, b consumer.BatchHandler) (stop func() error) {
	t.Helper()
	c, err := consumer.NewKafka(consumer.KafkaConfig{
		Brokers: k.brokers, GroupID: k.group, Topics: []string{k.topic}, Retry: k.retry, MaxWait: 100 * time.Millisecond,
		Batch: b, MaxBatch: k.maxBatch, Observe: k.observe,
	}, h, logger(t))
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

// consume runs one member of the group with h and b until a has n events applied, then stops it.
func (k *batchKit) consume(t *testing.T, ctx context.Context, a *applied, n int, h consumer.Handler, b consumer.BatchHandler) {
	t.Helper()
	stop := k.start(t, ctx, h, b)
	a.waitFor(t, ctx, n)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// consumeBacklog publishes a backlog of n events over keys keys (backlog) and consumes it until all are
// applied, with a's Handler and a BatchHandler that records each call in a and answers batch(a, ms).
func (k *batchKit) consumeBacklog(t *testing.T, ctx context.Context, n, keys int, batch func(a *applied, ms []consumer.Message) error) (a *applied, ids []string, byKey map[string][]string) {
	t.Helper()
	ids, byKey = k.backlog(t, ctx, n, keys)
	a = newApplied()
	k.consume(t, ctx, a, n, a.handler(), func(_ context.Context, ms []consumer.Message) error {
		a.called(ms)
		return batch(a, ms)
	})
	return a, ids, byKey
}

// sentinels writes one message to each partition of the topic, after everything else, and returns
// their ids.
func (k *batchKit) sentinels(t *testing.T, ctx context.Context) map[string]bool {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(k.brokers...), RequiredAcks: kafka.RequireAll,
		Balancer: kafka.BalancerFunc(func(m kafka.Message, _ ...int) int {
			p, _ := strconv.Atoi(strings.TrimPrefix(string(m.Key), "sentinel-"))
			return p
		})}
	defer func() { _ = w.Close() }()
	ids := map[string]bool{}
	var msgs []kafka.Message
	for p := range batchPartitions {
		id := uniq("sentinel-")
		ids[id] = true
		msgs = append(msgs, kafka.Message{Topic: k.topic, Key: fmt.Appendf(nil, "sentinel-%d", p), Value: []byte("x"),
			Headers: []kafka.Header{{Key: outbox.HeaderEventID, Value: []byte(id)}}})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	return ids
}

// A backlog found by a starting consumer is applied in batches: every event once, each key's events in
// publish order, and the offsets committed — a later member of the group starts after them.
func TestKafkaBatchAppliesBacklog(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, ctx context.Context, k *batchKit) {
		const n = 300
		a, ids, byKey := k.consumeBacklog(t, ctx, n, 7, func(a *applied, ms []consumer.Message) error {
			a.apply("batch", ms...)
			return nil
		})

		a.mu.Lock()
		batched, largest := 0, 0
		for _, id := range ids {
			if a.by[id] == "batch" {
				batched++
			}
		}
		for _, size := range a.batches {
			largest = max(largest, size)
		}
		t.Logf("%d events: %d applied in %d batch calls (largest %d), %d one at a time", n, batched, len(a.batches), largest, n-batched)
		if largest < 2 {
			t.Errorf("no batch of more than one message: batches %v", a.batches)
		}
		for _, id := range ids {
			if a.times[id] != 1 {
				t.Errorf("%s applied %d times, want 1", id, a.times[id])
			}
		}
		if len(a.times) != n {
			t.Errorf("%d events applied, want %d", len(a.times), n)
		}
		a.checkKeyOrder(t, byKey)
		a.mu.Unlock()

		// The next member starts after the committed offsets: the first messages it gets are the
		// sentinels written behind the backlog, one per partition.
		sentinels := k.sentinels(t, ctx)
		next := newApplied()
		k.consume(t, ctx, next, len(sentinels), next.handler(), func(_ context.Context, ms []consumer.Message) error {
			next.apply("batch", ms...)
			return nil
		})
		next.mu.Lock()
		defer next.mu.Unlock()
		for id := range next.times {
			if !sentinels[id] {
				t.Errorf("the next member got %s again: its offset was not committed", id)
			}
		}
	})
}

// A batch that fails or panics applies nothing, and its messages are then handled one at a time: each
// is applied once, by the handler, and one the handler marks permanent is dead-lettered.
func TestKafkaFailedBatchFallsBackToHandler(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, ctx context.Context, k *batchKit) {
		// Batches of at most 5: the three events below share a key, so one partition, with seven
		// events of that key between each two of them — they come in three different batches.
		k.maxBatch = 5
		const n = 120
		ids, _ := k.backlog(t, ctx, n, 5)
		failing, panics, permanent := ids[20], ids[60], ids[100]

		a := newApplied()
		var (
			mu               sync.Mutex
			seen             = map[string]int{} // in a Batch call
			failed, panicked int                // Batch calls
		)
		stop := k.start(t, ctx, func(_ context.Context, m consumer.Message) error {
			if m.ID == permanent {
				return consumer.Permanent(errors.New("cannot decode"))
			}
			a.apply("handler", m)
			return nil
		}, func(_ context.Context, ms []consumer.Message) error {
			a.called(ms)
			mu.Lock()
			defer mu.Unlock()
			for _, m := range ms {
				seen[m.ID]++
			}
			for _, m := range ms {
				switch m.ID {
				case failing, permanent:
					failed++
					return fmt.Errorf("batch with %s: conflict", m.ID)
				case panics:
					panicked++
					panic("batch with " + m.ID)
				}
			}
			a.apply("batch", ms...)
			return nil
		})
		a.waitFor(t, ctx, n-1)
		dls := readKafkaDLQ(t, ctx, k.brokers, k.topic, 1)
		if err := stop(); err != nil {
			t.Fatal(err)
		}

		mu.Lock()
		defer mu.Unlock()
		a.mu.Lock()
		defer a.mu.Unlock()
		fellBack := 0
		for _, id := range ids {
			if a.by[id] == "handler" && seen[id] > 0 {
				fellBack++
			}
		}
		t.Logf("%d batch calls (%d failed, %d panicked), %d events applied one at a time after their batch failed",
			len(a.batches), failed, panicked, fellBack)
		if failed != 2 || panicked != 1 {
			t.Errorf("%d batches failed and %d panicked, want 2 and 1", failed, panicked)
		}
		for _, id := range []string{failing, panics, permanent} {
			if seen[id] == 0 {
				t.Errorf("%s was never in a batch: the fallback was not exercised", id)
			}
		}
		for _, id := range []string{failing, panics} {
			if a.by[id] != "handler" {
				t.Errorf("%s applied by %q, want the handler", id, a.by[id])
			}
		}
		for _, id := range ids {
			want := 1
			if id == permanent {
				want = 0
			}
			if a.times[id] != want {
				t.Errorf("%s applied %d times, want %d", id, a.times[id], want)
			}
		}
		if got := dls[0].Headers; !hasHeader(got, outbox.HeaderEventID, permanent) || !hasHeader(got, consumer.HeaderDLQCause, consumer.CausePermanent) {
			t.Errorf("dead letter %v, want %s with cause permanent", got, permanent)
		}
		if got := kafkaDLQCount(t, ctx, k.brokers, k.topic); got != 1 {
			t.Errorf("%d dead letters, want 1", got)
		}
	})
}

// A batch handler that leaves every batch to the handler (ErrNotBatched) changes nothing: the
// handler applies every event once.
func TestKafkaNotBatchedGoesToHandler(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, ctx context.Context, k *batchKit) {
		const n = 100
		a, ids, byKey := k.consumeBacklog(t, ctx, n, 5, func(*applied, []consumer.Message) error {
			return fmt.Errorf("event type left to the handler: %w", consumer.ErrNotBatched)
		})

		a.mu.Lock()
		defer a.mu.Unlock()
		offered := 0
		for _, size := range a.batches {
			offered += size
		}
		t.Logf("%d batch calls offered %d events", len(a.batches), offered)
		if offered == 0 {
			t.Error("no batch was offered")
		}
		for _, id := range ids {
			if a.times[id] != 1 || a.by[id] != "handler" {
				t.Errorf("%s applied %d times by %q, want once by the handler", id, a.times[id], a.by[id])
			}
		}
		a.checkKeyOrder(t, byKey)
		if got := kafkaDLQCount(t, ctx, k.brokers, k.topic); got != 0 {
			t.Errorf("%d dead letters, want 0", got)
		}
	})
}

// A batch is handled under one consumer span that counts its messages and links to each message's
// producer span; the message counter still counts each message.
func TestKafkaBatchSpanAndMetrics(t *testing.T) {
	t.Parallel()
	ctx := timeout(t, time.Minute)
	k := newBatchKit(t, envs()[0])
	spans := tracetest.NewInMemoryExporter()
	reg := prometheus.NewRegistry()
	k.observe = consumer.Observe{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans)), Metrics: reg}
	const n = 50
	producers := map[trace.SpanID]bool{}
	traceID := trace.TraceID{1}
	ids, _ := k.backlogWith(t, ctx, n, 5, func(i int) map[string]string {
		sid := trace.SpanID{2, byte(i + 1)}
		producers[sid] = true
		return map[string]string{"traceparent": fmt.Sprintf("00-%s-%s-01", traceID, sid)}
	})
	a := newApplied()
	k.consume(t, ctx, a, n, a.handler(), func(bctx context.Context, ms []consumer.Message) error {
		if !trace.SpanContextFromContext(bctx).IsValid() {
			return errors.New("no span in the batch context")
		}
		a.called(ms)
		a.apply("batch", ms...)
		return nil
	})

	a.mu.Lock()
	defer a.mu.Unlock()
	batched, batchSpans, counted := 0, 0, 0
	for _, id := range ids {
		if a.by[id] == "batch" {
			batched++
		}
	}
	linked := map[trace.SpanID]bool{}
	for _, s := range spans.GetSpans() {
		var count int64 = -1
		for _, kv := range s.Attributes {
			if kv.Key == "messaging.batch.message_count" {
				count = kv.Value.AsInt64()
			}
		}
		if count < 0 {
			continue
		}
		batchSpans++
		counted += int(count)
		if s.Name != k.topic+" process" || s.SpanKind != trace.SpanKindConsumer || len(s.Links) != int(count) {
			t.Errorf("batch span %q kind %v, %d links for %d messages", s.Name, s.SpanKind, len(s.Links), count)
		}
		for _, l := range s.Links {
			if l.SpanContext.TraceID() != traceID || !producers[l.SpanContext.SpanID()] {
				t.Errorf("batch span links to %v, not a producer span", l.SpanContext)
			}
			linked[l.SpanContext.SpanID()] = true
		}
	}
	t.Logf("%d events, %d in %d batch spans, %d producer spans linked", n, counted, batchSpans, len(linked))
	if batchSpans != len(a.batches) || counted != batched || len(linked) != batched || batched < 2 {
		t.Errorf("%d batch spans counting %d messages, %d links, for %d batch calls applying %d", batchSpans, counted, len(linked), len(a.batches), batched)
	}
	if got := counterSum(t, reg, "shopmesh_consumer_messages_total", "ok"); got != n {
		t.Errorf("shopmesh_consumer_messages_total{outcome=ok} = %v, want %d", got, n)
	}
}

// counterSum adds up the samples of counter family name with label outcome.
func counterSum(t *testing.T, reg *prometheus.Registry, name, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func hasHeader(hs []kafka.Header, key, value string) bool {
	for _, h := range hs {
		if h.Key == key && string(h.Value) == value {
			return true
		}
	}
	return false
}
