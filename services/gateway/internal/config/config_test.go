package config_test

import (
	"strings"
	"testing"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/services/gateway/internal/config"
)

// load is what the service command does with the environment; GATEWAY_PROFILE is dev unless m sets it.
func load(m map[string]string) (config.Config, error) {
	return platformcfg.Load[config.Config]("GATEWAY", func(k string) (string, bool) {
		v, ok := m[k]
		if _, set := m["GATEWAY_PROFILE"]; !set && k == "GATEWAY_PROFILE" {
			return "dev", true
		}
		return v, ok
	}, config.Default)
}

// Without GATEWAY_PROFILE the gateway does not start (it would otherwise mint tokens for anyone).
func TestNoProfile(t *testing.T) {
	t.Parallel()
	for _, m := range []map[string]string{{}, {"GATEWAY_PROFILE": ""}} {
		_, err := platformcfg.Load[config.Config]("GATEWAY", func(k string) (string, bool) { v, ok := m[k]; return v, ok }, config.Default)
		if err == nil || err.Error() != "config: GATEWAY_PROFILE is not set: choose dev (what make run uses), test, compose, k8s or prod" {
			t.Errorf("%v: err %v", m, err)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	strong := strings.Repeat("s", 40)
	tests := []struct {
		name string
		env  map[string]string
		err  string // "" = valid
	}{
		{"dev defaults", map[string]string{}, ""},
		{"test without a secret", map[string]string{"GATEWAY_PROFILE": "test"}, "jwt_secret (GATEWAY_JWT_SECRET): must be set"},
		{"test with a short secret", map[string]string{"GATEWAY_PROFILE": "test", "GATEWAY_JWT_SECRET": "short"}, "at least 32"},
		{"prod with the dev secret", map[string]string{"GATEWAY_PROFILE": "prod", "GATEWAY_JWT_SECRET": config.DevJWTSecret},
			"jwt_secret (GATEWAY_JWT_SECRET): a value committed in the shopmesh repository; generate one (make secrets)"},
		{"k8s with compose's former secret", map[string]string{"GATEWAY_PROFILE": "k8s", "GATEWAY_JWT_SECRET": "shopmesh-compose-jwt-secret-change-me-0123456789"},
			"jwt_secret (GATEWAY_JWT_SECRET): a value committed in the shopmesh repository"},
		{"prod with a secret", map[string]string{"GATEWAY_PROFILE": "prod", "GATEWAY_JWT_SECRET": strong,
			"GATEWAY_HTTPS_TERMINATED_UPSTREAM": "true", "GATEWAY_TLS_CA_FILE": "ca.pem", "GATEWAY_TLS_CERT_FILE": "gateway.pem", "GATEWAY_TLS_KEY_FILE": "gateway-key.pem"}, ""},
		{"prod without mTLS", map[string]string{"GATEWAY_PROFILE": "prod", "GATEWAY_JWT_SECRET": strong}, "tls"},
		{"bad addr", map[string]string{"GATEWAY_HTTP_ADDR": "nope"}, "http_addr (GATEWAY_HTTP_ADDR)"},
		{"bad target", map[string]string{"GATEWAY_TARGETS_ORDER_ADDRESSES": "nohost"}, "targets"},
		{"bad duration", map[string]string{"GATEWAY_CALL_TIMEOUT": "soon"}, "GATEWAY_CALL_TIMEOUT"},
		{"zero timeout", map[string]string{"GATEWAY_READ_TIMEOUT": "0s"}, "read_timeout (GATEWAY_READ_TIMEOUT): must be > 0"},
		{"negative http shutdown timeout", map[string]string{"GATEWAY_HTTP_SHUTDOWN_TIMEOUT": "-1s"}, "http_shutdown_timeout"},
		{"test with keys instead of a secret", map[string]string{"GATEWAY_PROFILE": "test", "GATEWAY_JWT_KEYS": "k2:" + strong + ",k1:" + strong}, ""},
		{"test with a short key", map[string]string{"GATEWAY_PROFILE": "test", "GATEWAY_JWT_KEYS": "k2:" + strong + ",k1:short"}, `jwt_keys (GATEWAY_JWT_KEYS): key "k1": must be at least 32`},
		{"keys without ids", map[string]string{"GATEWAY_JWT_KEYS": strong}, "jwt_keys (GATEWAY_JWT_KEYS): key 1: want kid:secret"},
		{"duplicate key ids", map[string]string{"GATEWAY_JWT_KEYS": "k1:" + strong + ",k1:" + strong + "x"}, `key id "k1" is listed twice`},
		{"prod with the dev secret as a key", map[string]string{"GATEWAY_PROFILE": "prod", "GATEWAY_JWT_KEYS": "k2:" + strong + ",k1:" + config.DevJWTSecret},
			"jwt_keys (GATEWAY_JWT_KEYS): a value committed in the shopmesh repository"},
		{"prod with a JWKS file", map[string]string{"GATEWAY_PROFILE": "prod", "GATEWAY_JWT_JWKS_FILE": "jwks.json",
			"GATEWAY_HTTPS_TERMINATED_UPSTREAM": "true", "GATEWAY_TLS_CA_FILE": "ca.pem", "GATEWAY_TLS_CERT_FILE": "gateway.pem", "GATEWAY_TLS_KEY_FILE": "gateway-key.pem"}, ""},
		{"JWKS file and a secret", map[string]string{"GATEWAY_PROFILE": "test", "GATEWAY_JWT_JWKS_FILE": "jwks.json", "GATEWAY_JWT_SECRET": strong}, "not both"},
		{"JWKS file in dev", map[string]string{"GATEWAY_JWT_JWKS_FILE": "jwks.json"}, "jwt_jwks_file (GATEWAY_JWT_JWKS_FILE): the dev profile"},
		{"negative leeway", map[string]string{"GATEWAY_JWT_LEEWAY": "-1s"}, "jwt_leeway (GATEWAY_JWT_LEEWAY): must be >= 0"},
		{"gc percent", map[string]string{"GATEWAY_GC_PERCENT": "200"}, ""},
		{"gc percent off", map[string]string{"GATEWAY_GC_PERCENT": "-1"}, "gc_percent (GATEWAY_GC_PERCENT): must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(tt.env)
			if tt.err == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("error %v, want %q", err, tt.err)
			}
		})
	}
}

