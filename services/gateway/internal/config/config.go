// Package config is the gateway's configuration: the platform's Config (used for the gRPC clients to
// order, inventory and payment) plus the HTTP edge settings, with per-profile defaults, environment
// overrides read only through the lookup main passes in, and Validate.
package config

import (
	"errors"
	"fmt"
	"net"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
)

// Prefix starts every variable of this service: GATEWAY_HTTP_ADDR, GATEWAY_JWT_SECRET, ...
const Prefix = "GATEWAY"

// DevJWTSecret is the fixed signing secret of the dev profile, so `make run` works without setup. Every
// other profile must set GATEWAY_JWT_SECRET, and prod refuses this value.
const DevJWTSecret = "shopmesh-dev-secret-do-not-use-in-prod"

// minSecretLen is the shortest HS256 secret accepted outside dev (RFC 7518 §3.2: at least the hash size).
const minSecretLen = 32

// Config is the whole configuration of the gateway.
type Config struct {
	platformcfg.Config `env:"-"` // read with the same prefix by Load

	// HTTPAddr is where the HTTP/JSON API listens.
	HTTPAddr string
	// JWTSecret signs and verifies the HS256 bearer tokens.
	JWTSecret platformcfg.Secret
	// JWTIssuer is the iss of issued tokens and the only one accepted; the audience is always "shopmesh".
	JWTIssuer string
	// TokenTTL is the lifetime of tokens minted by POST /v1/dev/token.
	TokenTTL time.Duration

	// CallTimeout bounds every unary call to a backend; CreateTimeout bounds CreateOrder, which runs the
	// whole checkout saga and so must outlast the order service's saga timeout.
	CallTimeout   time.Duration
	CreateTimeout time.Duration
	// StreamMaxDuration bounds an order event stream; ImportTimeout bounds a stock import.
	StreamMaxDuration time.Duration
	ImportTimeout     time.Duration

	// MaxBodyBytes limits JSON request bodies; MaxImportBytes the NDJSON import body; MaxImportLineBytes
	// one import line.
	MaxBodyBytes       int64
	MaxImportBytes     int64
	MaxImportLineBytes int

	// RateLimitRPS and RateLimitBurst are the token bucket of each client (customer id, or remote IP for
	// anonymous calls).
	RateLimitRPS   float64
	RateLimitBurst int

	// HTTP server timeouts (slowloris protection) and limits.
	ReadHeaderTimeout   time.Duration
	ReadTimeout         time.Duration
	WriteTimeout        time.Duration
	IdleTimeout         time.Duration
	MaxHeaderBytes      int
	HTTPShutdownTimeout time.Duration
}

// Default returns the defaults of a profile.
func Default(profile platformcfg.Profile) Config {
	p := platformcfg.Default(profile)
	p.Service = "gateway"
	p.Targets["order"] = platformcfg.Target{Addresses: []string{"127.0.0.1:50051"}}
	p.Targets["inventory"] = platformcfg.Target{Addresses: []string{"127.0.0.1:50052"}}
	p.Targets["payment"] = platformcfg.Target{Addresses: []string{"127.0.0.1:50053"}}
	c := Config{
		Config:              p,
		HTTPAddr:            "127.0.0.1:8080",
		JWTIssuer:           "shopmesh-gateway",
		TokenTTL:            time.Hour,
		CallTimeout:         3 * time.Second,
		CreateTimeout:       12 * time.Second,
		StreamMaxDuration:   5 * time.Minute,
		ImportTimeout:       5 * time.Minute,
		MaxBodyBytes:        64 << 10,
		MaxImportBytes:      64 << 20,
		MaxImportLineBytes:  16 << 10,
		RateLimitRPS:        50,
		RateLimitBurst:      100,
		ReadHeaderTimeout:   5 * time.Second,
		ReadTimeout:         30 * time.Second,
		WriteTimeout:        30 * time.Second,
		IdleTimeout:         2 * time.Minute,
		MaxHeaderBytes:      32 << 10,
		HTTPShutdownTimeout: 10 * time.Second,
	}
	if profile == platformcfg.Dev {
		c.JWTSecret = DevJWTSecret
	}
	return c
}

// Load returns the configuration selected by GATEWAY_PROFILE (default dev) with environment overrides.
func Load(lookup platformcfg.Lookup) (Config, error) {
	profile := platformcfg.Dev
	if v, ok := lookup(Prefix + "_PROFILE"); ok && v != "" {
		profile = platformcfg.Profile(v)
	}
	c := Default(profile)
	if err := errors.Join(platformcfg.FromEnv(&c.Config, Prefix, lookup), platformcfg.FromEnv(&c, Prefix, lookup)); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c.Profile = profile
	return c, c.Validate()
}

// DevTokens reports whether POST /v1/dev/token is served (dev profile only).
func (c Config) DevTokens() bool { return c.Profile == platformcfg.Dev }

// Validate reports every problem, each naming its field.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate()}
	addf := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		addf("http_addr: %q is not host:port", c.HTTPAddr)
	}
	secret := c.JWTSecret.Reveal()
	switch {
	case secret == "":
		addf("jwt_secret: must be set (GATEWAY_JWT_SECRET)")
	case c.Profile == platformcfg.Prod && secret == DevJWTSecret:
		addf("jwt_secret: the dev secret is refused in the prod profile")
	case c.Profile != platformcfg.Dev && len(secret) < minSecretLen:
		addf("jwt_secret: must be at least %d bytes outside dev, got %d", minSecretLen, len(secret))
	}
	if c.JWTIssuer == "" {
		addf("jwt_issuer: must be set")
	}
	positive := map[string]time.Duration{
		"token_ttl": c.TokenTTL, "call_timeout": c.CallTimeout, "create_timeout": c.CreateTimeout,
		"stream_max_duration": c.StreamMaxDuration, "import_timeout": c.ImportTimeout,
		"read_header_timeout": c.ReadHeaderTimeout, "read_timeout": c.ReadTimeout, "write_timeout": c.WriteTimeout,
		"idle_timeout": c.IdleTimeout, "http_shutdown_timeout": c.HTTPShutdownTimeout,
	}
	for name, d := range positive {
		if d <= 0 {
			addf("%s: must be > 0, got %v", name, d)
		}
	}
	if c.MaxBodyBytes <= 0 || c.MaxImportBytes <= 0 || c.MaxImportLineBytes <= 0 {
		addf("max_body_bytes, max_import_bytes, max_import_line_bytes: must be > 0")
	}
	if c.RateLimitRPS <= 0 || c.RateLimitBurst <= 0 {
		addf("rate_limit_rps, rate_limit_burst: must be > 0, got %v and %d", c.RateLimitRPS, c.RateLimitBurst)
	}
	if c.MaxHeaderBytes <= 0 {
		addf("max_header_bytes: must be > 0, got %d", c.MaxHeaderBytes)
	}
	for _, t := range []string{"order", "inventory", "payment"} {
		if _, ok := c.Targets[t]; !ok {
			addf("targets[%q]: must be set", t)
		}
	}
	return errors.Join(errs...)
}
