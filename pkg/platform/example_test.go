package platform_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
)

// This is the whole platform part of a service's main (cmd/order/main.go); the service's own config
// embeds config.Config, and main is the only place that reads the environment.
func Example() {
	run := func(ctx context.Context, lookup config.Lookup, logger *slog.Logger) error {
		profile, _ := lookup("ORDER_PROFILE")
		cfg := config.Default(config.Profile(profile))
		cfg.Service, cfg.ListenAddr = "order", ":50051"
		cfg.Targets["inventory"] = config.Target{Addresses: []string{"inventory:50051"}}
		if err := config.FromEnv(&cfg, "ORDER", lookup); err != nil {
			return err
		}

		p, err := platform.New(ctx, cfg, logger)
		if err != nil {
			return err
		}
		defer p.Close()

		conn, err := p.Dial("inventory")
		if err != nil {
			return err
		}
		stock := inventoryv1.NewInventoryServiceClient(conn)
		_ = stock // handed to the application layer's adapter

		srv := p.NewServer()
		orderv1.RegisterOrderServiceServer(srv, orderv1.UnimplementedOrderServiceServer{})
		lis, err := net.Listen("tcp", cfg.ListenAddr)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		return p.Serve(ctx, srv, lis) // blocks; graceful shutdown when ctx ends
	}

	main := func() {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
		if err := run(ctx, os.LookupEnv, logger); err != nil {
			logger.Error("order stopped", "err", err)
			os.Exit(1)
		}
	}
	_ = main
}