func TestLoadOverridesTargetsAndSettings(t *testing.T) {
	t.Parallel()
	c, err := load(map[string]string{
		"GATEWAY_HTTP_ADDR":                   "127.0.0.1:9999",
		"GATEWAY_TARGETS_ORDER_ADDRESSES":     "10.0.0.1:1,10.0.0.2:1",
		"GATEWAY_TARGETS_INVENTORY_ADDRESSES": "10.0.0.3:1",
		"GATEWAY_RATE_LIMIT_RPS":              "5",
		"GATEWAY_CLIENT_DEFAULT_DEADLINE":     "2s",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:9999" || len(c.Targets["order"].Addresses) != 2 || c.Targets["inventory"].Addresses[0] != "10.0.0.3:1" ||
		c.RateLimitRPS != 5 || c.Client.DefaultDeadline.String() != "2s" || !c.DevTokens() {
		t.Fatalf("config %+v", c)
	}
	if strings.Contains(c.JWTSecret.String(), config.DevJWTSecret) {
		t.Fatal("the secret prints")
	}
}

func TestDevTokensOnlyInDev(t *testing.T) {
	t.Parallel()
	c, err := load(map[string]string{"GATEWAY_PROFILE": "compose", "GATEWAY_JWT_SECRET": strings.Repeat("x", 32),
		"GATEWAY_TLS_CA_FILE": "ca.pem", "GATEWAY_TLS_CERT_FILE": "gateway.pem", "GATEWAY_TLS_KEY_FILE": "gateway-key.pem"})
	if err != nil || c.DevTokens() {
		t.Fatalf("compose: dev tokens %v, err %v", c.DevTokens(), err)
	}
	for _, p := range []platformcfg.Profile{platformcfg.Test, platformcfg.Compose, platformcfg.K8s, platformcfg.Prod} {
		if c := config.Default(p); c.DevTokens() || c.DevTokensOffLoopback() {
			t.Errorf("%s: dev tokens %v, off loopback %v", p, c.DevTokens(), c.DevTokensOffLoopback())
		}
	}
	// In dev, only a loopback listener serves them; an empty host is every interface.
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.0.0.2:0": true, "[::1]:8080": true, "localhost:8080": true, "LOCALHOST:1": true,
		":8080": false, "0.0.0.0:8080": false, "[::]:8080": false, "192.0.2.2:8080": false, "10.0.0.1:80": false,
		"[::ffff:127.0.0.1]:8080": true, "example.com:8080": false,
	} {
		c := config.Default(platformcfg.Dev)
		c.HTTPAddr = addr
		if c.DevTokens() != want || c.DevTokensOffLoopback() == want {
			t.Errorf("dev on %s: dev tokens %v, off loopback %v; want %v", addr, c.DevTokens(), c.DevTokensOffLoopback(), want)
		}
	}
}

// The HTTP server shuts down within the platform's Server.ShutdownTimeout (GATEWAY_SERVER_SHUTDOWN_TIMEOUT);
// GATEWAY_HTTP_SHUTDOWN_TIMEOUT, the gateway's older name for it, still works and wins when set.
func TestHTTPShutdownTimeoutIsTheServerShutdownTimeout(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want time.Duration
	}{
		{"default", map[string]string{}, platformcfg.Default(platformcfg.Dev).Server.ShutdownTimeout},
		{"k8s default", map[string]string{"GATEWAY_PROFILE": "k8s", "GATEWAY_JWT_SECRET": strings.Repeat("x", 32),
			"GATEWAY_TLS_CA_FILE": "ca.pem", "GATEWAY_TLS_CERT_FILE": "gateway.pem", "GATEWAY_TLS_KEY_FILE": "gateway-key.pem"},
			platformcfg.Default(platformcfg.K8s).Server.ShutdownTimeout},
		{"platform name", map[string]string{"GATEWAY_SERVER_SHUTDOWN_TIMEOUT": "7s"}, 7 * time.Second},
		{"older name", map[string]string{"GATEWAY_HTTP_SHUTDOWN_TIMEOUT": "3s"}, 3 * time.Second},
		{"both: the older name wins", map[string]string{"GATEWAY_HTTP_SHUTDOWN_TIMEOUT": "3s", "GATEWAY_SERVER_SHUTDOWN_TIMEOUT": "7s"}, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Base().Server.ShutdownTimeout; got != tt.want {
				t.Fatalf("shutdown timeout %v, want %v", got, tt.want)
			}
		})
	}
}

func TestJWTKeySet(t *testing.T) {
	t.Parallel()
	c, err := load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.JWTKeySet()
	if err != nil || len(keys) != 1 || keys[0].ID != "default" || string(keys[0].Secret) != config.DevJWTSecret || c.JWTLeeway != 30*time.Second {
		t.Fatalf("dev keys %v, %v, leeway %v", len(keys), err, c.JWTLeeway)
	}
	c, err = load(map[string]string{"GATEWAY_JWT_KEYS": "new:" + strings.Repeat("n", 32) + ",old:" + strings.Repeat("o", 32), "GATEWAY_JWT_LEEWAY": "5s"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err = c.JWTKeySet()
	if err != nil || len(keys) != 2 || keys[0].ID != "new" || keys[1].ID != "old" || c.JWTLeeway != 5*time.Second {
		t.Fatalf("keys %d, %v, leeway %v", len(keys), err, c.JWTLeeway)
	}
	if strings.Contains(c.JWTKeys.String(), "nnnn") {
		t.Fatal("the keys are printed")
	}
}
