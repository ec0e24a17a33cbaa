package healthcheck

import (
	"context"
	"fmt"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// Service checks the gRPC service described by cfg from inside its own container: the plaintext
// health-only server on 127.0.0.1:<HealthAddr port> when HealthAddr is set, else the main server on
// 127.0.0.1:<ListenAddr port>, with the service's own mTLS identity when TLS is configured (the server
// is expected to present the certificate of cfg.Service).
func Service(ctx context.Context, cfg config.Config) error {
	if cfg.HealthAddr != "" {
		addr, err := Loopback(cfg.HealthAddr)
		if err != nil {
			return err
		}
		return Run(ctx, addr, nil)
	}
	addr, err := Loopback(cfg.ListenAddr)
	if err != nil {
		return err
	}
	if !cfg.TLS.Enabled() {
		return Run(ctx, addr, nil)
	}
	src, err := mtls.Load(mtls.Config{CAFile: cfg.TLS.CAFile, CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile})
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer src.Close()
	return Run(ctx, addr, src.ClientCredentials(cfg.Service))
}

// Gateway checks an HTTP process (the gateway, which runs no gRPC server of its own): GET
// http://127.0.0.1:<port of httpAddr>/healthz.
func Gateway(ctx context.Context, httpAddr string) error {
	addr, err := Loopback(httpAddr)
	if err != nil {
		return err
	}
	return HTTP(ctx, "http://"+addr+"/healthz")
}

// GatewayHTTPS is Gateway for an API port that serves HTTPS: GET https://127.0.0.1:<port>/healthz,
// the certificate not verified (it names the public host; the port is the process's own).
func GatewayHTTPS(ctx context.Context, httpAddr string) error {
	addr, err := Loopback(httpAddr)
	if err != nil {
		return err
	}
	return HTTP(ctx, "https://"+addr+"/healthz")
}
