package manifests_test

import (
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/deploy/servicelist"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// TestManifests builds the services with the Dockerfile's own build step, then checks the compose file
// and both Kubernetes overlays, running each container's environment through the built binary's
// check-config. The services and what each one needs (kind, database, brokers, calls) come from
// services/*/service.yaml, so a new service is checked with no edit here.
func TestManifests(t *testing.T) {
	root := repoRoot(t)
	list, err := servicelist.Load(root)
	if err != nil {
		t.Fatal(err)
	}
	bins := t.TempDir()
	start := time.Now()
	if !t.Run("dockerfile", func(t *testing.T) { buildServices(t, root, bins, list) }) {
		t.Fatal("the Dockerfile's build step failed; the environment checks need the binaries")
	}
	t.Logf("built %d services in %v", len(list), time.Since(start).Round(time.Millisecond))
	// `make secrets` into temporary folders: compose reads them through SHOPMESH_SECRETS_DIR, kustomize
	// renders a copy of deploy/k8s holding the dev overlay's files.
	gen := generateSecrets(t, root, list)
	t.Run("compose", func(t *testing.T) { checkCompose(t, root, bins, list, gen) })
	for _, overlay := range []string{"dev", "prod"} {
		t.Run("k8s/"+overlay, func(t *testing.T) { checkKustomize(t, gen.k8s, bins, overlay, list, gen.vals) })
	}
}

// isHTTP reports whether s is the edge (HTTP in front, gRPC behind), like the gateway.
func isHTTP(s servicelist.Service) bool { return s.Kind == servicelist.KindHTTP }

// checkEnv asserts what every deployment of s must give it (from its service.yaml: a DSN when it has a
// database, the brokers it uses and no others), then that the built binary accepts env (validation
// passes, no unknown <P>_ variable, every variable is one the service reads), and that the same binary
// rejects a misspelt variable.
func checkEnv(t *testing.T, bins string, s servicelist.Service, env map[string]string, profile config.Profile) {
	t.Helper()
	svc, p := s.Name, s.Prefix()
	want := []string{p + "_PROFILE", p + "_TLS_CA_FILE", p + "_TLS_CERT_FILE", p + "_TLS_KEY_FILE", p + "_ADMIN_ADDR",
		p + "_TELEMETRY_OTLP_ENDPOINT", p + "_REGISTRY_BACKEND"}
	if isHTTP(s) {
		want = append(want, p+"_HTTP_ADDR", p+"_JWT_KEYS")
	} else {
		want = append(want, p+"_LISTEN_ADDR")
	}
	for k, needed := range map[string]bool{p + "_DSN": s.Database, "KAFKA_BROKERS": s.Kafka, "NATS_URL": s.NATS,
		p + "_NATS_USER": s.NATS, p + "_NATS_PASSWORD": s.NATS} {
		switch _, set := env[k]; {
		case needed:
			want = append(want, k)
		case set:
			t.Errorf("%s: %s is set, but services/%s/service.yaml does not say it uses it", svc, k, svc)
		}
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
	// A secret the service reads is provided by the deployment (make secrets, the operator's Secrets),
	// or listed in notProvided with the reason: a new secret setting fails here until it is wired.
	for _, k := range sortedKeys(keys) {
		suffix, isSecret := strings.CutPrefix(k, p+"_")
		if isSecret = isSecret && secretName.MatchString(k); !isSecret || env[k] != "" {
			continue
		}
		if strings.HasPrefix(suffix, "REGISTRY_NACOS_") && !usesNacos(env, p) {
			continue // no Nacos here (the Kubernetes overlays register through DNS)
		}
		if _, ok := notProvided[suffix]; !ok {
			t.Errorf("%s reads the secret %s, which the deployment does not provide: add it to make secrets (deploy/devsecrets) and the manifests, or to notProvided with the reason", svc, k)
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
// drain delay + shutdown timeout (the HTTP edge's older <P>_HTTP_SHUTDOWN_TIMEOUT, when set, replaces
// the shutdown timeout).
func drainBudget(t *testing.T, s servicelist.Service, env map[string]string) time.Duration {
	t.Helper()
	p := s.Prefix()
	c := config.Default(config.Profile(env[p+"_PROFILE"]))
	if err := config.FromEnv(&c, p, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	shutdown := c.Server.ShutdownTimeout
	if v, ok := env[p+"_HTTP_SHUTDOWN_TIMEOUT"]; ok && isHTTP(s) {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		if d > 0 {
			shutdown = d
		}
	}
	return c.Server.DrainDelay + shutdown
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
