// Package config is the gateway's configuration: the platform's Config (its gRPC clients to order,
// inventory and payment, the admin port, the drain) plus the HTTP edge settings, with per-profile
// defaults and Validate. The service command loads it from GATEWAY_* variables.
package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/services/gateway/internal/auth"
)

// DevJWTSecret is the fixed signing secret of the dev profile, so `make run` works without setup. Every
// other profile must set GATEWAY_JWT_SECRET, and prod and k8s refuse this value like every other one
// committed in the repository (platformcfg.RefuseCommittedSecrets, when the configuration is loaded).
const DevJWTSecret = "shopmesh-dev-secret-do-not-use-in-prod" //nolint:gosec // G101: the dev profile's, refused in prod

// minSecretLen is the shortest HS256 secret accepted outside dev (RFC 7518 §3.2: at least the hash size).
const minSecretLen = 32

// Config is the whole configuration of the gateway.
type Config struct {
	platformcfg.Config

	HTTPAddr string `help:"HTTP/JSON API listen address, host:port"`

	// HTTPS, when its files are set, makes the API port serve HTTPS only (GATEWAY_HTTPS_CERT_FILE,
	// GATEWAY_HTTPS_KEY_FILE; reloaded every GATEWAY_TLS_RELOAD_INTERVAL). The prod profile requires it
	// unless GATEWAY_HTTPS_TERMINATED_UPSTREAM says a proxy in front terminates TLS.
	HTTPS HTTPS

	JWTSecret platformcfg.Secret `help:"HS256 key signing and verifying bearer tokens, key id \"default\"; required outside dev unless GATEWAY_JWT_KEYS is set, at least 32 bytes"`
	// JWTKeys, when set, replaces JWTSecret: "kid:secret,kid:secret", the first signs and every one
	// verifies (the token's kid picks the key), so old and new keys overlap during a rotation.
	JWTKeys platformcfg.Secret `help:"HS256 keys by id, kid:secret,kid:secret (the first signs, all verify: list the new key first and keep the old one until its tokens expire); replaces GATEWAY_JWT_SECRET; each at least 32 bytes outside dev"`
	// JWTJwksFile (spelt so that its variable is GATEWAY_JWT_JWKS_FILE), when set, replaces both: the gateway verifies ES256 tokens with the JWKS document's
	// public keys and issues none (so not in dev, whose /v1/dev/token mints tokens).
	JWTJwksFile string `help:"JWKS file of ES256 public keys (kty EC, crv P-256, each with a kid): tokens are verified with them and none is issued; replaces GATEWAY_JWT_SECRET and GATEWAY_JWT_KEYS; not in dev"`
	// JWTLeeway is the clock skew allowed on a token's exp, nbf and iat.
	JWTLeeway time.Duration `help:"clock skew allowed on a bearer token's exp, nbf and iat"`
	// JWTIssuer is the iss of issued tokens and the only one accepted; the audience is always "shopmesh".
	JWTIssuer string        `help:"iss of issued tokens and the only one accepted (the audience is always shopmesh)"`
	TokenTTL  time.Duration `help:"lifetime of the tokens POST /v1/dev/token mints (dev profile on a loopback GATEWAY_HTTP_ADDR only)"`

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
	MaxHeaderBytes    int           `help:"largest request header block, bytes (431 above; net/http allows 4096 bytes of slack)"`
	// HTTPShutdownTimeout is the gateway's older name for Server.ShutdownTimeout: when set (> 0) it
	// replaces it (see Base). 0 leaves GATEWAY_SERVER_SHUTDOWN_TIMEOUT in charge.
	HTTPShutdownTimeout time.Duration `help:"older name of GATEWAY_SERVER_SHUTDOWN_TIMEOUT; when > 0 it replaces it"`
}

// HTTPS is the API port's own TLS (not the mTLS of GATEWAY_TLS_*, which is the gateway's identity
// towards the services).
type HTTPS struct {
	CertFile string `help:"HTTPS certificate of the API port, PEM (leaf then intermediates); with GATEWAY_HTTPS_KEY_FILE the port serves HTTPS only (TLS 1.2+, HTTP/2), the files reloaded every GATEWAY_TLS_RELOAD_INTERVAL without a restart"`
	KeyFile  string `help:"private key of GATEWAY_HTTPS_CERT_FILE, PEM"`
	// TerminatedUpstream is the prod profile's explicit opt-out: a load balancer or ingress in front
	// terminates TLS, and the gateway's port is reachable only from it.
	TerminatedUpstream bool `help:"a proxy in front terminates TLS and the API port is reachable only from it: lets the prod profile serve plain HTTP (prod refuses to start without GATEWAY_HTTPS_CERT_FILE otherwise)"`
}

