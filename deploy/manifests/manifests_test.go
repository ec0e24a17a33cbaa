package manifests_test

import (
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// TestManifests builds the services with the Dockerfile's own build step, then checks the compose file
// and both Kubernetes overlays, running each container's environment through the built binary's
// check-config.
func TestManifests(t *testing.T) {
	root := repoRoot(t)
	bins := t.TempDir()
	start := time.Now()
	if !t.Run("dockerfile", func(t *testing.T) { buildServices(t, root, bins) }) {
		t.Fatal("the Dockerfile's build step failed; the environment checks need the binaries")
	}
	t.Logf("built %d services in %v", len(serviceNames()), time.Since(start).Round(time.Millisecond))
	t.Run("compose", func(t *testing.T) { checkCompose(t, root, bins) })
	for _, overlay := range []string{"dev", "prod"} {
		t.Run("k8s/"+overlay, func(t *testing.T) { checkKustomize(t, root, bins, overlay) })
	}
}

// serviceNames are the images the Dockerfile builds, by its SERVICE argument.
func serviceNames() []string { return []string{"order", "inventory", "payment", "gateway"} }

// prefix is a service's environment prefix: ORDER, INVENTORY, ...
func prefix(svc string) string { return strings.ToUpper(svc) }

// checkEnv asserts what every deployment of svc must give it, then that the built binary accepts env
// (validation passes, no unknown <P>_ variable, every variable is one the service reads), and that the
// same binary rejects a misspelt variable.
func checkEnv(t *testing.T, bins, svc string, env map[string]string, profile config.Profile) {
	t.Helper()
	p := prefix(svc)
	want := []string{p + "_PROFILE", p + "_TLS_CA_FILE", p + "_TLS_CERT_FILE", p + "_TLS_KEY_FILE", p + "_ADMIN_ADDR",
		p + "_TELEMETRY_OTLP_ENDPOINT", p + "_REGISTRY_BACKEND"}
	if svc == "gateway" {
		want = append(want, p+"_HTTP_ADDR", p+"_JWT_SECRET")
	} else {
		want = append(want, p+"_LISTEN_ADDR", p+"_DSN", "KAFKA_BROKERS")
	}
	for _, k := range want {
		if env[k] == "" {
			t.Errorf("%s: %s is not set", svc, k)
		}
	}
	if got := env[p+"_PROFILE"]; got != string(profile) {
		t.Errorf("%s: %s_PROFILE = %q, want %q", svc, p, got, profile)
	}
	bin := filepath.Join(bins, svc)
	keys := configKeys(t, bin, env)
	for k := range env {
		if !keys[k] {
			t.Errorf("%s: %s is set but the service does not read it", svc, k)
		}
	}
	if out, err := checkConfig(bin, env); err != nil {
		t.Errorf("%s check-config with the deployment's environment: %v\n%s", svc, err, out)
	}
	typo := maps.Clone(env)
	typo[p+"_LISTEN_ADR"] = ":1"
	if out, err := checkConfig(bin, typo); err == nil || !strings.Contains(out, p+"_LISTEN_ADR") {
		t.Errorf("%s check-config accepted a misspelt variable: %v\n%s", svc, err, out)
	}
}

// drainBudget is how long the service may take to stop after SIGTERM, from its configuration:
// drain delay + shutdown timeout (the gateway: its HTTP shutdown timeout, 10 s by default).
func drainBudget(t *testing.T, svc string, env map[string]string) time.Duration {
	t.Helper()
	p := prefix(svc)
	c := config.Default(config.Profile(env[p+"_PROFILE"]))
	if err := config.FromEnv(&c, p, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	budget := c.Server.DrainDelay + c.Server.ShutdownTimeout
	if svc == "gateway" {
		d := 10 * time.Second
		if v, ok := env[p+"_HTTP_SHUTDOWN_TIMEOUT"]; ok {
			var err error
			if d, err = time.ParseDuration(v); err != nil {
				t.Fatal(err)
			}
		}
		budget = max(budget, d)
	}
	return budget
}

// port returns the port of a host:port listen address.
func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	return p
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
