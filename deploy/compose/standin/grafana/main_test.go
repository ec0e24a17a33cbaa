package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// provisioning lays out compose's grafana provisioning (deploy/compose/config/grafana) in a temporary
// folder, with the dashboard provider pointed at the repository's dashboards instead of the container
// path compose mounts them at.
func provisioning(t *testing.T) string {
	t.Helper()
	repo := filepath.Join("..", "..", "config", "grafana")
	dir := t.TempDir()
	for _, sub := range []string{"dashboards", "datasources"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := os.ReadFile(filepath.Join(repo, "provisioning", "datasources", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "datasources", "prometheus.yml"), ds, 0o644); err != nil {
		t.Fatal(err)
	}
	prov, err := os.ReadFile(filepath.Join(repo, "provisioning", "dashboards", "shopmesh.yml"))
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(filepath.Join(repo, "dashboards"))
	if err != nil {
		t.Fatal(err)
	}
	prov = []byte(strings.ReplaceAll(string(prov), "/var/lib/grafana/dashboards", abs))
	if err := os.WriteFile(filepath.Join(dir, "dashboards", "shopmesh.yml"), prov, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// standIn configures the stand-in from the variables compose gives the official image.
func standIn(t *testing.T, env map[string]string) *httptest.Server {
	t.Helper()
	cfg := defaultConfig()
	cfg.Paths.Provisioning = provisioning(t)
	if err := config.FromEnv(&cfg, "GF", func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newHandler(cfg))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url, user, pw string, into any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if into != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	return resp.StatusCode
}

// composeEnv is what compose gives the grafana container (environment + grafana.env).
func composeEnv() map[string]string {
	return map[string]string{
		"GF_AUTH_ANONYMOUS_ENABLED":  "true",
		"GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
		"GF_SECURITY_ADMIN_PASSWORD": "s3cret-from-make-secrets",
	}
}

func TestHealthAnswersDatabaseOK(t *testing.T) {
	srv := standIn(t, composeEnv())
	var h map[string]string
	if code := get(t, srv.URL+"/api/health", "", "", &h); code != http.StatusOK || h["database"] != "ok" {
		t.Fatalf("GET /api/health = %d %v, want 200 database ok", code, h)
	}
}

func TestAdminPasswordFromEnvironment(t *testing.T) {
	srv := standIn(t, composeEnv())
	for _, c := range []struct {
		user, pw string
		want     int
	}{
		{"", "", http.StatusUnauthorized},
		{"admin", "admin", http.StatusUnauthorized}, // Grafana's default password no longer works
		{"admin", "wrong", http.StatusUnauthorized},
		{"admin", "s3cret-from-make-secrets", http.StatusOK},
	} {
		if code := get(t, srv.URL+"/api/user", c.user, c.pw, nil); code != c.want {
			t.Errorf("GET /api/user as %q/%q = %d, want %d", c.user, c.pw, code, c.want)
		}
	}
}

func TestProvisionedDashboardsAndDatasources(t *testing.T) {
	srv := standIn(t, composeEnv())
	var list []Dashboard
	if code := get(t, srv.URL+"/api/search", "", "", &list); code != http.StatusOK {
		t.Fatalf("GET /api/search anonymously = %d, want 200 (GF_AUTH_ANONYMOUS_ENABLED)", code)
	}
	if len(list) != 1 || list[0].UID != "shopmesh-overview" || list[0].FolderTitle != "shopmesh" {
		t.Fatalf("dashboards = %+v, want the shopmesh overview in folder shopmesh", list)
	}
	var ds []Datasource
	if code := get(t, srv.URL+"/api/datasources", "", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("GET /api/datasources anonymously = %d, want 401", code)
	}
	if code := get(t, srv.URL+"/api/datasources", "admin", "s3cret-from-make-secrets", &ds); code != http.StatusOK {
		t.Fatalf("GET /api/datasources as admin = %d", code)
	}
	if len(ds) != 1 || ds[0].URL != "http://prometheus:9090" || !ds[0].IsDefault {
		t.Fatalf("datasources = %+v, want the default Prometheus at http://prometheus:9090", ds)
	}
}

func TestAnonymousDisabledNeedsLogin(t *testing.T) {
	srv := standIn(t, map[string]string{"GF_SECURITY_ADMIN_PASSWORD": "pw"})
	if code := get(t, srv.URL+"/", "", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("GET / anonymously = %d, want 401", code)
	}
	if code := get(t, srv.URL+"/", "admin", "pw", nil); code != http.StatusOK {
		t.Fatalf("GET / as admin = %d, want 200", code)
	}
	if code := get(t, srv.URL+"/api/health", "", "", nil); code != http.StatusOK {
		t.Fatalf("GET /api/health anonymously = %d, want 200", code)
	}
}
