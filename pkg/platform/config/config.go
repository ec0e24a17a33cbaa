// Package config is the typed configuration of the platform: one struct with per-profile defaults,
// Validate with messages that name the field, and environment overrides through an injected lookup so
// that only main ever touches the process environment. Each service embeds Config (and Database, Brokers
// or Kafka, Outbox, Consumer when it uses them, each with its own Validate) in its own config and loads
// it with Load, which applies <P>_* variables (and the shared unprefixed ones a field's `alias` tag
// names, such as KAFKA_BROKERS) over the profile's defaults and validates. Every field that can be set
// carries a `help` tag, so Vars and WriteVars list each variable with its default and meaning.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/dialer"
	"github.com/shopmesh/shopmesh/pkg/platform/dialer/outlier"
	"github.com/shopmesh/shopmesh/pkg/platform/fault"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
	"github.com/shopmesh/shopmesh/pkg/platform/ratelimit"
	"github.com/shopmesh/shopmesh/pkg/platform/registry"
)

// Profile says where the service runs; it selects defaults and what is allowed.
type Profile string

// The profiles.
const (
	Dev     Profile = "dev"
	Test    Profile = "test"
	Compose Profile = "compose"
	K8s     Profile = "k8s"
	Prod    Profile = "prod"
)

// Valid reports whether p is a known profile.
func (p Profile) Valid() bool {
	switch p {
	case Dev, Test, Compose, K8s, Prod:
		return true
	}
	return false
}

// AllowsFaults reports whether fault injection may be turned on in p: dev and test only. Elsewhere a
// fault section in the configuration is refused at start-up and a fault document from the config center
// is refused while running (a fault rule is a denial of service whoever sets it).
func (p Profile) AllowsFaults() bool { return p == Dev || p == Test }

// Config is the platform part of a service's configuration.
type Config struct {
	Service    string  `help:"service name, used in logs, traces, metrics and discovery"`
	Profile    Profile `help:"where the service runs, required (no default): dev (what make run sets), test, compose, k8s or prod; selects the defaults and what is allowed"`
	ListenAddr string  `help:"gRPC listen address, host:port"`
	// AdminAddr serves HTTP /metrics, /healthz and /readyz; "" disables it.
	AdminAddr string `help:"admin HTTP address (/metrics, /healthz, /readyz), host:port; empty disables it"`
	// AdminPprof also serves /debug/pprof/ on AdminAddr (<P>_ADMIN_PPROF). The local stack turns it on
	// (admin ports on loopback) so benchmarks can profile every process; keep it off where the admin
	// port is reachable from outside.
	AdminPprof bool `help:"also serve /debug/pprof/ on the admin address; keep off where that port is reachable from outside"`
	// LogLevel is the level logging starts at (debug, info, warn or error); the config center may change
	// it while the process runs (log_level in its documents).
	LogLevel string `help:"level logging starts at: debug, info, warn or error (the config center may change it at run time)"`
	// GCPercent is the process's garbage collection target (<P>_GC_PERCENT), what GOGC sets — it
	// replaces GOGC: percent of the live heap allocated before the next collection. Go's default is
	// 100; shopmesh's services keep little live memory and allocate per request, so at 100 they spent
	// 10–14% of their CPU collecting. The default 400 trades ~20 MB more memory under load for fewer
	// collections (docs/BENCHMARKS.md (e)). GOMEMLIMIT still caps the heap when set. Set when the
	// service starts serving.
	GCPercent int `help:"garbage collection target of the process, percent of the live heap allocated before the next collection (replaces GOGC; Go's default 100; higher spends less CPU on collections and more memory; GOMEMLIMIT still caps the heap)"`
	// HealthAddr serves a plaintext gRPC server with only grpc.health.v1 (Kubernetes gRPC probes cannot
	// do TLS), sharing the main server's health state; "" disables it.
	HealthAddr string `help:"plaintext gRPC address serving only grpc.health.v1 (Kubernetes probes); empty disables it"`
	// Telemetry configures tracing (<P>_TELEMETRY_OTLP_ENDPOINT, <P>_TELEMETRY_SAMPLE_RATIO).
	Telemetry Telemetry
	Server    Server
	Client    Client
	RateLimit ratelimit.Limits
	Fault     fault.Config
	// Targets are the dependencies this service dials, by logical name ("inventory").
	Targets map[string]Target
	// Registry selects service discovery: static (Targets' addresses, nothing registered; the default),
	// nacos (register on Serve, resolve "nacos:///<target>") or dns (Kubernetes headless services).
	Registry registry.Config
	// TLS turns on mutual TLS for every server and client of the process (<P>_TLS_CA_FILE,
	// <P>_TLS_CERT_FILE, <P>_TLS_KEY_FILE). Required in the compose, k8s and prod profiles.
	TLS TLS
	// ConfigCenter selects where run-time settings (rate limits, breaker thresholds, fault rules) come
	// from while the process runs (<P>_CONFIG_CENTER_BACKEND).
	ConfigCenter ConfigCenter
	// AuthzPolicyFile is a YAML per-method authorization policy (see package authz) that replaces the
	// rules the service declares (platform.WithPolicy); "" keeps them. Enforced only with TLS on, since
	// identities come from certificates.
	AuthzPolicyFile string `help:"YAML per-method authorization policy file replacing the service's own rules; empty keeps them (enforced with TLS on)"`
	// AuthzEdge names the customer-facing entry point (<P>_AUTHZ_EDGE): the service authz.Edge stands for
	// in policies, and the only one whose customer metadata (x-customer-id) is believed over TLS.
	AuthzEdge string `help:"service name of the customer-facing edge: the callers authz.Edge allows, the only one believed about the customer"`
}

