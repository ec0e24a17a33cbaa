package platform_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/configcenter"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
	"github.com/shopmesh/shopmesh/pkg/platform/registry"
)

// TestConfigCenterFaultsOnlyInDevAndTest: a fault document from the config center is refused in the
// compose, k8s and prod profiles, both when it is there at start-up and when it is pushed while the
// process runs (the previous settings stay, the rest of the refused document included), and applied in
// dev and test.
func TestConfigCenterFaultsOnlyInDevAndTest(t *testing.T) {
	t.Parallel()
	certs := t.TempDir()
	if _, err := mtls.EnsureDir(mtls.DirOptions{Dir: certs, Services: []string{"echo"}, TTL: time.Hour, CATTL: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	const faultDoc = "rate_limit: {default: {rps: %s}}\nfault: {enabled: true, rules: {'*': {abort_code: UNAVAILABLE, abort_percent: 100}}}"
	for _, p := range []config.Profile{config.Dev, config.Test, config.Compose, config.K8s, config.Prod} {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel()
			cfg := nacosConfig(t, "echo")
			cfg.Profile = p
			cfg.ConfigCenter.Backend = config.ConfigCenterNacos
			cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile = filepath.Join(certs, "ca.pem"), filepath.Join(certs, "echo.pem"), filepath.Join(certs, "echo-key.pem")
			src := &closingStatic{Static: configcenter.NewStatic(map[string]string{configcenter.SharedDataID: strings.Replace(faultDoc, "%s", "9", 1)})}
			backend := platform.Backend{Name: registry.Nacos, ConfigSource: func(platform.Config) (platform.ConfigSource, error) { return src, nil }}
			pl := newPlatform(t, cfg, platform.WithBackends(backend))
			ctx := t.Context()
			done := make(chan error, 1)
			go func() { done <- pl.RunConfigCenter(ctx) }()
			t.Cleanup(func() { <-done })
			// A harmless push to the service's layer reaches the running center once it has loaded the
			// start-up documents; the shared layer's faults were applied or refused by then.
			eventually(t, "a pushed rate limit", func() bool {
				src.Set("echo.yaml", "rate_limit: {default: {rps: 7}}")
				return pl.RateLimiter().Limits().Default.RPS == 7
			})
			allowed := p == config.Dev || p == config.Test
			if cur, _ := pl.ConfigCenter(); cur.Fault.Enabled != allowed {
				t.Errorf("%s: faults of the start-up document applied = %v, want %v", p, cur.Fault.Enabled, allowed)
			}
			// The pushed document alone decides below; Set delivers it synchronously.
			src.Set(configcenter.SharedDataID, "")
			src.Set("echo.yaml", strings.Replace(faultDoc, "%s", "5", 1))
			cur, _ := pl.ConfigCenter()
			rps := pl.RateLimiter().Limits().Default.RPS
			switch {
			case allowed && (!cur.Fault.Enabled || rps != 5):
				t.Errorf("%s: a pushed fault document was not applied: faults %+v, rps %v", p, cur.Fault, rps)
			case !allowed && (cur.Fault.Enabled || len(cur.Fault.Rules) > 0 || rps != 7):
				t.Errorf("%s: a pushed fault document was applied: faults %+v, rps %v (want the previous 7)", p, cur.Fault, rps)
			}
		})
	}
}
