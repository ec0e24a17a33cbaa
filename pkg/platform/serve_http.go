package platform

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
)

// ServeHTTP is Serve for a process whose front server speaks HTTP (the gateway): it serves srv on lis
// (HTTPS only when srv.TLSConfig is set: the certificate comes from TLSConfig, e.g. the reloading
// GetCertificate of mtls.KeyPair, and HTTP/2 is offered through ALPN) until ctx is cancelled or the
// server fails, with the same sidecars (admin server on Config.AdminAddr, health-only gRPC server on
// Config.HealthAddr), config center and dependency checks, then shuts down:
//
//  1. every health status becomes NOT_SERVING, so /readyz answers 503 and load balancers stop sending
//     new requests;
//  2. Server.DrainDelay is waited, while requests are still served, for them to notice;
//  3. Stopping is closed, so handlers that would run as long as their client stays (event streams,
//     long polls) end, and srv.Shutdown closes the listener and waits for the requests still running;
//  4. after Server.ShutdownTimeout, srv.Close cuts whatever is left.
//
// It does not register the instance in the Registry: HTTP front servers are found through their own
// load balancer, not through service discovery.
//
// It returns nil after a shutdown caused by ctx, and the server's error otherwise.
func (p *Platform) ServeHTTP(ctx context.Context, srv *http.Server, lis net.Listener) error {
	defer p.stopServing()
	stopRuntime, err := p.startRuntime(ctx)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer stopRuntime()
	stopChecks := p.health.runDependencies(ctx, p.logger)
	defer stopChecks()

	addr := lis.Addr().String()
	errc := make(chan error, 1)
	tlsOn := srv.TLSConfig != nil
	go func() {
		if tlsOn {
			errc <- srv.ServeTLS(lis, "", "") // the certificate comes from TLSConfig (GetCertificate)
			return
		}
		errc <- srv.Serve(lis)
	}()
	p.logger.Info("serving", "addr", addr, "profile", p.cfg.Profile, "protocol", "http", "tls", tlsOn)

	select {
	case err := <-errc:
		stopChecks()
		p.health.shutdown()
		if errors.Is(err, http.ErrServerClosed) { // closed by its owner
			return nil
		}
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}

	s := p.cfg.Server
	p.logger.Info("shutting down", "drain_delay", s.DrainDelay, "timeout", s.ShutdownTimeout)
	stopChecks()
	p.health.shutdown()
	waitDrainDelay(s.DrainDelay)

	p.stopServing()
	p.health.endWatches()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		p.logger.Warn("graceful stop timed out, closing connections", "timeout", s.ShutdownTimeout, "err", err)
		_ = srv.Close()
	} else {
		p.logger.Info("stopped gracefully")
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", addr, err)
	}
	return nil
}