// ConfigCenter configures the config center. Backend "" (or "none") reads nothing; "nacos" reads the
// data ids shopmesh.yaml (shared) and <service>.yaml from the Nacos servers, namespace and group of
// Registry.Nacos (whatever Registry.Backend is) and applies every valid change while the process runs;
// an invalid document is refused and the previous settings stay (see package configcenter).
type ConfigCenter struct {
	Backend string `help:"where run-time settings (rate limits, breaker, faults) come from while running: none or nacos"`
}

// ConfigCenterNacos is the Nacos config center backend.
const ConfigCenterNacos = "nacos"

// Enabled reports whether a config center is configured.
func (c ConfigCenter) Enabled() bool { return c.Backend != "" && c.Backend != "none" }

// TLS names the PEM files of the service's mTLS identity; all three are set or none.
type TLS struct {
	// CAFile is the trust bundle: one or more CA certificates (old and new during a CA rotation).
	CAFile   string `help:"mTLS trust bundle, PEM: one or more CA certificates (old and new during a rotation)"`
	CertFile string `help:"mTLS certificate of this service, PEM"`
	KeyFile  string `help:"private key of the mTLS certificate, PEM"`
	// ReloadInterval is how often the files are checked for changes (rotation without a restart).
	ReloadInterval time.Duration `help:"how often the TLS files are checked for changes (rotation without a restart)"`
}

