// Package telemetry builds one service's tracing, metrics and log correlation:
// an OpenTelemetry tracer provider exporting OTLP (Jaeger reads it natively), a
// propagator, and a Prometheus registry, all returned and passed explicitly so
// nothing in the process depends on otel's or Prometheus's global state.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// DefaultExportTimeout bounds one OTLP export when Config.ExportTimeout is zero.
const DefaultExportTimeout = 10 * time.Second

// Config describes what a service reports about itself and where spans go.
type Config struct {
	ServiceName string
	Version     string
	InstanceID  string
	Environment string
	// OTLPEndpoint is the OTLP/gRPC collector (host:port or a URL). Empty turns
	// tracing off: no exporter is created and spans are not recorded, though
	// incoming trace context is still propagated.
	OTLPEndpoint string
	Insecure     bool
	// SampleRatio is the share of root traces kept, in [0, 1]. A sampled
	// parent is always honoured, so one service cannot cut a trace in half.
	SampleRatio   float64
	ExportTimeout time.Duration
}

// DefaultConfig returns a Config that samples everything and does not export.
func DefaultConfig(serviceName string) Config {
	return Config{ServiceName: serviceName, SampleRatio: 1, ExportTimeout: DefaultExportTimeout}
}

// Validate reports the first field that cannot work.
func (c Config) Validate() error {
	switch {
	case strings.TrimSpace(c.ServiceName) == "":
		return errors.New("telemetry: service name is required")
	case c.SampleRatio < 0 || c.SampleRatio > 1 || c.SampleRatio != c.SampleRatio:
		return fmt.Errorf("telemetry: sample ratio %v is outside [0, 1]", c.SampleRatio)
	case c.ExportTimeout < 0:
		return fmt.Errorf("telemetry: export timeout %v is negative", c.ExportTimeout)
	}
	return nil
}

// Option changes how New builds Telemetry; tests use it to capture spans.
type Option func(*options)

type options struct {
	exporter sdktrace.SpanExporter
}

// WithSpanExporter sends spans to exp instead of OTLP, and turns tracing on
// even when Config.OTLPEndpoint is empty (e.g. tracetest.NewInMemoryExporter).
func WithSpanExporter(exp sdktrace.SpanExporter) Option {
	return func(o *options) { o.exporter = exp }
}

// Telemetry holds one service's providers. Pass it (or its parts) to whoever
// needs them; it never installs itself globally.
type Telemetry struct {
	log        *slog.Logger
	sdk        *sdktrace.TracerProvider // nil when tracing is off
	tp         trace.TracerProvider
	propagator propagation.TextMapPropagator
	registry   *prometheus.Registry
	server     *rpcMetrics
	client     *rpcMetrics
}

// New builds the tracer provider, propagator and metrics registry for cfg.
// Call Shutdown when the service stops so buffered spans are flushed. log should already carry the
// service's name; New does not add it.
func New(ctx context.Context, cfg Config, log *slog.Logger, opts ...Option) (*Telemetry, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}

	t := &Telemetry{
		log:        log,
		tp:         tracenoop.NewTracerProvider(),
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		registry:   prometheus.NewRegistry(),
	}

	if err := t.registry.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("telemetry: register go collector: %w", err)
	}
	if err := t.registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("telemetry: register process collector: %w", err)
	}
	var err error
	if t.server, err = newRPCMetrics(t.registry, "server"); err != nil {
		return nil, err
	}
	if t.client, err = newRPCMetrics(t.registry, "client"); err != nil {
		return nil, err
	}

	exp := o.exporter
	if exp == nil && cfg.OTLPEndpoint != "" {
		exp, err = newOTLPExporter(ctx, cfg)
		if err != nil {
			return nil, err
		}
	}
	if exp == nil {
		log.Info("tracing off: no OTLP endpoint")
		return t, nil
	}

	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			semconv.ServiceName(cfg.ServiceName),
			semconv.ServiceVersion(cfg.Version),
			semconv.ServiceInstanceID(cfg.InstanceID),
			semconv.DeploymentEnvironmentNameKey.String(cfg.Environment),
			// The pre-1.27 key, still what many dashboards and Jaeger UIs filter on.
			attribute.String("deployment.environment", cfg.Environment),
		),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	timeout := cfg.ExportTimeout
	if timeout == 0 {
		timeout = DefaultExportTimeout
	}
	t.sdk = sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
		sdktrace.WithBatcher(exp, sdktrace.WithExportTimeout(timeout)),
	)
	t.tp = t.sdk
	log.Info("tracing on",
		slog.String("endpoint", cfg.OTLPEndpoint),
		slog.Float64("sample_ratio", cfg.SampleRatio))
	return t, nil
}

func newOTLPExporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	opts := []otlptracegrpc.Option{}
	if strings.Contains(cfg.OTLPEndpoint, "://") {
		opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.OTLPEndpoint))
	} else {
		opts = append(opts, otlptracegrpc.WithEndpoint(cfg.OTLPEndpoint))
	}
	if cfg.Insecure {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	if cfg.ExportTimeout > 0 {
		opts = append(opts, otlptracegrpc.WithTimeout(cfg.ExportTimeout))
	}
	opts = append(opts, otlptracegrpc.WithDialOption(collectorDialOptions()...))
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: otlp exporter: %w", err)
	}
	return exp, nil
}

// collectorReconnectMaxDelay caps the wait between two connection attempts to the collector, so a
// collector that comes up after the service (compose starts everything at once) is reached within
// about this long, well inside one export's timeout.
const collectorReconnectMaxDelay = time.Second

// collectorDialOptions keep the first export after start from being dropped (make compose-test runs:
// "processor export timeout", the gateway's first order missing from Jaeger, later batches fine).
// Two things held it up. The channel's first name resolution also asks DNS for the TXT record
// "_grpc_config.<host>"; Docker's embedded DNS forwards that name to the host's resolvers, and until
// it is answered or times out every call waits, so the first export runs out its deadline
// (DeadlineExceeded); we never publish a service config that way, so the lookup is off. And with
// the collector not listening yet, a call fails at once, the exporter's first retry comes 2.5-7.5 s
// later and the channel's reconnect backoff grows towards 2 min; so calls wait for the channel
// instead (bounded by the export timeout) and the channel retries at least every
// collectorReconnectMaxDelay.
func collectorDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.WaitForReady(true)),
		grpc.WithDisableServiceConfig(),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: backoff.DefaultConfig.Multiplier,
				Jitter:     backoff.DefaultConfig.Jitter,
				MaxDelay:   collectorReconnectMaxDelay,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
}

// TracerProvider is the provider to hand to instrumentation. It is a no-op
// provider when tracing is off.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// Tracer is a shorthand for TracerProvider().Tracer(name).
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.tp.Tracer(name) }

// Propagator carries W3C trace context and baggage across process boundaries.
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return t.propagator }

// Registry is the service's own Prometheus registry; register service metrics here.
func (t *Telemetry) Registry() *prometheus.Registry { return t.registry }

// ForceFlush exports the spans buffered so far.
func (t *Telemetry) ForceFlush(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.ForceFlush(ctx); err != nil {
		return fmt.Errorf("telemetry: flush: %w", err)
	}
	return nil
}

// Shutdown flushes buffered spans and stops the exporter. Give it a bounded ctx.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("telemetry: shutdown: %w", err)
	}
	return nil
}
