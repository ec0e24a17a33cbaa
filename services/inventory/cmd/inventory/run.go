package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"golang.org/x/sync/errgroup"

	"github.com/shopmesh/shopmesh/pkg/platform"
	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/depcheck"
	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/rpc"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
	"github.com/shopmesh/shopmesh/services/inventory/migrations"
)

// startTimeout bounds each step of start-up that talks to a server.
const startTimeout = 30 * time.Second

// run wires the service and blocks until ctx ends (then returns nil) or a part of it fails.
func run(ctx context.Context, args []string, lookup platformcfg.Lookup, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "check-config" {
		return checkConfig(args[1:], lookup, stdout)
	}
	cfg, err := config.Load(lookup)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	// Lines logged inside a request (a span in the ctx) carry trace_id and span_id.
	// The config center may change the level at run time (log_level in its documents).
	level := new(slog.LevelVar)
	logger := slog.New(telemetry.LogHandler(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))).With("service", cfg.Service)
	if len(args) > 0 && args[0] == "migrate" {
		if len(args) == 2 && args[1] == "up" {
			return migrations.Up(ctx, cfg.DSN, logger)
		}
		return migrate.Command(ctx, cfg.DSN, migrations.FS, migrate.Options{Logger: logger}, args[1:], stdout)
	}
	if len(args) == 1 && args[0] == "healthcheck" {
		return healthCheck(ctx, cfg)
	}
	if len(args) > 0 {
		return fmt.Errorf("unknown command %q (want none, migrate, healthcheck or check-config)", args[0])
	}

	// Built first: its tracer and registry feed the relay and the consumer; closed last, flushing spans.
	p, err := platform.New(ctx, cfg.Config, logger, platform.WithLogLevel(level))
	if err != nil {
		return err
	}
	defer p.Close()
	if err := migrations.Up(ctx, cfg.DSN, logger); err != nil {
		return err
	}
	db, dialect, err := sqldb.Open(ctx, cfg.DSN, sqldb.Options{TracerProvider: p.TracerProvider()})
	if err != nil {
		return err
	}
	defer db.Close()

	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := outbox.EnsureTopics(sctx, cfg.KafkaBrokers,
		// Only the topics inventory writes: order creates its own (the consumer waits for it).
		outbox.Topic{Name: events.InventoryTopic, Partitions: cfg.TopicPartitions},
		outbox.Topic{Name: consumer.DeadLetterTopic(events.OrderTopic), Partitions: 1},
	); err != nil {
		return err
	}
	nc, err := nats.Connect(cfg.NatsURL, nats.Name("inventory"), nats.Timeout(5*time.Second), nats.MaxReconnects(-1))
	if err != nil {
		return fmt.Errorf("nats %s: %w", cfg.NatsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if _, err := js.CreateOrUpdateStream(sctx, jetstream.StreamConfig{
		Name: events.StockStream, Subjects: []string{events.StockSubject + "*"}, Storage: jetstream.FileStorage,
		MaxAge: 24 * time.Hour, MaxMsgsPerSubject: 100, Duplicates: 2 * time.Minute,
	}); err != nil {
		return fmt.Errorf("stream %s: %w", events.StockStream, err)
	}

	kafkaPub := outbox.NewKafka(cfg.KafkaBrokers)
	defer kafkaPub.Close()
	relay, err := outbox.NewRelay(db, events.Fanout{Kafka: kafkaPub, JetStream: outbox.NewJetStream(js)}, logger, p.Metrics(),
		outbox.RelayConfig{PollInterval: cfg.RelayPollInterval, TracerProvider: p.TracerProvider()})
	if err != nil {
		return err
	}
	st := store.New(db, dialect, events.NewOutbox(outbox.New(dialect, propagation.TraceContext{})),
		store.WithAfterCommit(relay.Notify))
	svc := app.New(st, st, events.NewFeed(nc, logger).Traced(p.TracerProvider()), events.ConsumerGroup, logger)
	if cfg.Seed {
		n, err := svc.Seed(sctx, app.DevCatalog(cfg.SeedProducts, cfg.SeedStock))
		if err != nil {
			return err
		}
		logger.Info("seeded dev catalogue", "inserted", n)
	}
	orders, err := consumer.NewKafka(consumer.KafkaConfig{
		Brokers: cfg.KafkaBrokers, GroupID: events.ConsumerGroup, Topics: []string{events.OrderTopic},
		MaxWait: 250 * time.Millisecond, CommitInterval: cfg.ConsumerCommitInterval,
		Observe: consumer.Observe{TracerProvider: p.TracerProvider(), Metrics: p.Metrics()},
	}, events.OrderHandler(svc), logger)
	if err != nil {
		return err
	}

	lis, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
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
	g, gctx := errgroup.WithContext(ctx)
	srv := p.NewServer()
	rpc.NewServer(svc, logger, gctx.Done()).Register(srv)
	g.Go(func() error { return relay.Run(gctx) })
	g.Go(func() error { return orders.Run(gctx) })
	// The order events' inbox would grow without bound: ids far older than any redelivery go.
	g.Go(func() error {
		return inbox.RunPurger(gctx, db, inbox.PurgerConfig{Retention: cfg.InboxRetention}, logger)
	})
	g.Go(func() error { return p.Serve(gctx, srv, lis) })
	return g.Wait()
}
