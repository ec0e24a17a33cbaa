package main

import (
	"context"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/config"
	"github.com/shopmesh/shopmesh/services/payment/internal/events"
	"github.com/shopmesh/shopmesh/services/payment/internal/rpc"
	"github.com/shopmesh/shopmesh/services/payment/internal/store"
)

// wire builds payment on s: the Kafka topics it writes and the relay publishing its events there, the
// store and the use cases, the gRPC service, the order-event consumer and the inbox purger, and seeds
// the development accounts when configured. The platform runs and stops them.
func wire(ctx context.Context, s *service.Service, cfg config.Config) error {
	kafka, err := s.Kafka(ctx, cfg.Kafka, events.Topics(cfg.TopicPartitions)...)
	if err != nil {
		return err
	}
	relay, err := s.Relay(outbox.Brokers{Kafka: kafka}, outbox.RelayConfig{PollInterval: cfg.RelayPollInterval, MinInterval: cfg.RelayMinIntervalOption()})
	if err != nil {
		return err
	}
	st := store.New(s.DB(), s.Dialect(), events.NewOutbox(s.Outbox()), store.WithAfterCommit(relay.Notify))
	a, err := app.New(app.Deps{Store: st}, app.Settings{})
	if err != nil {
		return err
	}
	if cfg.Seed {
		n, err := a.SeedDev(ctx)
		if err != nil {
			return err
		}
		s.Logger().Info("development accounts seeded", "created", n)
	}
	rpc.NewServer(a, s.Logger()).Register(s.GRPC())

	// On PostgreSQL the captures of a fetched batch of OrderConfirmed run in one transaction; anything
	// else in it goes to the Handler, one event at a time. SQLite (make run) has no batch step: each
	// event keeps its own inbox transaction, and the consumer does not gather.
	var batch consumer.BatchHandler
	if s.Dialect() == sqldb.Postgres {
		batch = events.OrderBatchHandler(a, s.Logger())
	}
	orders, err := consumer.NewKafka(consumer.KafkaConfig{
		Brokers: cfg.KafkaBrokers, SASL: cfg.SASL(), GroupID: cfg.ConsumerGroup, Topics: []string{events.OrderTopic},
		MaxWait: cfg.ConsumerMaxWait, CommitInterval: cfg.ConsumerCommitInterval, Observe: s.Observe(),
		Batch: batch, MaxBatch: cfg.ConsumerMaxBatchOption(),
	}, events.OrderHandler(a, s.Logger()), s.Logger())
	if err != nil {
		return err
	}
	s.Go("order events consumer", orders.Run)
	s.InboxPurger(cfg.InboxRetention)
	return nil
}
