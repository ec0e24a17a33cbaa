package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
)

// flushTimeout bounds the span flush in Close.
const flushTimeout = 5 * time.Second

// WithSpanExporter sends the platform's spans to exp instead of OTLP and turns tracing on even without
// an OTLP endpoint (tests use tracetest.NewInMemoryExporter).
func WithSpanExporter(exp sdktrace.SpanExporter) Option {
	return func(o *options) { o.telemetry = append(o.telemetry, telemetry.WithSpanExporter(exp)) }
}

// observability is what New builds once per process: tracer provider, registry, platform metrics.
type observability struct {
	tel                *telemetry.Telemetry
	breakerState       *prometheus.GaugeVec
	breakerTransitions *prometheus.CounterVec
	rejected           *prometheus.CounterVec
}

func newObservability(ctx context.Context, cfg Config, logger *slog.Logger, o options) (*observability, error) {
	tc := telemetry.DefaultConfig(cfg.Service)
	tc.Environment = string(cfg.Profile)
	tc.OTLPEndpoint = cfg.Telemetry.OTLPEndpoint
	tc.Insecure = cfg.Telemetry.OTLPInsecure
	tc.SampleRatio = cfg.Telemetry.SampleRatio
	if host, err := os.Hostname(); err == nil { // the pod name on Kubernetes
		tc.InstanceID = host + "/" + cfg.ListenAddr
	}
	tel, err := telemetry.New(ctx, tc, logger, o.telemetry...)
	if err != nil {
		return nil, err
	}
	ob := &observability{
		tel: tel,
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopmesh_breaker_state",
			Help: "Circuit breaker state per target: 0 closed, 1 half-open, 2 open.",
		}, []string{"target"}),
		breakerTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shopmesh_breaker_transitions_total",
			Help: "Circuit breaker state changes per target.",
		}, []string{"target", "from", "to"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shopmesh_server_rejected_total",
			Help: "Calls refused by the server's limits: reason RATE_LIMITED (token bucket) or OVERLOADED (shed by the in-flight limits).",
		}, []string{"grpc_method", "reason"}),
	}
	for _, c := range []prometheus.Collector{ob.breakerState, ob.breakerTransitions, ob.rejected} {
		if err := tel.Registry().Register(c); err != nil {
			_ = tel.Shutdown(ctx)
			return nil, fmt.Errorf("platform metrics: %w", err)
		}
	}
	return ob, nil
}

func (ob *observability) breakerChanged(target string, from, to breaker.State) {
	ob.breakerState.WithLabelValues(target).Set(float64(to))
	ob.breakerTransitions.WithLabelValues(target, from.String(), to.String()).Inc()
}

// Telemetry returns the process's telemetry (tracer provider, propagator, registry).
func (p *Platform) Telemetry() *telemetry.Telemetry { return p.obs.tel }

// Metrics is the process's Prometheus registry, served on AdminAddr: register service metrics here.
// It already holds the Go runtime and process collectors and the platform's families.
func (p *Platform) Metrics() *prometheus.Registry { return p.obs.tel.Registry() }

// TracerProvider is the process's tracer provider (a no-op one when tracing is off).
func (p *Platform) TracerProvider() trace.TracerProvider { return p.obs.tel.TracerProvider() }

// Tracer is TracerProvider().Tracer(name).
func (p *Platform) Tracer(name string) trace.Tracer { return p.obs.tel.Tracer(name) }

// Propagator is the W3C trace context + baggage propagator, for brokers and HTTP.
func (p *Platform) Propagator() propagation.TextMapPropagator { return p.obs.tel.Propagator() }

// Logger is the platform's logger: records logged with a context inside a span carry trace_id and
// span_id.
func (p *Platform) Logger() *slog.Logger { return p.logger }

// ServeAdmin serves /metrics, /healthz and /readyz on Config.AdminAddr until ctx ends; it returns at
// once when AdminAddr is empty. Serve and ServeHTTP run it; call it only for a process that uses
// neither.
func (p *Platform) ServeAdmin(ctx context.Context) error {
	if p.cfg.AdminAddr == "" {
		return nil
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", p.cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", p.cfg.AdminAddr, err)
	}
	return p.serveAdmin(ctx, lis)
}

func (p *Platform) adminHandler() http.Handler {
	ready := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := p.health.Check(ctx, "")
		return err == nil && st == healthgrpc.HealthCheckResponse_SERVING
	}
	opts := []telemetry.AdminOption{telemetry.WithReadiness(ready), telemetry.WithReadinessReport(p.health.DependencyReport)}
	if p.cfg.AdminPprof {
		opts = append(opts, telemetry.WithPprof())
	}
	return p.obs.tel.AdminHandler(nil, opts...)
}

func (p *Platform) serveAdmin(ctx context.Context, lis net.Listener) error {
	p.logger.Info("admin serving", "addr", lis.Addr().String())
	return telemetry.ServeAdminListener(ctx, lis, p.adminHandler())
}

// sidecars are the admin HTTP server and the plaintext health-only gRPC server Serve runs beside the
// main server.
type sidecars struct {
	cancel context.CancelFunc
	admin  chan error
	health *grpc.Server
	hdone  chan error
}

func (p *Platform) startSidecars(ctx context.Context) (*sidecars, error) {
	sc := &sidecars{}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sc.cancel = cancel
	if p.cfg.AdminAddr != "" {
		var lc net.ListenConfig
		lis, err := lc.Listen(ctx, "tcp", p.cfg.AdminAddr)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("admin listen %s: %w", p.cfg.AdminAddr, err)
		}
		sc.admin = make(chan error, 1)
		go func() { sc.admin <- p.serveAdmin(actx, lis) }()
	}
	if p.cfg.HealthAddr != "" {
		var lc net.ListenConfig
		lis, err := lc.Listen(ctx, "tcp", p.cfg.HealthAddr)
		if err != nil {
			sc.stop()
			return nil, fmt.Errorf("health listen %s: %w", p.cfg.HealthAddr, err)
		}
		// Plaintext on purpose: kubelet's gRPC probes cannot present a client certificate. It exposes
		// nothing but the serving status.
		sc.health = grpc.NewServer()
		healthgrpc.RegisterHealthServer(sc.health, p.health.service())
		sc.hdone = make(chan error, 1)
		p.logger.Info("health serving", "addr", lis.Addr().String())
		go func() { sc.hdone <- sc.health.Serve(lis) }()
	}
	return sc, nil
}

// stop ends the sidecars; called after the main server stopped, so probes see NOT_SERVING to the end.
func (sc *sidecars) stop() {
	if sc.health != nil {
		sc.health.Stop()
		<-sc.hdone
	}
	sc.cancel()
	if sc.admin != nil {
		<-sc.admin
	}
}

// shutdown flushes the spans still buffered and stops the exporter; Close calls it.
func (ob *observability) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	if err := ob.tel.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// methodLabel keeps the rate-limit label short: "/pkg.Svc/Method" → "pkg.Svc/Method".
func methodLabel(full string) string { return strings.TrimPrefix(full, "/") }
