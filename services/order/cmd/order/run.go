package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/depcheck"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	ordercfg "github.com/shopmesh/shopmesh/services/order/internal/config"
	"github.com/shopmesh/shopmesh/services/order/internal/domain"
	"github.com/shopmesh/shopmesh/services/order/internal/events"
	"github.com/shopmesh/shopmesh/services/order/internal/rpc"
	"github.com/shopmesh/shopmesh/services/order/internal/store"
	"github.com/shopmesh/shopmesh/services/order/migrations"
)

// startTimeout bounds each start-up step that talks to a server (database, brokers).
const startTimeout = 30 * time.Second

// run wires the service and serves until ctx ends (then it returns nil) or something fails.
func run(ctx context.Context, args []string, lookup config.Lookup, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "check-config" {
		return checkConfig(args[1:], lookup, stdout)
	}
	cfg, err := ordercfg.Load(lookup)
	if err != nil {
		return err
	}
	// Lines logged inside a request (a span in the ctx) carry trace_id and span_id.
	// The config center may change the level at run time (log_level in its documents).
	level := new(slog.LevelVar)
	logger := slog.New(telemetry.LogHandler(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))).With("service", cfg.Service)
	if len(args) > 0 && args[0] == "migrate" {
		return migrate.Command(ctx, cfg.DSN, migrations.FS, migrate.Options{Logger: logger}, args[1:], stdout)
	}
	if len(args) == 1 && args[0] == "healthcheck" {
		return healthCheck(ctx, cfg)
	}
	if len(args) > 0 {
		return fmt.Errorf("unknown command %q (want: migrate, healthcheck or check-config)", args[0])
	}

	// Built first: its tracer and registry feed the relay; closed last, flushing spans.
	p, err := platform.New(ctx, cfg.Config, logger, platform.WithLogLevel(level))
	if err != nil {
		return err
	}
	defer p.Close()

	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := store.Migrate(sctx, cfg.DSN, logger); err != nil {
		return err
	}
	db, dialect, err := sqldb.Open(sctx, cfg.DSN, sqldb.Options{TracerProvider: p.TracerProvider()})
	if err != nil {
		return err
	}
	defer db.Close()

	nc, err := nats.Connect(cfg.NatsURL, nats.Name("order"), nats.MaxReconnects(-1), nats.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := js.CreateOrUpdateStream(sctx, jetstream.StreamConfig{
		Name: events.StatusStream, Subjects: []string{events.SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute, MaxAge: 24 * time.Hour,
	}); err != nil {
		return fmt.Errorf("status stream: %w", err)
	}
	if err := outbox.EnsureTopics(sctx, cfg.KafkaBrokers, outbox.Topic{Name: events.Topic, Partitions: cfg.KafkaPartitions}); err != nil {
		return err
	}
	kafka := outbox.NewKafka(cfg.KafkaBrokers)
	defer kafka.Close()
	relay, err := outbox.NewRelay(db, &events.Router{Kafka: kafka, JetStream: outbox.NewJetStream(js)}, logger, p.Metrics(),
		outbox.RelayConfig{PollInterval: cfg.OutboxPoll, TracerProvider: p.TracerProvider()})
	if err != nil {
		return err
	}
	orders := store.New(db, dialect, outbox.New(dialect, propagation.TraceContext{}), relay.Notify)

	invConn, err := p.Dial("inventory")
	if err != nil {
		return err
	}
	payConn, err := p.Dial("payment")
	if err != nil {
		return err
	}
	inventory := rpc.NewInventoryClient(inventoryv1.NewInventoryServiceClient(invConn), cfg.CallTimeout)
	sagas := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shopmesh_saga_outcomes_total",
		Help: "Order saga runs by the status they left the order in and the cancel reason (RETRY_LATER: left PENDING for recovery).",
	}, []string{"status", "reason"})
	if err := p.Metrics().Register(sagas); err != nil {
		return fmt.Errorf("saga metrics: %w", err)
	}
	recovered, err := recoveryMetrics(p.Metrics())
	if err != nil {
		return err
	}
	a, err := app.New(app.Deps{
		Orders: orders, Stock: inventory, Catalog: inventory, Feed: events.NewFeed(nc).Traced(p.TracerProvider()), Logger: logger,
		Outcome:   func(s domain.Status, reason string) { sagas.WithLabelValues(string(s), reason).Inc() },
		Recovered: recovered,
		Payment:   rpc.NewPaymentClient(paymentv1.NewPaymentServiceClient(payConn), cfg.CallTimeout),
	}, cfg.Saga())
	if err != nil {
		return err
	}

	// Readiness: without its database no call can succeed, so the instance leaves the rotation while it
	// is down; the brokers are only reported (the outbox and the consumers wait them out).
	if err := p.AddDependencies(
		platform.Dependency{Name: "database", Check: db.PingContext, Required: true},
		platform.Dependency{Name: "kafka", Check: depcheck.Kafka(cfg.KafkaBrokers)},
		platform.Dependency{Name: "nats", Check: depcheck.NATS(nc)},
	); err != nil {
		return err
	}
	srv := p.NewServer()
	orderv1.RegisterOrderServiceServer(srv, rpc.NewServer(a, nil))
	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}

	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = relay.Run(bg) })
	wg.Go(func() { _ = a.RunRecovery(bg, cfg.RecoveryInterval) })
	err = p.Serve(ctx, srv, lis)
	// Workers stop after the server, so sagas finishing during the drain still get their events out.
	stopBg()
	wg.Wait()
	return err
}

// recoveryMetrics registers the recovery worker's metrics and returns what records one pass.
func recoveryMetrics(reg prometheus.Registerer) (func(app.RecoveryStats), error) {
	followups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shopmesh_order_followups_total",
		Help: "Follow-up work of terminal orders run by the recovery worker, by kind (compensation: release stock and void payment of a cancelled order; settlement: commit stock and capture payment of a confirmed order) and outcome (done, failed: retried after a backoff, refused: refused for good, retried at the slowest rate).",
	}, []string{"kind", "outcome"})
	unsettled := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "shopmesh_order_unsettled_orders",
		Help: "Confirmed orders older than ORDER_SETTLE_AFTER whose stock commit and payment capture are not known to be done.",
	})
	stuck := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "shopmesh_order_stuck_compensations",
		Help: "Cancelled orders whose compensation is pending longer than ORDER_STUCK_AFTER or failed ORDER_STUCK_ATTEMPTS times.",
	})
	for _, c := range []prometheus.Collector{followups, unsettled, stuck} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("recovery metrics: %w", err)
		}
	}
	return func(st app.RecoveryStats) {
		for kind, n := range map[app.FollowupKind][3]int{
			app.Compensation: {st.Compensated, st.CompensationsFailed, st.CompensationsRefused},
			app.Settlement:   {st.Settled, st.SettlementsFailed, st.SettlementsRefused},
		} {
			for i, outcome := range []string{"done", "failed", "refused"} {
				followups.WithLabelValues(string(kind), outcome).Add(float64(n[i]))
			}
		}
		if st.BacklogRead {
			unsettled.Set(float64(st.Unsettled))
			stuck.Set(float64(st.StuckCompensations))
		}
	}, nil
}
