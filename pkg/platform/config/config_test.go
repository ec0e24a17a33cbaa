package config_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/fault"
)

func valid(p config.Profile) config.Config {
	c := config.Default(p)
	c.Service = "order"
	c.Targets["inventory"] = config.Target{Addresses: []string{"127.0.0.1:50052", "127.0.0.1:50053"}}
	if p == config.Compose || p == config.K8s || p == config.Prod {
		c.TLS = config.TLS{CAFile: "ca.pem", CertFile: "order.pem", KeyFile: "order-key.pem", ReloadInterval: c.TLS.ReloadInterval}
	}
	return c
}

func TestDefaultsAreValidForEveryProfile(t *testing.T) {
	t.Parallel()
	for _, p := range []config.Profile{config.Dev, config.Test, config.Compose, config.K8s, config.Prod} {
		c := valid(p)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		if c.Fault.Enabled {
			t.Errorf("%s: fault injection must be off by default", p)
		}
		if c.Server.ShutdownTimeout+c.Server.DrainDelay >= 30*time.Second {
			t.Errorf("%s: drain + shutdown must fit in the 30s termination grace period", p)
		}
	}
}

func TestValidateNamesEveryBadField(t *testing.T) {
	t.Parallel()
	c := valid(config.Dev)
	c.Service = ""
	c.Profile = "staging"
	c.ListenAddr = "50051"
	c.Server.MaxConcurrentStreams = 0
	c.Server.MaxDeadline = time.Second // below the 10s default
	c.Client.Keepalive.Time = time.Second
	c.Client.Retry.MaxAttempts = 9
	c.Client.LB = "random"
	c.RateLimit.MaxInFlight = -1
	c.Targets["payment"] = config.Target{Addresses: []string{"payment"}}
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, field := range []string{
		"service:", "profile:", "listen_addr:", "server.max_concurrent_streams:", "server.max_deadline:",
		"client.keepalive.time:", "client.retry: max_attempts:", "client.lb:", "rate_limit: max_in_flight:",
		`targets["payment"].addresses:`,
	} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s:\n%v", field, err)
		}
	}
}

// TestFaultInjectionOnlyInDevAndTest: a fault section (enabled, or rules alone: one flag flip away from
// faults) is refused at start-up in compose, k8s and prod, and allowed in dev and test.
func TestFaultInjectionOnlyInDevAndTest(t *testing.T) {
	t.Parallel()
	rules := map[string]fault.Rule{"/shopmesh.payment.v1.PaymentService/*": {AbortCode: "UNAVAILABLE", AbortPercent: 10}}
	for _, p := range []config.Profile{config.Dev, config.Test, config.Compose, config.K8s, config.Prod} {
		for _, f := range []fault.Config{{Enabled: true, Rules: rules}, {Rules: rules}} {
			c := valid(p)
			c.Fault = f
			err := c.Validate()
			if p == config.Dev || p == config.Test {
				if err != nil {
					t.Errorf("%s allows fault injection: %v", p, err)
				}
				continue
			}
			want := "fault: fault injection is refused in the " + string(p) + " profile (dev and test only)"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s with %+v = %v, want %q", p, f, err, want)
			}
		}
	}
}

type serviceConfig struct {
	Platform config.Config
	DSN      config.Secret
	Workers  int
	Ignored  string `env:"-"`
}

