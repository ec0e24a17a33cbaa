package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/shopmesh/shopmesh/pkg/platform"
	pconfig "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/depcheck"
	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/config"
	"github.com/shopmesh/shopmesh/services/payment/internal/events"
	"github.com/shopmesh/shopmesh/services/payment/internal/rpc"
	"github.com/shopmesh/shopmesh/services/payment/internal/store"
	"github.com/shopmesh/shopmesh/services/payment/migrations"
)

// startTimeout bounds each start-up step that talks to a server (migrations, seeding, topics).
const startTimeout = 30 * time.Second

// run starts the service and blocks until ctx ends (then it returns nil after a graceful stop) or a
// part of it fails. args are the command-line arguments after the program name.
func run(ctx context.Context, args []string, lookup pconfig.Lookup, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "check-config" {
		return checkConfig(args[1:], lookup, stdout)
	}
	cfg, err := config.Load(lookup)
	if err != nil {
		return err
	}
	start, _ := cfg.Level()
	// The config center may change the level at run time (log_level in its documents).
	level := new(slog.LevelVar)
	level.Set(start.Level())
	// Lines logged inside a request (a span in the ctx) carry trace_id and span_id.
	logger := slog.New(telemetry.LogHandler(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level})))

	if len(args) == 1 && args[0] == "healthcheck" {
		return healthCheck(ctx, cfg)
	}
	if len(args) > 0 {
		if args[0] != "migrate" {
			return fmt.Errorf("unknown command %q (want: migrate, healthcheck or check-config)", args[0])
		}
		return migrateCommand(ctx, cfg.DSN, args[1:], stdout, logger)
	}

	// Built first: its tracer and registry feed the relay and the consumer; closed last, flushing spans.
	p, err := platform.New(ctx, cfg.Platform, logger, platform.WithLogLevel(level))
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	if err := migrateAll(ctx, cfg.DSN, logger); err != nil {
		return err
	}
	db, _, err := sqldb.Open(ctx, cfg.DSN, sqldb.Options{TracerProvider: p.TracerProvider()})
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	defer func() { _ = db.Close() }()

	pub := outbox.NewKafka(cfg.KafkaBrokers)
	defer func() { _ = pub.Close() }()
	relay, err := outbox.NewRelay(db, pub, logger, p.Metrics(),
		outbox.RelayConfig{PollInterval: cfg.RelayPollInterval, TracerProvider: p.TracerProvider()})
	if err != nil {
		return fmt.Errorf("outbox relay: %w", err)
	}
	st, err := store.New(db, events.Encode, store.WithOnCommit(relay.Notify))
	if err != nil {
		return err
	}
	svc := app.New(st)
	if err := seed(ctx, cfg, svc, logger); err != nil {
		return err
	}
	if err := ensureTopics(ctx, cfg); err != nil {
		return err
	}
	orders, err := consumer.NewKafka(consumer.KafkaConfig{
		Brokers: cfg.KafkaBrokers, GroupID: cfg.ConsumerGroup, Topics: []string{events.OrderTopic},
		MaxWait: cfg.ConsumerMaxWait, CommitInterval: cfg.ConsumerCommitInterval,
		Observe: consumer.Observe{TracerProvider: p.TracerProvider(), Metrics: p.Metrics()},
	}, events.OrderHandler(svc, logger), logger)
	if err != nil {
		return err
	}

	// Readiness: without its database no call can succeed, so the instance leaves the rotation while it
	// is down; the brokers are only reported (the outbox and the consumers wait them out).
	if err := p.AddDependencies(
		platform.Dependency{Name: "database", Check: db.PingContext, Required: true},
		platform.Dependency{Name: "kafka", Check: depcheck.Kafka(cfg.KafkaBrokers)},
	); err != nil {
		return err
	}
	srv := p.NewServer()
	paymentv1.RegisterPaymentServiceServer(srv, rpc.NewServer(svc, logger))
	lis, err := net.Listen("tcp", cfg.Platform.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// The order events' inbox would grow without bound: ids far older than any redelivery go.
	purge := func(ctx context.Context) error {
		return inbox.RunPurger(ctx, db, inbox.PurgerConfig{Retention: cfg.InboxRetention}, logger)
	}
	return serve(ctx, p, srv, lis, relay, orders, purge)
}

// serve runs the gRPC server with the relay, the consumer and the inbox purger beside it. The relay
// outlives the server's drain, so events of the last calls are published before it stops; if the
// relay or the consumer fails, the server is stopped and the failure returned.
func serve(ctx context.Context, p *platform.Platform, srv *grpc.Server, lis net.Listener,
	relay *outbox.Relay, orders *consumer.Kafka, purge func(context.Context) error) error {
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()
	g, gctx := errgroup.WithContext(bg)
	g.Go(func() error { return relay.Run(gctx) })
	g.Go(func() error { return orders.Run(gctx) })
	g.Go(func() error { return purge(gctx) })

	serveCtx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	stopOnFailure := context.AfterFunc(gctx, stopServe)
	defer stopOnFailure()
	serveErr := p.Serve(serveCtx, srv, lis)

	stopBg()
	return errors.Join(serveErr, g.Wait())
}

// seed creates the development accounts when configured; it is idempotent.
func seed(ctx context.Context, cfg config.Config, svc *app.Service, logger *slog.Logger) error {
	if !cfg.Seed {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	n, err := svc.SeedDev(ctx)
	if err != nil {
		return err
	}
	logger.Info("development accounts seeded", "created", n)
	return nil
}

func ensureTopics(ctx context.Context, cfg config.Config) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	err := outbox.EnsureTopics(ctx, cfg.KafkaBrokers,
		// Only the topics payment writes: order creates its own (the consumer waits for it).
		outbox.Topic{Name: events.PaymentTopic, Partitions: cfg.TopicPartitions},
		outbox.Topic{Name: consumer.DeadLetterTopic(events.OrderTopic), Partitions: 1},
	)
	if err != nil {
		return fmt.Errorf("kafka topics: %w", err)
	}
	return nil
}

// migrateAll applies every schema, bounded by startTimeout.
func migrateAll(ctx context.Context, dsn string, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	return store.Migrate(ctx, dsn, logger)
}

// migrateCommand runs `payment migrate up | down N | version | force V` on the payment schema; `up`
// applies the outbox and inbox schemas first.
func migrateCommand(ctx context.Context, dsn string, args []string, out io.Writer, logger *slog.Logger) error {
	if len(args) == 1 && args[0] == "up" {
		return migrateAll(ctx, dsn, logger)
	}
	return migrate.Command(ctx, dsn, migrations.FS, migrate.Options{Logger: logger}, args, out)
}
