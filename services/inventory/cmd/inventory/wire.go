package main

import (
	"context"
	"fmt"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/rpc"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
)

// wire builds inventory on s: the relay publishing StockChanged to Kafka and its live copy to
// JetStream, the store and the application, the gRPC service, the order-event consumer and the
// inbox purger, and seeds the dev catalogue when configured. The platform runs and stops them.
func wire(ctx context.Context, s *service.Service, cfg config.Config) error {
	kafka, err := s.Kafka(ctx, cfg.Kafka, events.Topics(cfg.TopicPartitions)...)
	if err != nil {
		return err
	}
	nc, js, err := s.NATS(cfg.NATS)
	if err != nil {
		return err
	}
	if _, err := js.CreateOrUpdateStream(ctx, events.Stream()); err != nil {
		return fmt.Errorf("stream %s: %w", events.StockStream, err)
	}
	relay, err := s.Relay(outbox.Brokers{Kafka: kafka, JetStream: outbox.NewJetStream(js), Subject: events.LiveSubject},
		outbox.RelayConfig{PollInterval: cfg.RelayPollInterval, MinInterval: cfg.RelayMinIntervalOption()})
	if err != nil {
		return err
	}
	st := store.New(s.DB(), s.Dialect(), events.NewOutbox(s.Outbox()), store.WithAfterCommit(relay.Notify))
	a, err := app.New(app.Deps{
		Stock: st, Effects: st, Feed: events.NewFeed(nc, s.Logger()).Traced(s.TracerProvider()), Logger: s.Logger(),
	}, app.Settings{Consumer: events.ConsumerGroup})
	if err != nil {
		return err
	}
	if cfg.Seed {
		n, err := a.Seed(ctx, app.DevCatalog(cfg.SeedProducts, cfg.SeedStock))
		if err != nil {
			return err
		}
		s.Logger().Info("seeded dev catalogue", "inserted", n)
	}
	rpc.NewServer(a, s.Logger()).Register(s.GRPC())

	// On PostgreSQL the commits of a fetched batch of OrderConfirmed (up to INVENTORY_CONSUMER_MAX_BATCH,
	// 1: one at a time) run in one transaction, the product rows locked by its last statement only
	// (store.CommitBatchOnce); anything else in it goes to the Handler, one event at a time. SQLite
	// (make run) has no batch step: each event keeps its own inbox transaction, and the consumer does
	// not gather.
	var batch consumer.BatchHandler
	if s.Dialect() == sqldb.Postgres {
		batch = events.OrderBatchHandler(a)
	}
	orders, err := consumer.NewKafka(consumer.KafkaConfig{
		Brokers: cfg.KafkaBrokers, SASL: cfg.SASL(), GroupID: events.ConsumerGroup, Topics: []string{events.OrderTopic},
		MaxWait: 250 * time.Millisecond, CommitInterval: cfg.ConsumerCommitInterval, Observe: s.Observe(),
		Batch: batch, MaxBatch: cfg.ConsumerMaxBatchOption(),
	}, events.OrderHandler(a), s.Logger())
	if err != nil {
		return err
	}
	s.Go("order events consumer", orders.Run)
	s.InboxPurger(cfg.InboxRetention)
	return nil
}
