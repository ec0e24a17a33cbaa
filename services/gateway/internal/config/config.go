// Package config is the gateway's configuration: the platform's Config (its gRPC clients to order,
// inventory and payment, the admin port, the drain) plus the HTTP edge settings, with per-profile
// defaults and Validate. The service command loads it from GATEWAY_* variables.
package config

import (
	"errors"
	"fmt"
	"net"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
)

// DevJWTSecret is the fixed signing secret of the dev profile, so `make run` works without setup. Every
// other profile must set GATEWAY_JWT_SECRET, and prod refuses this value.
const DevJWTSecret = "shopmesh-dev-secret-do-not-use-in-prod" //nolint:gosec // G101: the dev profile's, refused in prod

// minSecretLen is the shortest HS256 secret accepted outside dev (RFC 7518 §3.2: at least the hash size).
const minSecretLen = 32

// Config is the whole configuration of the gateway.
type Config struct {
	platformcfg.Config

	HTTPAddr  string             `help:"HTTP/JSON API listen address, host:port"`
	JWTSecret platformcfg.Secret `help:"HS256 key signing and verifying bearer tokens; required outside dev, at least 32 bytes"`
	// JWTIssuer is the iss of issued tokens and the only one accepted; the audience is always "shopmesh".
	JWTIssuer string        `help:"iss of issued tokens and the only one accepted (the audience is always shopmesh)"`
	TokenTTL  time.Duration `help:"lifetime of the tokens POST /v1/dev/token mints (dev profile only)"`

	// CallTimeout bounds every unary call to a backend; CreateTimeout bounds CreateOrder, which runs the
	// whole checkout saga and so must outlast the order service's saga timeout.
	CallTimeout   time.Duration `help:"deadline of each unary call to a backend"`
	CreateTimeout time.Duration `help:"deadline of CreateOrder (it runs the checkout saga: keep it above the order service's saga timeout)"`
	// StreamMaxDuration bounds an order event stream; ImportTimeout bounds a stock import.
	StreamMaxDuration time.Duration `help:"longest life of an order event stream (SSE)"`
	ImportTimeout     time.Duration `help:"deadline of a stock import (NDJSON upload)"`

	MaxBodyBytes       int64 `help:"largest JSON request body, bytes (413 above)"`
	MaxImportBytes     int64 `help:"largest NDJSON stock import body, bytes"`
	MaxImportLineBytes int   `help:"longest line of a stock import, bytes"`

	// RateLimitRPS and RateLimitBurst are the token bucket of each client (customer id, or remote IP for
	// anonymous calls).
	RateLimitRPS   float64 `help:"requests per second each client (customer id, or remote IP when anonymous) may make"`
	RateLimitBurst int     `help:"burst of each client's token bucket"`

	// HTTP server timeouts (slowloris protection) and limits.
	ReadHeaderTimeout time.Duration `help:"time a client has to send its request headers"`
	ReadTimeout       time.Duration `help:"time a client has to send its whole request"`
	WriteTimeout      time.Duration `help:"time to write a response, and each event of a stream"`
	IdleTimeout       time.Duration `help:"how long an idle keep-alive connection is kept"`
	MaxHeaderBytes    int           `help:"largest request header block, bytes"`
	// HTTPShutdownTimeout is the gateway's older name for Server.ShutdownTimeout: when set (> 0) it
	// replaces it (see Base). 0 leaves GATEWAY_SERVER_SHUTDOWN_TIMEOUT in charge.
	HTTPShutdownTimeout time.Duration `help:"older name of GATEWAY_SERVER_SHUTDOWN_TIMEOUT; when > 0 it replaces it"`
}

// Default returns the defaults of a profile.
func Default(profile platformcfg.Profile) Config {
	p := platformcfg.Default(profile)
	p.Service = "gateway"
	p.Targets["order"] = platformcfg.Target{Addresses: []string{"127.0.0.1:50051"}}
	p.Targets["inventory"] = platformcfg.Target{Addresses: []string{"127.0.0.1:50052"}}
	p.Targets["payment"] = platformcfg.Target{Addresses: []string{"127.0.0.1:50053"}}
	c := Config{
		Config:             p,
		HTTPAddr:           "127.0.0.1:8080",
		JWTIssuer:          "shopmesh-gateway",
		TokenTTL:           time.Hour,
		CallTimeout:        3 * time.Second,
		CreateTimeout:      12 * time.Second,
		StreamMaxDuration:  5 * time.Minute,
		ImportTimeout:      5 * time.Minute,
		MaxBodyBytes:       64 << 10,
		MaxImportBytes:     64 << 20,
		MaxImportLineBytes: 16 << 10,
		RateLimitRPS:       50,
		RateLimitBurst:     100,
		ReadHeaderTimeout:  5 * time.Second,
		ReadTimeout:        30 * time.Second,
		WriteTimeout:       30 * time.Second,
		IdleTimeout:        2 * time.Minute,
		MaxHeaderBytes:     32 << 10,
	}
	if profile == platformcfg.Dev {
		c.JWTSecret = DevJWTSecret
	}
	return c
}

// Base is the platform part of the configuration (what the service command builds the platform
// from). The HTTP server drains like every server: Server.DrainDelay, then a graceful shutdown bounded
// by Server.ShutdownTimeout, which HTTPShutdownTimeout replaces when set.
func (c *Config) Base() *platformcfg.Config {
	if c.HTTPShutdownTimeout > 0 {
		c.Server.ShutdownTimeout = c.HTTPShutdownTimeout
	}
	return &c.Config
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
		addf("jwt_secret: must be set")
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
		"idle_timeout": c.IdleTimeout,
	}
	for name, d := range positive {
		if d <= 0 {
			addf("%s: must be > 0, got %v", name, d)
		}
	}
	if c.HTTPShutdownTimeout < 0 {
		addf("http_shutdown_timeout: must be >= 0, got %v", c.HTTPShutdownTimeout)
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
