package config_test

import (
	"strings"
	"testing"
)

// The API port's HTTPS: both files or none; prod refuses plain HTTP unless TLS is terminated upstream
// (and then no certificate is expected).
func TestHTTPS(t *testing.T) {
	t.Parallel()
	prod := func(extra map[string]string) map[string]string {
		m := map[string]string{"GATEWAY_PROFILE": "prod", "GATEWAY_JWT_SECRET": strings.Repeat("s", 40),
			"GATEWAY_TLS_CA_FILE": "ca.pem", "GATEWAY_TLS_CERT_FILE": "gateway.pem", "GATEWAY_TLS_KEY_FILE": "gateway-key.pem"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name string
		env  map[string]string
		err  string // "" = valid
	}{
		{"prod with HTTPS", prod(map[string]string{"GATEWAY_HTTPS_CERT_FILE": "api.pem", "GATEWAY_HTTPS_KEY_FILE": "api-key.pem"}), ""},
		{"prod terminated upstream", prod(map[string]string{"GATEWAY_HTTPS_TERMINATED_UPSTREAM": "true"}), ""},
		{"prod plain HTTP", prod(nil), "https: the prod profile serves HTTPS only"},
		{"prod both", prod(map[string]string{"GATEWAY_HTTPS_CERT_FILE": "api.pem", "GATEWAY_HTTPS_KEY_FILE": "api-key.pem",
			"GATEWAY_HTTPS_TERMINATED_UPSTREAM": "true"}), "do not set it with https_cert_file"},
		{"certificate without key", map[string]string{"GATEWAY_PROFILE": "test", "GATEWAY_JWT_SECRET": strings.Repeat("s", 40),
			"GATEWAY_HTTPS_CERT_FILE": "api.pem"}, "https_cert_file and https_key_file are set together"},
		{"test plain HTTP", map[string]string{"GATEWAY_PROFILE": "test", "GATEWAY_JWT_SECRET": strings.Repeat("s", 40)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tt.env)
			if tt.err == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("error %v, want %q", err, tt.err)
			}
			if err == nil && c.HTTPS.Enabled() != (tt.env["GATEWAY_HTTPS_CERT_FILE"] != "") {
				t.Fatalf("HTTPS.Enabled() = %v", c.HTTPS.Enabled())
			}
		})
	}
}
