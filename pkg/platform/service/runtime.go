package service

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/depcheck"
	"github.com/shopmesh/shopmesh/pkg/platform/inbox"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// Service is what Wire builds a service on: the platform, the logger, the database, the brokers, the
// server and the workers. Everything it opens is closed when the service stops.
type Service struct {
	name     string
	platform *platform.Platform
	logger   *slog.Logger
	base     config.Config

	db      *sql.DB
	dialect sqldb.Dialect

	deps    []platform.Dependency
	workers []worker
	closers []func() error
	kafka   bool // the kafka dependency is registered

	grpcServer *grpc.Server
	httpServer *http.Server
	httpAddr   string
}

type worker struct {
	name string
	run  func(context.Context) error
}

// Name is the service's name.
func (s *Service) Name() string { return s.name }

// Platform is the service's platform: Dial, Metrics, TracerProvider, ...
func (s *Service) Platform() *platform.Platform { return s.platform }

// Logger is the service's logger (JSON on stdout, `service` set).
func (s *Service) Logger() *slog.Logger { return s.logger }

// Metrics is the registry /metrics on the admin port serves.
func (s *Service) Metrics() prometheus.Registerer { return s.platform.Metrics() }

// TracerProvider traces the service's spans (OTLP when configured).
func (s *Service) TracerProvider() trace.TracerProvider { return s.platform.TracerProvider() }

// Dial returns the client connection to a target of the configuration (see platform.Dial).
func (s *Service) Dial(target string) (*grpc.ClientConn, error) { return s.platform.Dial(target) }

// Stopping is closed when the drain ends the service's streams (see platform.Stopping).
func (s *Service) Stopping() <-chan struct{} { return s.platform.Stopping() }

// DB is the service's database, migrated and open (nil without Spec.Migrations). Reported as a
// required dependency: while it is down the instance is not ready.
func (s *Service) DB() *sql.DB { return s.db }

// Dialect is the database's SQL dialect (PostgreSQL or SQLite).
func (s *Service) Dialect() sqldb.Dialect { return s.dialect }

// Outbox writes events in the caller's transaction for the relay (see Relay) to publish.
func (s *Service) Outbox() *outbox.Outbox { return outbox.New(s.dialect, propagation.TraceContext{}) }

// GRPC returns the service's gRPC server (the platform's interceptor chain, health, reflection in
// dev) to register handlers on; it serves on Config.ListenAddr with the platform's graceful stop.
func (s *Service) GRPC() *grpc.Server {
	if s.grpcServer == nil {
		s.grpcServer = s.platform.NewServer()
	}
	return s.grpcServer
}

// HTTP makes srv, on addr, the service's server (the edge), with the same lifecycle as GRPC's.
func (s *Service) HTTP(srv *http.Server, addr string) {
	s.httpServer, s.httpAddr = srv, addr
}

// Go runs fn as a worker: started before the server serves, its context cancelled after the drain.
// A worker that returns an error stops the service with it; returning nil ends only the worker.
func (s *Service) Go(name string, fn func(context.Context) error) {
	s.workers = append(s.workers, worker{name: name, run: fn})
}

// OnStop runs fn when the service stops, after the workers; closers run in reverse order.
func (s *Service) OnStop(fn func() error) { s.closers = append(s.closers, fn) }

// AddDependency reports d in readiness (see platform.AddDependencies).
func (s *Service) AddDependency(d platform.Dependency) { s.deps = append(s.deps, d) }

// NATS connects to n's URL as n's user (reconnecting for ever), reports it as the "nats" dependency
// and closes it when the service stops.
func (s *Service) NATS(n config.NATS) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(n.NatsURL, nats.Name(s.name), nats.Timeout(5*time.Second), nats.MaxReconnects(-1), n.Auth())
	if err != nil {
		return nil, nil, fmt.Errorf("nats %s: %w", n.NatsURL, err)
	}
	s.OnStop(func() error { nc.Close(); return nil })
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	s.AddDependency(platform.Dependency{Name: "nats", Check: depcheck.NATS(nc)})
	return nc, js, nil
}

