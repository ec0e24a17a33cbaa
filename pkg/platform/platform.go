// Package platform is the gRPC runtime every shopmesh service is built on: one facade that turns a
// Config into servers with the standard interceptor chain, health and graceful shutdown, and into client
// connections with load balancing, health checking, retries, circuit breaking and deadlines. A service's
// main creates one Platform, registers its handlers on NewServer, dials its dependencies with Dial and
// blocks in Serve.
//
// Retries: a client retries a method only if repeating it is safe, as its proto declares with
// `option idempotency_level = NO_SIDE_EFFECTS` (reads, watch streams) or `IDEMPOTENT` (repeats are
// recognised by an order id or idempotency key); a method without the option is attempted once. Give
// every new RPC a level, or leave it out on purpose (see the retry decision table in dialer's tests).
package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/configcenter"
	"github.com/shopmesh/shopmesh/pkg/platform/dialer/outlier"
	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/fault"
	"github.com/shopmesh/shopmesh/pkg/platform/ratelimit"
	"github.com/shopmesh/shopmesh/pkg/platform/registry"
	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
)

// Config is the platform configuration; see package config.
type Config = config.Config

// Platform holds what the servers and clients of one service process share.
type Platform struct {
	cfg      Config
	logger   *slog.Logger
	health   *Health
	limiter  *ratelimit.Limiter
	faults   *fault.Injector
	resolver discovery.Resolver
	registry discovery.Registry
	backend  io.Closer      // the registry backend built from cfg.Registry, closed by Close
	sec      *security      // mTLS source and default authorizer (security.go)
	obs      *observability // tracer provider, registry, platform metrics (observe.go)
	opts     options

	// stopping is cancelled by Serve or ServeHTTP when the drain ends, right before the server stops
	// taking calls (Stopping); a context so that every stream can hang its own cancellation on it
	// without a goroutine.
	stopping    context.Context
	stopServing context.CancelFunc

	mu         sync.Mutex
	breakerCfg breaker.Config // starts as cfg.Client.Breaker; replaced by UpdateBreakers
	center     *liveConfig    // nil without a config center
	breakers   map[string]*breaker.Breaker
	conns      []*grpc.ClientConn
	closed     bool
}

type options struct {
	resolver     discovery.Resolver
	registry     discovery.Registry
	metrics      prometheus.Registerer
	onBreaker    func(name string, from, to breaker.State)
	now          func() time.Time
	faultRand    func() float64
	dialOptions  []grpc.DialOption
	unaryClient  []grpc.UnaryClientInterceptor
	streamClient []grpc.StreamClientInterceptor
	telemetry    []telemetry.Option
	logLevel     *slog.LevelVar
	security     securityOptions // WithPolicy (security.go)
	backends     []Backend       // WithBackends
}

// Option customizes New.
type Option func(*options)

// Backend is a discovery and/or config-center backend that lives in a module of its own, so that its
// client library is linked only into the binaries that opt in: the Nacos one is
// github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos (nacos.Backend()). The static and dns
// registries are built in. A service links one with service.Spec.Backends (or WithBackends).
type Backend struct {
	// Name is the value of Config.Registry.Backend / Config.ConfigCenter.Backend that selects it.
	Name string
	// Registry builds the discovery backend from Config.Registry; nil when it is none.
	Registry registry.Factory
	// ConfigSource builds the config-center source; nil when it is none.
	ConfigSource func(cfg Config) (ConfigSource, error)
}

// ConfigSource is a config-center backend's source of documents, closed by Close.
type ConfigSource interface {
	configcenter.Source
	io.Closer
}

// WithBackends links backends from contrib modules (see Backend).
func WithBackends(b ...Backend) Option {
	return func(o *options) { o.backends = append(o.backends, b...) }
}

// CheckBackends fails when cfg selects a registry or config-center backend that is neither built in
// nor among backends: New would fail the same way (check-config runs it).
func CheckBackends(cfg Config, backends ...Backend) error {
	if err := registry.Linked(cfg.Registry, registryFactories(backends)); err != nil {
		return err
	}
	if cfg.ConfigCenter.Enabled() && configSource(backends, cfg.ConfigCenter.Backend) == nil {
		return fmt.Errorf("config center backend %q: %w (add github.com/shopmesh/shopmesh/pkg/platform/contrib/%s's Backend to service.Spec.Backends, or platform.WithBackends)",
			cfg.ConfigCenter.Backend, registry.ErrNotLinked, cfg.ConfigCenter.Backend)
	}
	return nil
}

func registryFactories(backends []Backend) map[string]registry.Factory {
	m := map[string]registry.Factory{}
	for _, b := range backends {
		if b.Registry != nil {
			m[b.Name] = b.Registry
		}
	}
	return m
}

func configSource(backends []Backend, name string) func(Config) (ConfigSource, error) {
	for _, b := range backends {
		if b.Name == name && b.ConfigSource != nil {
			return b.ConfigSource
		}
	}
	return nil
}

// WithLogLevel lets the config center change the level of the logger main built on lv
// (log_level in its documents).
func WithLogLevel(lv *slog.LevelVar) Option { return func(o *options) { o.logLevel = lv } }

// WithResolver replaces the resolver chosen by Config.Registry (e.g. by a registry-backed one).
func WithResolver(r discovery.Resolver) Option { return func(o *options) { o.resolver = r } }

// WithRegistry makes Serve register the instance once listening and deregister it first on shutdown,
// replacing the registry chosen by Config.Registry.
func WithRegistry(r discovery.Registry) Option { return func(o *options) { o.registry = r } }

// WithMetrics registers the registry backend's metrics (shopmesh_registry_up) with reg instead of the
// platform's own registry (Metrics).
func WithMetrics(reg prometheus.Registerer) Option { return func(o *options) { o.metrics = reg } }

