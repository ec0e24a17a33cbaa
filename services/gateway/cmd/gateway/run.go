package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/gateway/internal/auth"
	gatewaycfg "github.com/shopmesh/shopmesh/services/gateway/internal/config"
	"github.com/shopmesh/shopmesh/services/gateway/internal/httpapi"
)

// run wires the gateway and serves HTTP until ctx ends (then it shuts down and returns nil) or the
// server fails. The bound address is logged as "listening" (addr), so tests can use port 0.
func run(ctx context.Context, args []string, lookup config.Lookup, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "check-config" {
		return checkConfig(args[1:], lookup, stdout)
	}
	if len(args) > 0 && args[0] != "healthcheck" {
		return fmt.Errorf("unknown command %q (want none, healthcheck or check-config)", args[0])
	}
	cfg, err := gatewaycfg.Load(lookup)
	if err != nil {
		return err
	}
	if len(args) == 1 && args[0] == "healthcheck" {
		return healthCheck(ctx, cfg)
	}
	// Lines logged inside a request (a span in the ctx) carry trace_id and span_id.
	// The config center may change the level at run time (log_level in its documents).
	level := new(slog.LevelVar)
	logger := slog.New(telemetry.LogHandler(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: level}))).With("service", cfg.Service)

	p, err := platform.New(ctx, cfg.Config, logger, platform.WithLogLevel(level))
	if err != nil {
		return err
	}
	defer p.Close()
	backends := map[string]httpapi.Backend{}
	var clients struct {
		order     orderv1.OrderServiceClient
		inventory inventoryv1.InventoryServiceClient
		payment   paymentv1.PaymentServiceClient
	}
	for _, name := range []string{"order", "inventory", "payment"} {
		conn, err := p.Dial(name)
		if err != nil {
			return err
		}
		backends[name] = conn
		switch name {
		case "order":
			clients.order = orderv1.NewOrderServiceClient(conn)
		case "inventory":
			clients.inventory = inventoryv1.NewInventoryServiceClient(conn)
		case "payment":
			clients.payment = paymentv1.NewPaymentServiceClient(conn)
		}
	}
	tokens, err := auth.New(cfg.JWTSecret.Reveal(), cfg.JWTIssuer, nil)
	if err != nil {
		return err
	}
	api, err := httpapi.New(httpapi.Deps{
		Orders: clients.order, Inventory: clients.inventory, Payment: clients.payment, Backends: backends,
		Tokens: tokens, Logger: logger, Metrics: p.Metrics(), TracerProvider: p.TracerProvider(),
	}, httpapi.Settings{
		CallTimeout: cfg.CallTimeout, CreateTimeout: cfg.CreateTimeout, StreamMaxDuration: cfg.StreamMaxDuration,
		ImportTimeout: cfg.ImportTimeout, WriteTimeout: cfg.WriteTimeout, MaxBodyBytes: cfg.MaxBodyBytes,
		MaxImportBytes: cfg.MaxImportBytes, MaxImportLineBytes: cfg.MaxImportLineBytes,
		RateLimitRPS: cfg.RateLimitRPS, RateLimitBurst: cfg.RateLimitBurst, TokenTTL: cfg.TokenTTL,
		DevTokens: cfg.DevTokens(),
	})
	if err != nil {
		return err
	}
	defer api.Close()

	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// Shutdown waits for active requests, and event streams never end on their own: end them first.
	srv.RegisterOnShutdown(api.Close)
	lis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	logger.Info("listening", "addr", lis.Addr().String(), "profile", cfg.Profile, "dev_tokens", cfg.DevTokens())

	// /metrics (HTTP by route and code, grpc_client_*, runtime), /healthz and /readyz on GATEWAY_ADMIN_ADDR.
	actx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	adminDone := make(chan error, 1)
	go func() { adminDone <- p.ServeAdmin(actx) }()
	// Rate limits, breaker thresholds and the log level from the config center (<P>_CONFIG_CENTER_BACKEND);
	// returns at once without one.
	centerDone := make(chan error, 1)
	go func() { centerDone <- p.RunConfigCenter(actx) }()
	defer func() {
		stopAdmin()
		if err := <-centerDone; err != nil {
			logger.Warn("config center", "err", err)
		}
	}()
	defer func() {
		stopAdmin()
		if err := <-adminDone; err != nil {
			logger.Warn("admin server", "err", err)
		}
	}()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", cfg.HTTPShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.HTTPShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("graceful shutdown timed out, closing connections", "err", err)
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	logger.Info("stopped")
	return nil
}