// Enabled reports whether the API port serves HTTPS.
func (h HTTPS) Enabled() bool { return h.CertFile != "" || h.KeyFile != "" }

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
		JWTLeeway:          auth.DefaultLeeway,
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

// DevTokens reports whether POST /v1/dev/token is served: in the dev profile, and only while the API
// listens on a loopback address (GATEWAY_HTTP_ADDR 127.0.0.1:…, [::1]:… or localhost:…; never an empty
// host, which is every interface). The handler also refuses a request that did not arrive on a loopback
// address.
func (c Config) DevTokens() bool { return c.Profile == platformcfg.Dev && LoopbackAddr(c.HTTPAddr) }

// DevTokensOffLoopback reports the dev profile listening beyond loopback: POST /v1/dev/token is then not
// served (the service logs it at start-up).
func (c Config) DevTokensOffLoopback() bool {
	return c.Profile == platformcfg.Dev && !LoopbackAddr(c.HTTPAddr)
}

// LoopbackAddr reports whether the host of addr (host:port) is a loopback IP or "localhost".
func LoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// JWTKeySet returns the token keys: GATEWAY_JWT_KEYS when set, else GATEWAY_JWT_SECRET as the single
// key "default". The first key signs.
func (c Config) JWTKeySet() ([]auth.Key, error) {
	if keys := c.JWTKeys.Reveal(); keys != "" {
		return auth.ParseKeys(keys)
	}
	return []auth.Key{{ID: auth.DefaultKeyID, Secret: []byte(c.JWTSecret.Reveal())}}, nil
}

// Validate reports every problem, each naming its field.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate()}
	addf := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		addf("http_addr: %q is not host:port", c.HTTPAddr)
	}
	switch {
	case c.HTTPS.Enabled() && (c.HTTPS.CertFile == "" || c.HTTPS.KeyFile == ""):
		addf("https: https_cert_file and https_key_file are set together or not at all")
	case c.HTTPS.Enabled() && c.HTTPS.TerminatedUpstream:
		addf("https: https_terminated_upstream says TLS ends before the gateway; do not set it with https_cert_file")
	case !c.HTTPS.Enabled() && c.Profile == platformcfg.Prod && !c.HTTPS.TerminatedUpstream:
		addf("https: the prod profile serves HTTPS only: set https_cert_file and https_key_file, or https_terminated_upstream=true when a proxy in front terminates TLS")
	}
	if c.JWTJwksFile != "" {
		switch {
		case c.Profile == platformcfg.Dev:
			addf("jwt_jwks_file: the dev profile mints tokens and needs GATEWAY_JWT_SECRET or GATEWAY_JWT_KEYS, not public keys")
		case c.JWTKeys.Reveal() != "" || c.JWTSecret.Reveal() != "":
			addf("jwt_jwks_file: set either it or jwt_secret / jwt_keys, not both")
		}
	} else if c.JWTKeys.Reveal() == "" {
		secret := c.JWTSecret.Reveal()
		switch {
		case secret == "":
			addf("jwt_secret: must be set")
		case c.Profile != platformcfg.Dev && len(secret) < minSecretLen:
			addf("jwt_secret: must be at least %d bytes outside dev, got %d", minSecretLen, len(secret))
		}
	} else if keys, err := c.JWTKeySet(); err != nil {
		addf("jwt_keys: %v", err)
	} else {
		seen := map[string]bool{}
		for _, k := range keys {
			switch {
			case seen[k.ID]:
				addf("jwt_keys: key id %q is listed twice", k.ID)
			case c.Profile != platformcfg.Dev && len(k.Secret) < minSecretLen:
				addf("jwt_keys: key %q: must be at least %d bytes outside dev, got %d", k.ID, minSecretLen, len(k.Secret))
			}
			seen[k.ID] = true
		}
	}
	if c.JWTLeeway < 0 {
		addf("jwt_leeway: must be >= 0, got %v", c.JWTLeeway)
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
