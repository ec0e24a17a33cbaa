package main

import (
	"context"
	"fmt"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/order/internal/app"
	"github.com/shopmesh/shopmesh/services/order/internal/config"
	"github.com/shopmesh/shopmesh/services/order/internal/events"
	"github.com/shopmesh/shopmesh/services/order/internal/rpc"
	"github.com/shopmesh/shopmesh/services/order/internal/store"
)

// wire builds the order service on s: the brokers and the outbox relay (one row per event: Kafka, and
// its copy on the order's status subject), the store, the inventory and payment clients, the
// application with its metrics, the gRPC API and the recovery worker.
func wire(ctx context.Context, s *service.Service, cfg config.Config) error {
	nc, js, err := s.NATS(cfg.NATS)
	if err != nil {
		return err
	}
	if _, err := js.CreateOrUpdateStream(ctx, events.StatusStreamConfig()); err != nil {
		return fmt.Errorf("status stream: %w", err)
	}
	kafka, err := s.Kafka(ctx, cfg.Kafka, outbox.Topic{Name: events.Topic, Partitions: cfg.TopicPartitions})
	if err != nil {
		return err
	}
	relay, err := s.Relay(events.Brokers(kafka, outbox.NewJetStream(js)), outbox.RelayConfig{PollInterval: cfg.RelayPollInterval, MinInterval: cfg.RelayMinIntervalOption()})
	if err != nil {
		return err
	}
	orders := store.New(s.DB(), s.Dialect(), s.Outbox(), store.WithAfterCommit(relay.Notify))

	invConn, err := s.Dial("inventory")
	if err != nil {
		return err
	}
	payConn, err := s.Dial("payment")
	if err != nil {
		return err
	}
	inventory := rpc.NewInventoryClient(inventoryv1.NewInventoryServiceClient(invConn), cfg.CallTimeout)
	outcome, err := sagaMetrics(s.Metrics())
	if err != nil {
		return err
	}
	recovered, err := recoveryMetrics(s.Metrics())
	if err != nil {
		return err
	}
	a, err := app.New(app.Deps{
		Orders: orders, Stock: inventory, Catalog: inventory, Feed: events.NewFeed(nc).Traced(s.TracerProvider()),
		Payment: rpc.NewPaymentClient(paymentv1.NewPaymentServiceClient(payConn), cfg.CallTimeout),
		Logger:  s.Logger(), Outcome: outcome, Recovered: recovered,
	}, cfg.Settings())
	if err != nil {
		return err
	}

	orderv1.RegisterOrderServiceServer(s.GRPC(), rpc.NewServer(a, nil))
	s.Go("order recovery", func(ctx context.Context) error { return a.RunRecovery(ctx, cfg.RecoveryInterval) })
	return nil
}
