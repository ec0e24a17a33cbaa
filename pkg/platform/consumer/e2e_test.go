package consumer_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// testRetry is the kits' default policy: the production one (transient failures held without limit)
// with short waits.
var testRetry = consumer.Retry{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}

// kit is one broker as the tests see it.
type kit struct {
	topic string
	// retry and observe configure the consumers run starts from now on.
	retry     *consumer.Retry
	observe   *consumer.Observe
	publisher outbox.Publisher
	// run runs one consumer instance until ctx ends.
	run func(ctx context.Context, h consumer.Handler) error
	// stored counts the messages the broker kept for topic, or -1 when it cannot tell.
	stored func(ctx context.Context) int
	// deadLetters returns the headers of the first n dead letters, waiting for them.
	deadLetters func(ctx context.Context, n int) []map[string]string
	// deadLettered counts the dead letters stored now.
	deadLettered func(ctx context.Context) int
	// streamOrder returns each key's event ids in the order the broker stored them; nil when the
	// broker cannot tell apart from delivery (Kafka: a partition is read in stored order).
	streamOrder func(ctx context.Context, n int) map[string][]string
	// restart restarts the broker in place; nil when it cannot be (noRestart says why).
	restart   restarter
	noRestart string
}

func kafkaKit(t *testing.T, e env, commitInterval time.Duration, restartable bool) kit {
	t.Helper()
	brokers, restart := e.kafkaBrokers(t, restartable)
	topic := kafkaTopic(t, brokers, 8)
	pub := outbox.NewKafka(brokers, nil)
	t.Cleanup(func() { _ = pub.Close() })
	group := uniq("g-")
	retry, observe := testRetry, consumer.Observe{}
	return kit{
		topic:     topic,
		retry:     &retry,
		observe:   &observe,
		publisher: pub,
		run: func(ctx context.Context, h consumer.Handler) error {
			c, err := consumer.NewKafka(consumer.KafkaConfig{
				Brokers: brokers, GroupID: group, Topics: []string{topic}, Retry: retry, Observe: observe, MaxWait: 100 * time.Millisecond,
				CommitInterval: commitInterval,
			}, h, logger(t))
			if err != nil {
				return err
			}
			return c.Run(ctx)
		},
		stored:    func(context.Context) int { return -1 },
		restart:   restart,
		noRestart: "kfake keeps its log in the test process and cannot be restarted in place",
		deadLetters: func(ctx context.Context, n int) []map[string]string {
			var out []map[string]string
			for _, m := range readKafkaDLQ(t, ctx, brokers, topic, n) {
				h := map[string]string{}
				for _, kh := range m.Headers {
					h[kh.Key] = string(kh.Value)
				}
				out = append(out, h)
			}
			return out
		},
		deadLettered: func(ctx context.Context) int { return kafkaDLQCount(t, ctx, brokers, topic) },
	}
}