// Kafka creates the topics the service writes (when missing) and returns a publisher for the relay,
// reports the brokers as the "kafka" dependency and closes the publisher when the service stops. Every
// connection authenticates with k's credential (k.SASL); give consumers the same (consumer.KafkaConfig.SASL).
func (s *Service) Kafka(ctx context.Context, k config.Kafka, topics ...outbox.Topic) (*outbox.Kafka, error) {
	if len(topics) > 0 {
		if err := outbox.EnsureTopics(ctx, k.KafkaBrokers, k.SASL(), topics...); err != nil {
			return nil, fmt.Errorf("kafka topics: %w", err)
		}
	}
	s.KafkaDependency(k)
	pub := outbox.NewKafka(k.KafkaBrokers, k.SASL())
	s.OnStop(pub.Close)
	return pub, nil
}

// KafkaDependency reports k's brokers as the "kafka" dependency (once), checked with k's credential.
func (s *Service) KafkaDependency(k config.Kafka) {
	if !s.kafka {
		s.kafka = true
		s.AddDependency(platform.Dependency{Name: "kafka", Check: depcheck.Kafka(k.KafkaBrokers, k.SASL())})
	}
}

// Relay publishes what Outbox wrote, through pub (outbox.Brokers: Kafka and JetStream on their own
// lanes), as a worker; call its Notify after each commit that wrote events.
func (s *Service) Relay(pub outbox.Publisher, cfg outbox.RelayConfig) (*outbox.Relay, error) {
	if s.db == nil {
		return nil, errors.New("outbox relay: the service has no database (Spec.Migrations)")
	}
	cfg.TracerProvider = s.TracerProvider()
	relay, err := outbox.NewRelay(s.db, pub, s.logger, s.Metrics(), cfg)
	if err != nil {
		return nil, err
	}
	s.Go("outbox relay", relay.Run)
	return relay, nil
}

// Observe is what consumers need to trace and count their messages.
func (s *Service) Observe() consumer.Observe {
	return consumer.Observe{TracerProvider: s.TracerProvider(), Metrics: s.Metrics()}
}

// InboxPurger deletes inbox ids older than retention, as a worker: far older than any redelivery,
// they would otherwise grow the table without bound.
func (s *Service) InboxPurger(retention time.Duration) {
	s.Go("inbox purger", func(ctx context.Context) error {
		return inbox.RunPurger(ctx, s.db, inbox.PurgerConfig{Retention: retention}, s.logger)
	})
}

// openDatabase applies every schema and opens the database, bounded by StartTimeout.
func (s *Service) openDatabase(ctx context.Context, dsn string, migrations fs.FS) error {
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	if err := migrate.UpAll(ctx, dsn, migrations, migrate.Options{Logger: s.logger}); err != nil {
		return err
	}
	db, dialect, err := sqldb.Open(ctx, dsn, sqldb.Options{TracerProvider: s.TracerProvider()})
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	s.db, s.dialect = db, dialect
	s.OnStop(db.Close)
	// Without its database no call can succeed: the instance leaves the rotation while it is down.
	// The brokers are only reported: the outbox and the consumers wait them out.
	s.AddDependency(platform.Dependency{Name: "database", Check: db.PingContext, Required: true})
	return nil
}

// serve runs the workers and the server until ctx ends or a worker fails, then drains the server,
// stops the workers and returns.
func (s *Service) serve(ctx context.Context) error {
	if (s.grpcServer == nil) == (s.httpServer == nil) {
		return errors.New("wire must register exactly one server: Service.GRPC or Service.HTTP")
	}
	if err := s.platform.AddDependencies(s.deps...); err != nil {
		return err
	}
	addr := s.base.ListenAddr
	if s.httpServer != nil {
		addr = s.httpAddr
	}
	lis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}

	// Workers outlive the drain: a call finishing during it still gets its events published.
	bg, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	g, gctx := errgroup.WithContext(bg)
	for _, w := range s.workers {
		g.Go(func() error {
			err := w.run(gctx)
			if err != nil && bg.Err() == nil {
				s.logger.Error("worker failed; stopping the service", "worker", w.name, "err", err)
				return fmt.Errorf("%s: %w", w.name, err)
			}
			return nil
		})
	}
	serveCtx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	stopOnFailure := context.AfterFunc(gctx, stopServe)
	defer stopOnFailure()

	var serveErr error
	if s.grpcServer != nil {
		serveErr = s.platform.Serve(serveCtx, s.grpcServer, lis)
	} else {
		serveErr = s.platform.ServeHTTP(serveCtx, s.httpServer, lis)
	}
	stopWorkers()
	return errors.Join(serveErr, g.Wait())
}

// close runs the closers in reverse order of registration.
func (s *Service) close() {
	for _, fn := range slices.Backward(s.closers) {
		if err := fn(); err != nil {
			s.logger.Warn("close", "err", err)
		}
	}
}
