package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/gateway/internal/auth"
	"github.com/shopmesh/shopmesh/services/gateway/internal/config"
	"github.com/shopmesh/shopmesh/services/gateway/internal/httpapi"
)

// wire builds the gateway on s: the clients of order, inventory and payment, the token verifier and
// the HTTP API, served on GATEWAY_HTTP_ADDR. The platform serves it with the admin port and the config
// center, and drains it: /readyz answers 503 from the drain's start, the event streams end when the
// server stops taking requests, and the shutdown is bounded by GATEWAY_SERVER_SHUTDOWN_TIMEOUT.
func wire(_ context.Context, s *service.Service, cfg config.Config) error {
	backends := map[string]httpapi.Backend{}
	dial := func(name string) (*grpc.ClientConn, error) {
		conn, err := s.Dial(name)
		if err == nil {
			backends[name] = conn
			s.AddDependency(backendDependency(name, conn))
		}
		return conn, err
	}
	orders, err := dial("order")
	if err != nil {
		return err
	}
	inventory, err := dial("inventory")
	if err != nil {
		return err
	}
	payment, err := dial("payment")
	if err != nil {
		return err
	}
	tokens, err := newTokens(cfg)
	if err != nil {
		return err
	}
	health := s.Platform().Health()
	api, err := httpapi.New(httpapi.Deps{
		Orders: orderv1.NewOrderServiceClient(orders), Inventory: inventoryv1.NewInventoryServiceClient(inventory),
		Payment: paymentv1.NewPaymentServiceClient(payment), Backends: backends,
		Tokens: tokens, Logger: s.Logger(), Metrics: s.Platform().Metrics(), TracerProvider: s.TracerProvider(),
		Stopping: s.Stopping(),
		Serving: func(ctx context.Context) bool {
			st, err := health.Check(ctx, "")
			return err == nil && st == healthpb.HealthCheckResponse_SERVING
		},
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
	s.OnStop(func() error { api.Close(); return nil })
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.Logger().Handler(), slog.LevelWarn),
	}
	if cfg.HTTPS.Enabled() {
		// The platform's reloader (the one the mTLS files use): a replaced pair is presented to new
		// connections within GATEWAY_TLS_RELOAD_INTERVAL; a pair that does not load is logged and ignored.
		pair, err := mtls.LoadKeyPair(mtls.KeyPairConfig{
			CertFile: cfg.HTTPS.CertFile, KeyFile: cfg.HTTPS.KeyFile, Reload: cfg.TLS.ReloadInterval, Logger: s.Logger(),
		})
		if err != nil {
			return fmt.Errorf("https_cert_file, https_key_file: %w", err)
		}
		s.OnStop(pair.Close)
		srv.TLSConfig = pair.ServerConfig()
		leaf := pair.Certificate()
		s.Logger().Info("https on", "subject", leaf.Subject.String(), "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
	}
	s.HTTP(srv, cfg.HTTPAddr)
	if cfg.DevTokensOffLoopback() {
		s.Logger().Warn("dev tokens off: POST /v1/dev/token is served only when GATEWAY_HTTP_ADDR is a loopback address",
			"http_addr", cfg.HTTPAddr)
	}
	s.Logger().Info("http api", "dev_tokens", cfg.DevTokens(), "routes", len(api.Routes()), "https", cfg.HTTPS.Enabled(),
		"https_terminated_upstream", cfg.HTTPS.TerminatedUpstream)
	return nil
}

// backendDependency reports a backend's channel in the admin port's /readyz?verbose and
// shopmesh_dependency_up{dependency}: down while it has no instance to call (every one unreachable or
// not SERVING). An idle channel is asked to connect, so the report says what a call would find. Not
// required: the gateway stays ready, the backend's routes answer 503.
func backendDependency(name string, conn *grpc.ClientConn) platform.Dependency {
	return platform.Dependency{Name: name, Check: func(context.Context) error {
		switch st := conn.GetState(); st {
		case connectivity.Idle:
			conn.Connect()
		case connectivity.TransientFailure, connectivity.Shutdown:
			return fmt.Errorf("no instance to call (%s)", strings.ToLower(st.String()))
		}
		return nil
	}}
}

// newTokens builds the token verifier: ES256 public keys from GATEWAY_JWT_JWKS_FILE (verify only), else
// the HS256 keys of GATEWAY_JWT_KEYS or GATEWAY_JWT_SECRET.
func newTokens(cfg config.Config) (*auth.Tokens, error) {
	o := auth.Options{Issuer: cfg.JWTIssuer, Leeway: cfg.JWTLeeway}
	if cfg.JWTJwksFile != "" {
		data, err := os.ReadFile(cfg.JWTJwksFile)
		if err != nil {
			return nil, fmt.Errorf("jwt_jwks_file: %w", err)
		}
		if o.Public, err = auth.LoadJWKS(data); err != nil {
			return nil, fmt.Errorf("jwt_jwks_file %s: %w", cfg.JWTJwksFile, err)
		}
		return auth.NewTokens(o)
	}
	keys, err := cfg.JWTKeySet()
	if err != nil {
		return nil, err
	}
	o.Keys = keys
	return auth.NewTokens(o)
}
