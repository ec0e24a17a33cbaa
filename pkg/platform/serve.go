package platform

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
)

// Serve runs srv on lis until ctx is cancelled or the server fails, then shuts down gracefully:
//
//  1. the instance is deregistered first (when a Registry is configured), so discovery stops
//     sending new clients here;
//  2. every health status becomes NOT_SERVING, so health-checking clients already connected stop
//     picking this instance;
//  3. Server.DrainDelay is waited, while calls are still accepted, for clients and load balancers to notice;
//  4. Stopping is closed: every stream's context is cancelled, so long-lived streams (watches, bidi
//     sessions) end at once and their clients get UNAVAILABLE "server is shutting down" and reconnect
//     elsewhere; health Watch streams are ended; GracefulStop refuses new calls and waits for the
//     running ones (unary calls are left to finish);
//  5. after Server.ShutdownTimeout, Stop cancels whatever is still running.
//
// Beside srv it runs the admin HTTP server on Config.AdminAddr (/metrics, /healthz, /readyz) and a
// plaintext gRPC server with only grpc.health.v1 on Config.HealthAddr (for Kubernetes probes), both on
// the same health state; they stop after srv, so probes see NOT_SERVING through the drain.
//
// While serving it checks the dependencies added with AddDependencies: while a required one is down,
// the whole server ("" and every service registered on srv) reports NOT_SERVING, and it comes back
// with the dependency; the checks stop when shutdown begins, and nothing turns SERVING after that.
//
// It returns nil after a shutdown caused by ctx, and the server's error otherwise.
func (p *Platform) Serve(ctx context.Context, srv *grpc.Server, lis net.Listener) error {
	// However Serve ends, streams and code waiting on Stopping must not outlive it.
	defer p.stopServing()
	stopRuntime, err := p.startRuntime(ctx)
	if err != nil {
		_ = lis.Close()
		return err
	}
	defer stopRuntime()
	for name := range srv.GetServiceInfo() {
		if name != healthgrpc.Health_ServiceDesc.ServiceName {
			p.health.track(name)
		}
	}
	stopChecks := p.health.runDependencies(ctx, p.logger)
	defer stopChecks()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()

	inst := discovery.Instance{Service: p.cfg.Service, Addr: lis.Addr().String()}
	registered := false
	if p.registry != nil {
		if err := p.registry.Register(ctx, inst); err != nil {
			srv.Stop()
			<-errc
			return fmt.Errorf("register %s: %w", inst.Addr, err)
		}
		registered = true
	}
	p.logger.Info("serving", "addr", inst.Addr, "profile", p.cfg.Profile)

	select {
	case err := <-errc:
		stopChecks()
		p.health.shutdown()
		if registered {
			p.deregister(inst)
		}
		if err == nil || errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return fmt.Errorf("serve %s: %w", inst.Addr, err)
	case <-ctx.Done():
	}

	s := p.cfg.Server
	p.logger.Info("shutting down", "drain_delay", s.DrainDelay, "timeout", s.ShutdownTimeout)
	stopChecks()
	if registered {
		p.deregister(inst)
	}
	p.health.shutdown()
	waitDrainDelay(s.DrainDelay)

	p.stopServing()
	p.health.endWatches()
	stopped := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(s.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-stopped:
		p.logger.Info("stopped gracefully")
	case <-t.C:
		p.logger.Warn("graceful stop timed out, cancelling remaining calls", "timeout", s.ShutdownTimeout)
		srv.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve %s: %w", inst.Addr, err)
	}
	return nil
}

// Stopping is closed when the drain ends, right before the server stops taking calls (GracefulStop, or
// http.Server.Shutdown in ServeHTTP), and at the latest when Serve or ServeHTTP returns; it stays
// closed (a Platform serves once). Streams served through NewServer need not watch it: their context
// is cancelled with it. Watch it in what a stream context does not reach (an HTTP event stream, a long
// poll, a worker feeding streams) to end it, so the shutdown does not wait.
func (p *Platform) Stopping() <-chan struct{} { return p.stopping.Done() }

func (p *Platform) deregister(inst discovery.Instance) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Server.ShutdownTimeout)
	defer cancel()
	if err := p.registry.Deregister(ctx, inst); err != nil {
		// Clients still have health checks to stop sending here; keep shutting down.
		p.logger.Warn("deregister failed", "addr", inst.Addr, "err", err)
	}
}

// startRuntime starts what runs beside any front server, gRPC (Serve) or HTTP (ServeHTTP): the
// sidecars (admin server, health-only gRPC server) and the config center. stop ends both, the config
// center first.
func (p *Platform) startRuntime(ctx context.Context) (stop func(), err error) {
	sc, err := p.startSidecars(ctx)
	if err != nil {
		return nil, err
	}
	cctx, stopCenter := context.WithCancel(ctx)
	centerDone := make(chan struct{})
	go func() {
		defer close(centerDone)
		if err := p.RunConfigCenter(cctx); err != nil {
			p.logger.Warn("config center stopped", "err", err)
		}
	}()
	return func() {
		stopCenter()
		<-centerDone
		sc.stop()
	}, nil
}

// waitDrainDelay waits d (none when d <= 0): the instance reports NOT_SERVING but still serves while
// clients and load balancers notice.
func waitDrainDelay(d time.Duration) {
	if d > 0 {
		t := time.NewTimer(d)
		<-t.C
	}
}