// Enabled reports whether mTLS is configured.
func (t TLS) Enabled() bool { return t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" }

// Telemetry configures tracing; metrics and trace-aware logs are always on.
type Telemetry struct {
	// OTLPEndpoint is the OTLP/gRPC collector (host:port, e.g. Jaeger's 4317); "" turns tracing off.
	OTLPEndpoint string `help:"OTLP/gRPC trace collector, host:port (Jaeger's 4317); empty turns tracing off"`
	// OTLPInsecure sends spans without TLS (a collector on the node or loopback).
	OTLPInsecure bool `help:"send spans without TLS (a collector on the node or loopback)"`
	// SampleRatio is the share of root traces kept, in [0, 1]; a sampled parent is always honoured.
	SampleRatio float64 `help:"share of root traces kept, 0-1; a sampled parent is always honoured"`
}

// Server configures the gRPC server.
type Server struct {
	MaxRecvMsgSize       int    `help:"largest message the server accepts, bytes"`
	MaxSendMsgSize       int    `help:"largest message the server sends, bytes"`
	MaxConcurrentStreams uint32 `help:"concurrent calls per client connection"`
	// DefaultDeadline is given to unary calls that arrive without one; MaxDeadline clamps longer ones.
	DefaultDeadline time.Duration `help:"deadline given to incoming unary calls that have none"`
	MaxDeadline     time.Duration `help:"longest deadline of an incoming unary call; longer ones are clamped"`
	// StreamDefaultDeadline and StreamMaxDeadline do the same for streams, which legitimately live longer
	// (a checkout session, an order watch) but must still end.
	StreamDefaultDeadline time.Duration `help:"deadline given to incoming streams that have none"`
	StreamMaxDeadline     time.Duration `help:"longest deadline of an incoming stream; longer ones are clamped"`
	Keepalive             ServerKeepalive
	// DrainDelay is waited after reporting NOT_SERVING (and deregistering) before refusing new calls,
	// so clients and load balancers stop sending first.
	DrainDelay time.Duration `help:"wait after reporting NOT_SERVING (and deregistering) before refusing new calls"`
	// ShutdownTimeout bounds GracefulStop; calls still running after it are cut by Stop.
	ShutdownTimeout time.Duration `help:"bound on the graceful stop; calls still running after it are cut"`
}

// ServerKeepalive is the server's keepalive and its enforcement policy.
type ServerKeepalive struct {
	Time                  time.Duration `help:"ping a client connection idle this long"`
	Timeout               time.Duration `help:"close the connection when a ping is unanswered this long"`
	MaxConnectionIdle     time.Duration `help:"close a connection without calls for this long"`
	MaxConnectionAge      time.Duration `help:"close a connection this old, so clients rebalance onto new replicas"`
	MaxConnectionAgeGrace time.Duration `help:"time calls get to finish on a connection closed for its age"`
	// MinTime is the shortest client ping interval tolerated; clients pinging more often get GOAWAY.
	MinTime             time.Duration `help:"shortest client ping interval tolerated; clients pinging more often get GOAWAY"`
	PermitWithoutStream bool          `help:"tolerate client pings while no call is open"`
}

// Client configures every outgoing connection; targets refine it.
type Client struct {
	// DefaultDeadline is given to outgoing unary calls whose context has none; StreamDefaultDeadline to
	// streams.
	DefaultDeadline       time.Duration `help:"deadline given to outgoing unary calls that have none"`
	StreamDefaultDeadline time.Duration `help:"deadline given to outgoing streams that have none"`
	Keepalive             dialer.Keepalive
	LB                    string `help:"load balancing of every target: round_robin, pick_first or least_request"`
	HealthCheck           bool   `help:"check grpc.health.v1 on each instance and send calls only to serving ones"`
	MaxRecvMsgSize        int    `help:"largest response accepted, bytes (0: the gRPC default)"`
	Retry                 dialer.RetryPolicy
	Breaker               breaker.Config
	// Outlier ejects a slow or failing address from round_robin/least_request (see package outlier).
	Outlier outlier.Config
}

// Target is one dependency.
type Target struct {
	// Addresses are static "host:port" instances, required and used with the static registry backend
	// only.
	Addresses []string `help:"static instances, host:port comma-separated (static registry backend only)"`
	// LB overrides Client.LB.
	LB string `help:"load balancing of this target, overriding CLIENT_LB: round_robin, pick_first or least_request"`
	// HealthService is the grpc.health.v1 service name checked on each instance ("" = whole server).
	HealthService string `help:"grpc.health.v1 service name checked on each instance; empty checks the whole server"`
	// DefaultDeadline overrides Client.DefaultDeadline when > 0.
	DefaultDeadline time.Duration `help:"deadline of unary calls to this target, overriding CLIENT_DEFAULT_DEADLINE when > 0"`
	// Idempotent methods may also retry IdempotentCodes (see dialer.Target).
	Idempotent      []string `help:"methods of this target that may also retry IDEMPOTENT_CODES, comma-separated"`
	IdempotentCodes []string `help:"gRPC codes also retried for the idempotent methods, comma-separated"`
}

// Default returns the defaults for profile. Fault injection is always off.
func Default(profile Profile) Config {
	c := Config{
		Profile:    profile,
		ListenAddr: ":50051",
		LogLevel:   "info",
		GCPercent:  400,
		Server: Server{
			MaxRecvMsgSize:        4 << 20,
			MaxSendMsgSize:        4 << 20,
			MaxConcurrentStreams:  256,
			DefaultDeadline:       10 * time.Second,
			MaxDeadline:           30 * time.Second,
			StreamDefaultDeadline: 5 * time.Minute,
			StreamMaxDeadline:     30 * time.Minute,
			Keepalive: ServerKeepalive{
				Time:                  time.Minute,
				Timeout:               20 * time.Second,
				MaxConnectionIdle:     15 * time.Minute,
				MaxConnectionAge:      30 * time.Minute, // lets clients rebalance onto new replicas
				MaxConnectionAgeGrace: 30 * time.Second,
				MinTime:               10 * time.Second,
				PermitWithoutStream:   true,
			},
			DrainDelay:      0,
			ShutdownTimeout: 10 * time.Second,
		},
		Client: Client{
			DefaultDeadline:       5 * time.Second,
			StreamDefaultDeadline: 5 * time.Minute,
			Keepalive:             dialer.Keepalive{Time: 30 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true},
			LB:                    dialer.RoundRobin,
			HealthCheck:           true,
			MaxRecvMsgSize:        4 << 20,
			Retry: dialer.RetryPolicy{
				MaxAttempts:        3,
				InitialBackoff:     50 * time.Millisecond,
				MaxBackoff:         time.Second,
				BackoffMultiplier:  2,
				Codes:              []string{"UNAVAILABLE"},
				ThrottleMaxTokens:  10,
				ThrottleTokenRatio: 0.1,
			},
			Breaker: breaker.Config{
				Enabled:             true,
				ConsecutiveFailures: 5,
				FailureRatio:        0.5,
				MinRequests:         20,
				Interval:            10 * time.Second,
				OpenTimeout:         5 * time.Second,
				HalfOpenProbes:      3,
			},
			Outlier: outlier.Default(),
		},
		RateLimit: ratelimit.Limits{MaxInFlight: 1000, RetryAfter: 100 * time.Millisecond},
		Targets:   map[string]Target{},
		Registry:  registry.Default(),
		Telemetry: Telemetry{OTLPInsecure: true, SampleRatio: 1},
		TLS:       TLS{ReloadInterval: 5 * time.Second},
		AuthzEdge: "gateway",
	}
	switch profile {
	case Compose:
		c.Server.DrainDelay = time.Second
	case K8s, Prod:
		// Endpoints take a few seconds to drop a terminating pod; stay up for them, and stay within the
		// default 30 s terminationGracePeriodSeconds overall.
		c.Server.DrainDelay = 5 * time.Second
		c.Server.ShutdownTimeout = 20 * time.Second
	}
	if profile == Prod {
		c.Telemetry.SampleRatio = 0.1
	}
	return c
}

// Validate reports every problem, each naming its field.
func (c Config) Validate() error {
	var errs []error
	add := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
	}
	addf := func(field, format string, args ...any) { add(field, fmt.Errorf(format, args...)) }

	if c.Service == "" {
		addf("service", "must be set")
	}
	if _, err := c.Level(); err != nil {
		add("log_level", err)
	}
	if c.GCPercent < 1 {
		addf("gc_percent", "must be at least 1, got %d", c.GCPercent)
	}
	if !c.Profile.Valid() {
		addf("profile", "must be dev, test, compose, k8s or prod, got %q", c.Profile)
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		addf("listen_addr", "%q is not host:port", c.ListenAddr)
	}
	if c.AdminAddr != "" {
		if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
			addf("admin_addr", "%q is not host:port", c.AdminAddr)
		}
	}

	if c.HealthAddr != "" {
		if _, _, err := net.SplitHostPort(c.HealthAddr); err != nil {
			addf("health_addr", "%q is not host:port", c.HealthAddr)
		}
	}
	if r := c.Telemetry.SampleRatio; r < 0 || r > 1 || r != r {
		addf("telemetry.sample_ratio", "must be in [0, 1], got %v", r)
	}

	s := c.Server
	if s.MaxRecvMsgSize <= 0 {
		addf("server.max_recv_msg_size", "must be > 0, got %d", s.MaxRecvMsgSize)
	}
	if s.MaxSendMsgSize <= 0 {
		addf("server.max_send_msg_size", "must be > 0, got %d", s.MaxSendMsgSize)
	}
	if s.MaxConcurrentStreams == 0 {
		addf("server.max_concurrent_streams", "must be > 0 (0 would mean unlimited)")
	}
	if s.DefaultDeadline <= 0 {
		addf("server.default_deadline", "must be > 0, got %v", s.DefaultDeadline)
	}
	if s.MaxDeadline < s.DefaultDeadline {
		addf("server.max_deadline", "must be >= server.default_deadline (%v), got %v", s.DefaultDeadline, s.MaxDeadline)
	}
	if s.StreamDefaultDeadline <= 0 {
		addf("server.stream_default_deadline", "must be > 0, got %v", s.StreamDefaultDeadline)
	}
	if s.StreamMaxDeadline < s.StreamDefaultDeadline {
		addf("server.stream_max_deadline", "must be >= server.stream_default_deadline (%v), got %v", s.StreamDefaultDeadline, s.StreamMaxDeadline)
	}
	if s.Keepalive.MinTime <= 0 {
		addf("server.keepalive.min_time", "must be > 0, got %v", s.Keepalive.MinTime)
	}
	if s.Keepalive.Time < 0 || s.Keepalive.Timeout < 0 || s.Keepalive.MaxConnectionIdle < 0 ||
		s.Keepalive.MaxConnectionAge < 0 || s.Keepalive.MaxConnectionAgeGrace < 0 {
		addf("server.keepalive", "durations must be >= 0")
	}
	if s.DrainDelay < 0 {
		addf("server.drain_delay", "must be >= 0, got %v", s.DrainDelay)
	}
	if s.ShutdownTimeout <= 0 {
		addf("server.shutdown_timeout", "must be > 0, got %v", s.ShutdownTimeout)
	}

	cl := c.Client
	if cl.DefaultDeadline <= 0 {
		addf("client.default_deadline", "must be > 0, got %v", cl.DefaultDeadline)
	}
	if cl.StreamDefaultDeadline <= 0 {
		addf("client.stream_default_deadline", "must be > 0, got %v", cl.StreamDefaultDeadline)
	}
	if cl.Keepalive.Time > 0 && cl.Keepalive.Time < s.Keepalive.MinTime {
		// All shopmesh servers share these defaults, so our own MinTime stands for theirs.
		addf("client.keepalive.time", "must be >= server.keepalive.min_time (%v) or servers answer GOAWAY ENHANCE_YOUR_CALM, got %v",
			s.Keepalive.MinTime, cl.Keepalive.Time)
	}
	if cl.MaxRecvMsgSize < 0 {
		addf("client.max_recv_msg_size", "must be >= 0, got %d", cl.MaxRecvMsgSize)
	}
	add("client.retry", cl.Retry.Validate())
	add("client.breaker", cl.Breaker.Validate())
	add("client.outlier", cl.Outlier.Validate())
	add("client.lb", dialer.Target{LB: cl.LB, Retry: dialer.RetryPolicy{MaxAttempts: 1}}.Validate())

	add("rate_limit", c.RateLimit.Validate())
	add("fault", c.Fault.Validate())
	if c.Profile.Valid() && !c.Profile.AllowsFaults() && (c.Fault.Enabled || len(c.Fault.Rules) > 0) {
		addf("fault", "fault injection is refused in the %s profile (dev and test only)", c.Profile)
	}

	add("registry", c.Registry.Validate())
	switch c.ConfigCenter.Backend {
	case "", "none":
	case ConfigCenterNacos:
		if err := c.Registry.Nacos.Validate(); err != nil {
			addf("config_center.backend", "nacos reads the registry.nacos section: %v", err)
		}
	default:
		addf("config_center.backend", "must be none or nacos, got %q", c.ConfigCenter.Backend)
	}
	add("tls", c.TLS.validate(c.Profile))
	if !mtls.ValidService(c.AuthzEdge) {
		addf("authz_edge", "must be a service name (lowercase letters, digits, inner dashes), got %q", c.AuthzEdge)
	}
	static := c.Registry.Backend == registry.Static || c.Registry.Backend == ""
	for name, t := range c.Targets {
		field := fmt.Sprintf("targets[%q]", name)
		if static && len(t.Addresses) == 0 {
			addf(field+".addresses", "at least one host:port is needed")
		}
		for _, a := range t.Addresses {
			if _, _, err := net.SplitHostPort(a); err != nil {
				addf(field+".addresses", "%q is not host:port", a)
			}
		}
		if t.DefaultDeadline < 0 {
			addf(field+".default_deadline", "must be >= 0, got %v", t.DefaultDeadline)
		}
		dt := c.DialTarget(name)
		dt.Retry = dialer.RetryPolicy{MaxAttempts: 1} // validated once above
		dt.Outlier = outlier.Config{}
		add(field, dt.Validate())
	}
	return errors.Join(errs...)
}

