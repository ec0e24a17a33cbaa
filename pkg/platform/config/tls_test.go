package config_test

import (
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// The env names are fixed across the repo (deploy manifests, make run): ORDER_TLS_CA_FILE etc.
func TestTLSEnvNames(t *testing.T) {
	t.Parallel()
	type orderConfig struct {
		config.Config
		DSN config.Secret
	}
	cfg := orderConfig{Config: config.Default(config.Dev)}
	env := map[string]string{
		"ORDER_TLS_CA_FILE":         "/certs/ca.pem",
		"ORDER_TLS_CERT_FILE":       "/certs/order.pem",
		"ORDER_TLS_KEY_FILE":        "/certs/order-key.pem",
		"ORDER_TLS_RELOAD_INTERVAL": "2s",
		"ORDER_AUTHZ_POLICY_FILE":   "/etc/shopmesh/policy.yaml",
	}
	seen := map[string]bool{}
	lookup := func(k string) (string, bool) { seen[k] = true; v, ok := env[k]; return v, ok }
	if err := config.FromEnv(&cfg, "ORDER", lookup); err != nil {
		t.Fatal(err)
	}
	for k := range env {
		if !seen[k] {
			t.Errorf("%s is never looked up", k)
		}
	}
	want := config.TLS{CAFile: "/certs/ca.pem", CertFile: "/certs/order.pem", KeyFile: "/certs/order-key.pem", ReloadInterval: 2e9}
	if cfg.TLS != want || cfg.AuthzPolicyFile != "/etc/shopmesh/policy.yaml" {
		t.Errorf("got TLS %+v policy %q", cfg.TLS, cfg.AuthzPolicyFile)
	}
	if !cfg.TLS.Enabled() {
		t.Error("TLS not enabled")
	}
}

func TestTLSValidation(t *testing.T) {
	t.Parallel()
	full := config.TLS{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}
	for _, tc := range []struct {
		name    string
		profile config.Profile
		tls     config.TLS
		wantErr string
	}{
		{"dev without TLS", config.Dev, config.TLS{}, ""},
		{"test without TLS", config.Test, config.TLS{}, ""},
		{"dev with TLS", config.Dev, full, ""},
		{"compose without TLS", config.Compose, config.TLS{}, "required in the compose profile"},
		{"k8s without TLS", config.K8s, config.TLS{}, "required in the k8s profile"},
		{"prod without TLS", config.Prod, config.TLS{}, "required in the prod profile"},
		{"prod with TLS", config.Prod, full, ""},
		{"partial", config.Dev, config.TLS{CAFile: "ca.pem", CertFile: "c.pem"}, "must be set together"},
		{"partial in prod", config.Prod, config.TLS{KeyFile: "k.pem"}, "must be set together"},
		{"negative reload", config.Dev, config.TLS{ReloadInterval: -1}, "reload_interval"},
	} {
		c := config.Default(tc.profile)
		c.Service = "order"
		c.TLS = tc.tls
		err := c.Validate()
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), "tls: ") || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: want tls error %q, got %v", tc.name, tc.wantErr, err)
		}
	}
}