func jetStreamKit(t *testing.T, e env, restartable bool) kit {
	t.Helper()
	js, restart := e.jetStream(t, restartable)
	stream, subject := jsSubject(t, js)
	durable := uniq("d")
	retry, observe := testRetry, consumer.Observe{}
	return kit{
		topic:     subject,
		retry:     &retry,
		observe:   &observe,
		publisher: outbox.NewJetStream(js),
		restart:   restart,
		streamOrder: func(ctx context.Context, n int) map[string][]string {
			c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			order := map[string][]string{}
			for got := 0; got < n; {
				batch, err := c.Fetch(min(n-got, 1000), jetstream.FetchMaxWait(5*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				for m := range batch.Messages() {
					got++
					order[m.Headers().Get(outbox.HeaderKey)] = append(order[m.Headers().Get(outbox.HeaderKey)], m.Headers().Get(outbox.HeaderEventID))
				}
				if err := batch.Error(); err != nil {
					t.Fatal(err)
				}
			}
			return order
		},
		run: func(ctx context.Context, h consumer.Handler) error {
			c, err := consumer.NewJetStream(js, consumer.JetStreamConfig{
				Stream: stream, Durable: durable, FilterSubjects: []string{subject}, Retry: retry, Observe: observe,
				AckWait: 2 * time.Second, FetchWait: 500 * time.Millisecond,
			}, h, logger(t))
			if err != nil {
				return err
			}
			return c.Run(ctx)
		},
		stored: func(ctx context.Context) int {
			s, err := js.Stream(ctx, stream)
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return int(info.State.Msgs)
		},
		deadLetters: func(ctx context.Context, n int) []map[string]string {
			s, err := js.Stream(ctx, stream+"_DLQ")
			if err != nil {
				t.Fatal(err)
			}
			var out []map[string]string
			for seq := uint64(1); len(out) < n; {
				m, err := s.GetMsg(ctx, seq)
				if err == nil {
					h := map[string]string{}
					for k, v := range m.Header {
						h[k] = v[0]
					}
					out = append(out, h)
					seq++
					continue
				}
				select {
				case <-ctx.Done():
					t.Fatalf("%d of %d dead letters: %v", len(out), n, err)
				case <-time.After(50 * time.Millisecond):
				}
			}
			return out
		},
		deadLettered: func(ctx context.Context) int {
			s, err := js.Stream(ctx, stream+"_DLQ")
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return int(info.State.Msgs)
		},
	}
}

func TestOutboxToKafka(t *testing.T) {
	for _, e := range envs() {
		t.Run(e.name, func(t *testing.T) {
			outboxEndToEnd(t, e, kafkaKit(t, e, 100*time.Millisecond, true))
		})
	}
}

func TestOutboxToJetStream(t *testing.T) {
	for _, e := range envs() {
		t.Run(e.name, func(t *testing.T) {
			outboxEndToEnd(t, e, jetStreamKit(t, e, true))
		})
	}
}

// The end-to-end runs are heavy: they run one at a time so the relays' publish latency, which the
// kill intervals are scaled to, is not that of a starved CPU.

// outboxEndToEnd writes N events through the outbox while two relays, each killed at random moments and
// restarted, publish them, and one consumer applies them through the inbox; the broker is restarted
// twice meanwhile (R6/R9), when a fifth and when three fifths of the effects are applied. Every event
// must arrive, each effect must be applied once, and each aggregate's events must first arrive in write
// order.
func outboxEndToEnd(t *testing.T, e env, k kit) {
	n := e.events(t)
	ctx := timeout(t, 5*time.Minute)
	pdb, d := e.producerDB(t)
	fx := e.consumerDB(t)

	var restarts []restartReport
	restartsDone := make(chan struct{})
	if k.restart == nil {
		t.Logf("no broker restarts in this run: %s", k.noRestart)
		close(restartsDone)
	} else {
		go func() {
			defer close(restartsDone)
			restarts = fx.restartAt(ctx, k.restart, pendingOf(pdb), n, n/5, 3*n/5)
		}()
	}

	cctx, stopConsumer := context.WithCancel(ctx)
	consumerDone := make(chan error, 1)
	go func() { consumerDone <- k.run(cctx, fx.handler("e2e")) }()

	var kills atomic.Int64
	rctx, stopRelays := context.WithCancel(ctx)
	var relays sync.WaitGroup
	for slot := range 2 {
		relays.Go(func() {
			for rctx.Err() == nil {
				relay, err := outbox.NewRelay(pdb, k.publisher, logger(t), nil, outbox.RelayConfig{
					BatchSize: 50 + 50*slot, PollInterval: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
				})
				if err != nil {
					t.Error(err)
					return
				}
				life, kill := context.WithTimeout(rctx, time.Duration(20+rand.IntN(400))*time.Millisecond)
				_ = relay.Run(life)
				kill()
				if rctx.Err() == nil {
					kills.Add(1)
				}
			}
		})
	}

	// Open-loop load: events are written at a constant rate whatever the pipeline does, so the relay
	// has work in hand when the broker goes away.
	ob := outbox.New(d, propagation.TraceContext{})
	want := map[string][]string{}
	ids := make([]string, 0, n)
	const perTx, rate = 10, 500 // events per transaction, events per second
	start := time.Now()
	for i := 0; i < n; i += perTx {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / rate)))
		if err := sqldb.InTx(ctx, pdb, func(tx *sql.Tx) error {
			for j := i; j < min(i+perTx, n); j++ {
				key := fmt.Sprint("agg-", j%37)
				id, err := ob.Enqueue(ctx, tx, outbox.Message{Topic: k.topic, Key: key, Payload: fmt.Appendf(nil, "%d", j)})
				if err != nil {
					return err
				}
				want[key] = append(want[key], id)
				ids = append(ids, id)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}

	fx.waitEffects(t, ctx, n)
	select {
	case <-restartsDone:
	case <-ctx.Done():
		t.Fatal("broker restarts did not finish before the deadline")
	}
	for i, r := range restarts {
		if r.err != nil {
			t.Errorf("broker restart %d: %v", i+1, r.err)
			continue
		}
		t.Logf("broker restart %d at %d effects, %d events pending in the outbox: restart took %v; pipeline stalled %v "+
			"(no effect applied), first effect %v after the broker was back", i+1, r.at, r.pending, r.took.Round(time.Millisecond),
			r.stalled.Round(time.Millisecond), r.resumed.Round(time.Millisecond))
	}
	probe, err := outbox.NewRelay(pdb, k.publisher, logger(t), nil, outbox.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		st, err := probe.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Pending == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("outbox did not drain: %d pending", st.Pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopRelays()
	relays.Wait()
	stopConsumer()
	if err := <-consumerDone; err != nil {
		t.Fatalf("consumer: %v", err)
	}

	rows, distinct := fx.count(t)
	missing := 0
	for _, id := range ids {
		if fx.deliveries(id) == 0 {
			missing++
		}
	}
	fx.mu.Lock()
	redeliveries := fx.total - len(fx.delivered)
	unknown := len(fx.delivered) - n
	outOfOrder := 0
	for key, w := range want {
		if !slices.Equal(fx.firsts[key], w) {
			outOfOrder++
		}
	}
	fx.mu.Unlock()
	stored := k.stored(ctx)
	// Order: the outbox publishes each aggregate's events in write order. A consumer receives them in
	// that order too, except that a message lost in flight when the broker restarts is redelivered
	// after AckWait, behind later ones (JetStream); there the stored order is what is checked.
	storedOutOfOrder := 0
	checkFirsts := true
	if k.streamOrder != nil {
		order := k.streamOrder(ctx, n)
		for key, w := range want {
			if !slices.Equal(order[key], w) {
				storedOutOfOrder++
			}
		}
		checkFirsts = len(restarts) == 0
	}
	t.Logf("%d events, %d relay kills, %d broker restarts, %d missing, %d double effects, %d redeliveries, %d unknown, "+
		"%d keys out of order on first delivery, %d in the broker, broker stored %d",
		n, kills.Load(), len(restarts), missing, rows-distinct, redeliveries, unknown, outOfOrder, storedOutOfOrder, stored)
	if missing != 0 || rows != n || distinct != n || unknown != 0 || storedOutOfOrder != 0 || checkFirsts && outOfOrder != 0 {
		t.Fatalf("want every event once, in order: missing=%d effects=%d distinct=%d unknown=%d outOfOrder=%d (stored %d)",
			missing, rows, distinct, unknown, outOfOrder, storedOutOfOrder)
	}
	if stored >= 0 && stored != n {
		t.Fatalf("JetStream kept %d messages for %d events: Nats-Msg-Id de-duplication failed", stored, n)
	}
}

// pendingOf counts the outbox rows not yet published (-1 when the query fails).
func pendingOf(db *sql.DB) func(context.Context) int {
	return func(ctx context.Context) int {
		n := -1
		_ = db.QueryRowContext(ctx, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").Scan(&n)
		return n
	}
}

// restartReport is what one broker restart did to the pipeline.
type restartReport struct {
	at      int           // effects applied when the restart began
	pending int           // outbox rows the relays had yet to publish then
	took    time.Duration // the restart itself, until the broker served again
	stalled time.Duration // longest time without a new effect, from the restart until effects flowed again
	resumed time.Duration // from the broker serving again to the next new effect
	err     error
}

// restartAt restarts the broker once the effects reach each threshold in turn, and measures how long
// the pipeline stood still around each restart (until all n effects are applied). It runs beside the
// test: it reports errors instead of failing.
func (e *effects) restartAt(ctx context.Context, restart restarter, pending func(context.Context) int, n int, thresholds ...int) []restartReport {
	// A sampler notes every move of the effect count, also while a restart is running.
	type sample struct {
		rows int
		at   time.Time
	}
	var (
		mu    sync.Mutex
		moves = []sample{{rows: -1, at: time.Now()}}
	)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			qctx, cancel := context.WithTimeout(sctx, 10*time.Second)
			var rows int
			err := e.db.QueryRowContext(qctx, "SELECT count(*) FROM effects").Scan(&rows)
			cancel()
			if err == nil {
				mu.Lock()
				if rows != moves[len(moves)-1].rows {
					moves = append(moves, sample{rows, time.Now()})
				}
				mu.Unlock()
			}
			select {
			case <-sctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	defer func() { stop(); <-sampled }()
	rows := func() int {
		mu.Lock()
		defer mu.Unlock()
		return moves[len(moves)-1].rows
	}
	movedAfter := func(t time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		return moves[len(moves)-1].at.After(t)
	}
	// wait polls the sampler until cond holds, or reports the context's end.
	wait := func(cond func(rows int) bool) error {
		for {
			if cond(rows()) {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	var out []restartReport
	for _, at := range thresholds {
		if err := wait(func(got int) bool { return got >= at }); err != nil {
			return append(out, restartReport{err: err})
		}
		r := restartReport{at: rows(), pending: pending(ctx)}
		begin := time.Now()
		r.err = restart(ctx)
		back := time.Now()
		r.took = back.Sub(begin)
		if r.err != nil {
			return append(out, r)
		}
		// The pipeline has resumed once an effect is applied after the broker is back; the stall is the
		// gap before that effect.
		if err := wait(func(got int) bool { return got >= n || movedAfter(back) }); err != nil {
			r.err = fmt.Errorf("effects did not resume after the restart: %w", err)
			return append(out, r)
		}
		// The stall is the longest gap between moves from the restart to the first move after it.
		mu.Lock()
		for i := 1; i < len(moves); i++ {
			if moves[i].at.After(begin) {
				from := moves[i-1].at
				if from.Before(begin) {
					from = begin
				}
				r.stalled = max(r.stalled, moves[i].at.Sub(from))
			}
			if moves[i].at.After(back) {
				r.resumed = moves[i].at.Sub(back)
				break
			}
		}
		mu.Unlock()
		out = append(out, r)
	}
	return out
}

func publishDirect(t *testing.T, ctx context.Context, k kit, n int) []string {
	t.Helper()
	var msgs []outbox.Message
	var ids []string
	for i := range n {
		id := uniq(fmt.Sprintf("ev%02d-", i))
		ids = append(ids, id)
		msgs = append(msgs, outbox.Message{ID: id, Topic: k.topic, Key: fmt.Sprint("k", i%3), Payload: []byte("x"), Headers: map[string]string{}})
	}
	if err := k.publisher.Publish(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestKafkaConsumerKilledBeforeCommit(t *testing.T) {
	t.Parallel()
	for _, e := range envs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			killedBeforeCommit(t, e, kafkaKit(t, e, 0, false))
		})
	}
}

func TestJetStreamConsumerKilledBeforeAck(t *testing.T) {
	t.Parallel()
	for _, e := range envs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			killedBeforeCommit(t, e, jetStreamKit(t, e, false))
		})
	}
}

// killedBeforeCommit stops a consumer right after its effect committed and before the broker heard of
// it: the next instance gets the event again, and the inbox keeps the effect single.
func killedBeforeCommit(t *testing.T, e env, k kit) {
	ctx := timeout(t, 2*time.Minute)
	fx := e.consumerDB(t)
	const n = 20
	ids := publishDirect(t, ctx, k, n)
	victim := ids[7]

	c1, kill := context.WithCancel(ctx)
	var crashed atomic.Bool
	h := fx.handler("r8")
	done := make(chan error, 1)
	go func() {
		done <- k.run(c1, func(ctx context.Context, m consumer.Message) error {
			if err := h(ctx, m); err != nil {
				return err
			}
			if m.ID == victim && crashed.CompareAndSwap(false, true) {
				kill()
				return errors.New("crashed before commit")
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("first consumer never reached the victim")
	}
	kill()
	if !crashed.Load() {
		t.Fatal("the victim was never handled")
	}
	c2, stop := context.WithCancel(ctx)
	done = make(chan error, 1)
	go func() { done <- k.run(c2, h) }()
	fx.waitEffects(t, ctx, n)
	for fx.deliveries(victim) < 2 && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rows, distinct := fx.count(t)
	t.Logf("victim delivered %d times, its effect applied %d time(s); %d effects for %d events", fx.deliveries(victim), fx.countOf(t, victim), rows, n)
	if fx.deliveries(victim) < 2 {
		t.Fatal("the victim was not redelivered: the offset was committed before the effect")
	}
	if fx.countOf(t, victim) != 1 || rows != n || distinct != n {
		t.Fatalf("effects: victim=%d rows=%d distinct=%d, want 1, %d, %d", fx.countOf(t, victim), rows, distinct, n, n)
	}
}

func TestKafkaPoisonToDeadLetter(t *testing.T) {
	t.Parallel()
	for _, e := range envs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			poison(t, e, kafkaKit(t, e, 0, false))
		})
	}
}

func TestJetStreamPoisonToDeadLetter(t *testing.T) {
	t.Parallel()
	for _, e := range envs() {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			poison(t, e, jetStreamKit(t, e, false))
		})
	}
}

// poison sends three messages the handler can never apply: one it marks permanent and one it panics
// on are dead-lettered at their first attempt; one failing with a plain error is dead-lettered after
// Retry.MaxAttempts, set for this test. Each dead letter carries its reason and cause, and the
// messages behind them are applied.
func poison(t *testing.T, e env, k kit) {
	ctx := timeout(t, 2*time.Minute)
	fx := e.consumerDB(t)
	const n, maxAttempts = 10, 3
	k.retry.MaxAttempts = maxAttempts
	ids := publishDirect(t, ctx, k, n)
	permanent, panics, failing := ids[3], ids[5], ids[7]
	h := fx.handler("dlq")
	c, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- k.run(c, func(ctx context.Context, m consumer.Message) error {
			switch m.ID {
			case permanent:
				fx.note(m)
				return fmt.Errorf("decode %s: %w", m.ID, consumer.Permanent(errors.New("poison: cannot decode payload")))
			case panics:
				fx.note(m)
				panic("unexpected payload shape")
			case failing:
				fx.note(m)
				return errors.New("still failing")
			}
			return h(ctx, m)
		})
	}()
	fx.waitEffects(t, ctx, n-3)
	dls := k.deadLetters(ctx, 3)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	rows, distinct := fx.count(t)
	byID := map[string]map[string]string{}
	for _, dl := range dls {
		byID[dl[outbox.HeaderEventID]] = dl
		t.Logf("dead letter %s: cause %s, attempts %s, reason %q", dl[outbox.HeaderEventID], dl[consumer.HeaderDLQCause],
			dl[consumer.HeaderDLQAttempts], dl[consumer.HeaderDLQReason])
	}
	for _, want := range []struct {
		id, cause, reason string
		attempts          int
	}{
		{permanent, consumer.CausePermanent, "poison: cannot decode payload", 1},
		{panics, consumer.CausePermanent, "handler panicked", 1},
		{failing, consumer.CauseMaxAttempts, "still failing", maxAttempts},
	} {
		dl := byID[want.id]
		if got := fx.deliveries(want.id); got != want.attempts {
			t.Errorf("%s handled %d times, want %d", want.id, got, want.attempts)
		}
		if dl == nil || dl[consumer.HeaderDLQCause] != want.cause || !strings.Contains(dl[consumer.HeaderDLQReason], want.reason) ||
			dl[consumer.HeaderDLQAttempts] != fmt.Sprint(want.attempts) || dl[consumer.HeaderDLQTopic] != k.topic ||
			dl[consumer.HeaderDLQConsumer] == "" || dl[consumer.HeaderDLQTime] == "" {
			t.Errorf("dead letter of %s = %v", want.id, dl)
		}
	}
	if rows != n-3 || distinct != n-3 || fx.countOf(t, permanent)+fx.countOf(t, panics)+fx.countOf(t, failing) != 0 {
		t.Errorf("effects rows=%d distinct=%d, want %d", rows, distinct, n-3)
	}
}