func TestFromEnv(t *testing.T) {
	t.Parallel()
	cfg := serviceConfig{Platform: valid(config.K8s), Workers: 1, Ignored: "keep"}
	env := map[string]string{
		"ORDER_PLATFORM_SERVICE":                       "order",
		"ORDER_PLATFORM_LISTEN_ADDR":                   ":7000",
		"ORDER_PLATFORM_SERVER_DRAIN_DELAY":            "2s",
		"ORDER_PLATFORM_SERVER_MAX_RECV_MSG_SIZE":      "1048576",
		"ORDER_PLATFORM_SERVER_MAX_CONCURRENT_STREAMS": "64",
		"ORDER_PLATFORM_CLIENT_RETRY_MAX_ATTEMPTS":     "2",
		"ORDER_PLATFORM_CLIENT_RETRY_CODES":            "UNAVAILABLE, RESOURCE_EXHAUSTED",
		"ORDER_PLATFORM_CLIENT_BREAKER_FAILURE_RATIO":  "0.25",
		"ORDER_PLATFORM_CLIENT_BREAKER_ENABLED":        "false",
		"ORDER_PLATFORM_RATE_LIMIT_DEFAULT_RPS":        "50",
		"ORDER_PLATFORM_TARGETS_INVENTORY_ADDRESSES":   "inv-0:50051,inv-1:50051",
		"ORDER_PLATFORM_TARGETS_INVENTORY_LB":          "least_request",
		"ORDER_DSN":                                    "postgres://u:hunter2@db/order",
		"ORDER_WORKERS":                                "8",
		"ORDER_IGNORED":                                "changed",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if err := config.FromEnv(&cfg, "ORDER_", lookup); err != nil {
		t.Fatal(err)
	}
	p := cfg.Platform
	checks := map[string][2]any{
		"listen":    {p.ListenAddr, ":7000"},
		"drain":     {p.Server.DrainDelay, 2 * time.Second},
		"recv":      {p.Server.MaxRecvMsgSize, 1 << 20},
		"streams":   {p.Server.MaxConcurrentStreams, uint32(64)},
		"attempts":  {p.Client.Retry.MaxAttempts, 2},
		"codes":     {fmt.Sprint(p.Client.Retry.Codes), "[UNAVAILABLE RESOURCE_EXHAUSTED]"},
		"ratio":     {p.Client.Breaker.FailureRatio, 0.25},
		"breaker":   {p.Client.Breaker.Enabled, false},
		"rps":       {p.RateLimit.Default.RPS, 50.0},
		"addresses": {fmt.Sprint(p.Targets["inventory"].Addresses), "[inv-0:50051 inv-1:50051]"},
		"lb":        {p.Targets["inventory"].LB, "least_request"},
		"dsn":       {cfg.DSN.Reveal(), "postgres://u:hunter2@db/order"},
		"workers":   {cfg.Workers, 8},
		"ignored":   {cfg.Ignored, "keep"},
		"untouched": {p.Server.ShutdownTimeout, 20 * time.Second},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
	if err := p.Validate(); err != nil {
		t.Errorf("config from env is invalid: %v", err)
	}
}

func TestFromEnvReportsBadValues(t *testing.T) {
	t.Parallel()
	cfg := valid(config.Dev)
	env := map[string]string{"APP_SERVER_DRAIN_DELAY": "5", "APP_CLIENT_RETRY_MAX_ATTEMPTS": "three"}
	err := config.FromEnv(&cfg, "APP", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err == nil || !strings.Contains(err.Error(), "APP_SERVER_DRAIN_DELAY") || !strings.Contains(err.Error(), "APP_CLIENT_RETRY_MAX_ATTEMPTS") {
		t.Errorf("errors should name the variables: %v", err)
	}
	if err := config.FromEnv(cfg, "APP", nil); err == nil {
		t.Error("a non-pointer must be refused")
	}
}

func TestSecretNeverPrinted(t *testing.T) {
	t.Parallel()
	s := struct{ Password config.Secret }{Password: "hunter2"}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "secret", s.Password, "struct", s)
	js, _ := json.Marshal(s)
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%+v %#v %s %v", s, s, s.Password, s.Password), logs.String(), string(js)} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if s.Password.Reveal() != "hunter2" {
		t.Error("Reveal must return the value")
	}
}

// A service config that embeds the platform's reads the platform fields without a name segment.
func TestFromEnvFlattensEmbeddedConfig(t *testing.T) {
	t.Parallel()
	type svc struct {
		config.Config
		DSN string
	}
	cfg := svc{Config: valid(config.Dev)}
	env := map[string]string{"INVENTORY_LISTEN_ADDR": "127.0.0.1:0", "INVENTORY_DSN": "sqlite:x.db"}
	if err := config.FromEnv(&cfg, "INVENTORY", func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if cfg.ListenAddr != "127.0.0.1:0" || cfg.DSN != "sqlite:x.db" {
		t.Errorf("listen %q dsn %q; want the INVENTORY_ values", cfg.ListenAddr, cfg.DSN)
	}
}
