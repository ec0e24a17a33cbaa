package consumer_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// An event enqueued inside a request's span is published under a producer span of that trace and
// handled under a consumer span that is the producer span's child, over real brokers (kfake and an
// in-process nats-server); the consumer metrics count the delivery.
func TestTraceAcrossBrokers(t *testing.T) {
	t.Parallel()
	embedded := envs()[0]
	for _, tc := range []struct {
		name string
		kit  func(t *testing.T, obs consumer.Observe) (outbox.Publisher, string, func(context.Context, consumer.Handler) error)
	}{
		{"kafka", func(t *testing.T, obs consumer.Observe) (outbox.Publisher, string, func(context.Context, consumer.Handler) error) {
			brokers, _ := embedded.kafkaBrokers(t, false)
			topic := kafkaTopic(t, brokers, 1)
			pub := outbox.NewKafka(brokers, nil)
			t.Cleanup(func() { _ = pub.Close() })
			return pub, topic, func(ctx context.Context, h consumer.Handler) error {
				c, err := consumer.NewKafka(consumer.KafkaConfig{Brokers: brokers, GroupID: uniq("g-"), Topics: []string{topic},
					MaxWait: 100 * time.Millisecond, Observe: obs}, h, logger(t))
				if err != nil {
					return err
				}
				return c.Run(ctx)
			}
		}},
		{"jetstream", func(t *testing.T, obs consumer.Observe) (outbox.Publisher, string, func(context.Context, consumer.Handler) error) {
			js, _ := embedded.jetStream(t, false)
			stream, subject := jsSubject(t, js)
			return outbox.NewJetStream(js), subject, func(ctx context.Context, h consumer.Handler) error {
				c, err := consumer.NewJetStream(js, consumer.JetStreamConfig{Stream: stream, Durable: uniq("d"),
					FilterSubjects: []string{subject}, Observe: obs}, h, logger(t))
				if err != nil {
					return err
				}
				return c.Run(ctx)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			spans := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
			reg := prometheus.NewRegistry()
			pub, topic, run := tc.kit(t, consumer.Observe{TracerProvider: tp, Metrics: reg})

			db, d := embedded.producerDB(t)
			ob := outbox.New(d, propagation.TraceContext{})
			reqCtx, req := tp.Tracer("test").Start(context.Background(), "POST /v1/orders", trace.WithSpanKind(trace.SpanKindServer))
			if err := sqldb.InTx(reqCtx, db, func(tx *sql.Tx) error {
				_, err := ob.Enqueue(reqCtx, tx, outbox.Message{Topic: topic, Key: "order-1", Payload: []byte("x")})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			req.End()

			relay, err := outbox.NewRelay(db, pub, logger(t), reg, outbox.RelayConfig{TracerProvider: tp})
			if err != nil {
				t.Fatal(err)
			}
			ctx := timeout(t, 30*time.Second)
			if n, err := relay.RelayOnce(ctx); err != nil || n != 1 {
				t.Fatalf("relay: %d %v", n, err)
			}

			got := make(chan trace.SpanContext, 1)
			cctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				done <- run(cctx, func(ctx context.Context, _ consumer.Message) error {
					select {
					case got <- trace.SpanContextFromContext(ctx):
					default:
					}
					return nil
				})
			}()
			var handled trace.SpanContext
			select {
			case handled = <-got:
			case <-ctx.Done():
				t.Fatal("no delivery")
			}
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}

			byID := map[trace.SpanID]tracetest.SpanStub{}
			for _, s := range spans.GetSpans() {
				byID[s.SpanContext.SpanID()] = s
			}
			cons, ok := byID[handled.SpanID()]
			if !ok || cons.SpanKind != trace.SpanKindConsumer || !strings.HasSuffix(cons.Name, " process") {
				t.Fatalf("handler ctx span %v is not a recorded consumer span (%d spans)", handled, len(byID))
			}
			prod, ok := byID[cons.Parent.SpanID()]
			if !ok || prod.SpanKind != trace.SpanKindProducer || prod.Name != topic+" publish" {
				t.Fatalf("consumer span's parent %v is not the publish span", cons.Parent)
			}
			if prod.Parent.SpanID() != req.SpanContext().SpanID() || cons.SpanContext.TraceID() != req.SpanContext().TraceID() {
				t.Fatalf("publish span is not the request's child: %v", prod.Parent)
			}
			for _, family := range []string{"shopmesh_consumer_messages_total", "shopmesh_consumer_lag_messages", "shopmesh_outbox_published_events_total"} {
				if n, err := testutil.GatherAndCount(reg, family); err != nil || n != 1 {
					t.Errorf("%s: %d series, %v", family, n, err)
				}
			}
		})
	}
}