// DialTarget returns the dialer description of target name, with client defaults filled in.
func (c Config) DialTarget(name string) dialer.Target {
	t := c.Targets[name]
	lb := t.LB
	if lb == "" {
		lb = c.Client.LB
	}
	return dialer.Target{
		LB:              lb,
		HealthCheck:     c.Client.HealthCheck,
		HealthService:   t.HealthService,
		Retry:           c.Client.Retry,
		Idempotent:      t.Idempotent,
		IdempotentCodes: t.IdempotentCodes,
		Outlier:         c.Client.Outlier,
	}
}

func (t TLS) validate(p Profile) error {
	var errs []error
	switch {
	case !t.Enabled():
		if p == Compose || p == K8s || p == Prod {
			errs = append(errs, fmt.Errorf("ca_file, cert_file and key_file are required in the %s profile", p))
		}
	case t.CAFile == "" || t.CertFile == "" || t.KeyFile == "":
		errs = append(errs, errors.New("ca_file, cert_file and key_file must be set together"))
	}
	if t.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("reload_interval: must be >= 0, got %v", t.ReloadInterval))
	}
	return errors.Join(errs...)
}

// Level parses LogLevel ("" is info).
func (c Config) Level() (slog.Level, error) {
	var l slog.Level
	if c.LogLevel == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return l, nil
}