// WithBreakerObserver is called on every circuit breaker transition (for metrics and logs).
func WithBreakerObserver(f func(target string, from, to breaker.State)) Option {
	return func(o *options) { o.onBreaker = f }
}

// WithClock sets the clock of the circuit breakers (for tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithFaultRand sets the [0,1) source deciding which calls fault injection hits (for tests).
func WithFaultRand(f func() float64) Option { return func(o *options) { o.faultRand = f } }

// WithDialOptions appends options to every Dial (e.g. transport credentials, stats handlers).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// WithClientInterceptors adds interceptors to every Dial, inside the deadline and the breaker.
func WithClientInterceptors(unary []grpc.UnaryClientInterceptor, stream []grpc.StreamClientInterceptor) Option {
	return func(o *options) {
		o.unaryClient = append(o.unaryClient, unary...)
		o.streamClient = append(o.streamClient, stream...)
	}
}

// New validates cfg and builds the platform. When Config.Registry selects nacos or dns, it builds that
// backend (nacos only when linked with WithBackends; a Nacos client connects in the background and does
// not fail when Nacos is down): Serve then
// registers through it and Dial resolves through it, unless WithRegistry or WithResolver replace a side.
// No server is started yet; Close releases the backend.
//
// logger is used as given for every platform line: build it with the service's name already on it
// (logger.With("service", cfg.Service)), as the platform does not add it again.
func New(ctx context.Context, cfg Config, logger *slog.Logger, opts ...Option) (*Platform, error) {
	if logger == nil {
		return nil, errors.New("platform: logger is nil")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("platform config: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Before any grpc connection of the process exists (telemetry's exporter, health checks): grpc's
	// balancer registry is written here once and only read afterwards.
	outlier.Register()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if err := CheckBackends(cfg, o.backends...); err != nil {
		return nil, fmt.Errorf("platform: %w", err)
	}
	// Records logged with a span in their context carry trace_id and span_id.
	logger = slog.New(telemetry.LogHandler(logger.Handler()))
	obs, err := newObservability(ctx, cfg, logger, o)
	if err != nil {
		return nil, err
	}
	if o.metrics == nil {
		o.metrics = obs.tel.Registry()
	}
	limiter, err := ratelimit.New(cfg.RateLimit)
	if err != nil {
		_ = obs.shutdown()
		return nil, err
	}
	limiter.OnReject(func(method, reason string) { obs.rejected.WithLabelValues(methodLabel(method), reason).Inc() })
	var fopts []fault.Option
	if o.faultRand != nil {
		fopts = append(fopts, fault.WithRand(o.faultRand))
	}
	faults, err := fault.New(cfg.Fault, fopts...)
	if err != nil {
		_ = obs.shutdown()
		return nil, err
	}
	backend, err := registry.New(cfg.Registry, logger, o.metrics, registryFactories(o.backends))
	if err != nil {
		_ = obs.shutdown()
		return nil, err
	}
	res, reg := o.resolver, o.registry
	if res == nil {
		res = backend.Resolver
	}
	if reg == nil {
		reg = backend.Registry
	}
	if res == nil {
		static := map[string][]string{}
		for name, t := range cfg.Targets {
			static[name] = t.Addresses
		}
		res = discovery.NewStatic(static)
	}
	sec, err := newSecurity(cfg, o.security, logger)
	if err != nil {
		_ = backend.Close()
		_ = obs.shutdown()
		return nil, err
	}
	if cfg.Fault.Enabled {
		logger.Warn("fault injection is enabled", "rules", len(cfg.Fault.Rules))
	}
	p := &Platform{
		cfg:      cfg,
		logger:   logger,
		health:   newHealth(),
		limiter:  limiter,
		faults:   faults,
		resolver: res,
		registry: reg,
		backend:  backend,
		sec:      sec,
		obs:      obs,
		opts:     o,
		breakers: map[string]*breaker.Breaker{},

		breakerCfg: cfg.Client.Breaker,
	}
	p.stopping, p.stopServing = context.WithCancel(context.Background())
	if err := p.newConfigCenter(); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// Config returns the configuration the platform was built with.
func (p *Platform) Config() Config { return p.cfg }

// Health returns the health service shared by the platform's servers.
func (p *Platform) Health() *Health { return p.health }

// RateLimiter returns the server limiter; call its Update to change limits at run time.
func (p *Platform) RateLimiter() *ratelimit.Limiter { return p.limiter }

// Faults returns the fault injector; call its Update to change the rules at run time (the prod profile
// refuses them at start, and Update is only reachable from code the service wires itself).
func (p *Platform) Faults() *fault.Injector { return p.faults }

// Breaker returns the circuit breaker of a dialed target.
func (p *Platform) Breaker(target string) (*breaker.Breaker, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.breakers[target]
	return b, ok
}

// Close closes every connection made by Dial, then the registry backend: a Nacos connection's instances
// vanish with it (Serve deregisters them first on a clean shutdown). Servers are stopped by Serve.
func (p *Platform) Close() error {
	p.mu.Lock()
	conns, backend := p.conns, p.backend
	p.conns, p.backend, p.closed = nil, nil, true
	p.mu.Unlock()
	var errs []error
	for _, c := range conns {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", c.Target(), err))
		}
	}
	if backend != nil {
		if err := backend.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close registry: %w", err))
		}
	}
	p.mu.Lock()
	center := p.center
	p.center = nil
	p.mu.Unlock()
	if center != nil {
		if err := center.src.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close config center: %w", err))
		}
	}
	if err := p.sec.close(); err != nil {
		errs = append(errs, fmt.Errorf("close tls: %w", err))
	}
	// Last, so spans of the shutdown itself are exported too.
	if err := p.obs.shutdown(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
