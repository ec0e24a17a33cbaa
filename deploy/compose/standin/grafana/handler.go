package main

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

const grafanaVersion = "grafana/grafana:12.1.1"

func newHandler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{
			"database": "ok",
			"version":  "12.1.1",
			"commit":   "shopmesh-standin",
		})
	})
	mux.HandleFunc("GET /api/user", func(w http.ResponseWriter, r *http.Request) {
		if !isAdmin(cfg, r) {
			unauthorized(w)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"login": cfg.Security.AdminUser, "isGrafanaAdmin": true})
	})
	mux.HandleFunc("GET /api/search", func(w http.ResponseWriter, r *http.Request) {
		if !canView(cfg, r) {
			unauthorized(w)
			return
		}
		list, err := dashboards(cfg.Paths.Provisioning)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"message": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("GET /api/datasources", func(w http.ResponseWriter, r *http.Request) {
		if !isAdmin(cfg, r) { // Grafana lists data sources to admins only
			unauthorized(w)
			return
		}
		list, err := datasources(cfg.Paths.Provisioning)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, map[string]string{"message": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if !canView(cfg, r) {
			unauthorized(w)
			return
		}
		list, err := dashboards(cfg.Paths.Provisioning)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		var b strings.Builder
		b.WriteString("<!doctype html><title>Grafana stand-in</title>\n<h1>Not Grafana: a stand-in</h1>\n")
		fmt.Fprintf(&b, "<p>This server stands in for %s in the shopmesh compose test fixture "+
			"(deploy/compose/standin). It serves /api/health, /api/user, /api/search and /api/datasources "+
			"from the provisioning files; there are no panels.</p>\n<ul>\n", html.EscapeString(grafanaVersion))
		for _, d := range list {
			fmt.Fprintf(&b, "<li>%s (%s)</li>\n", html.EscapeString(d.Title), html.EscapeString(d.UID))
		}
		b.WriteString("</ul>\n")
		if err != nil {
			fmt.Fprintf(&b, "<p>provisioning: %s</p>\n", html.EscapeString(err.Error()))
		}
		_, _ = w.Write([]byte(b.String()))
	})
	return mux
}

func isAdmin(cfg Config, r *http.Request) bool {
	user, pw, ok := r.BasicAuth()
	return ok &&
		subtle.ConstantTimeCompare([]byte(user), []byte(cfg.Security.AdminUser)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pw), []byte(cfg.Security.AdminPassword.Reveal())) == 1
}

func canView(cfg Config, r *http.Request) bool {
	return cfg.Auth.Anonymous.Enabled || isAdmin(cfg, r)
}

func unauthorized(w http.ResponseWriter) {
	writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Unauthorized"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Dashboard is one entry of GET /api/search.
type Dashboard struct {
	UID         string   `json:"uid"`
	Title       string   `json:"title"`
	Type        string   `json:"type"`
	FolderTitle string   `json:"folderTitle,omitempty"`
	Tags        []string `json:"tags"`
}

// dashboards reads every file provider of provisioning/dashboards/*.y*ml and the dashboard JSON files
// under its options.path, as Grafana's file provisioning does (without watching for changes).
func dashboards(provisioning string) ([]Dashboard, error) {
	out := []Dashboard{}
	files, err := yamlFiles(filepath.Join(provisioning, "dashboards"))
	if err != nil {
		return out, err
	}
	for _, f := range files {
		var doc struct {
			Providers []struct {
				Folder  string `yaml:"folder"`
				Type    string `yaml:"type"`
				Options struct {
					Path string `yaml:"path"`
				} `yaml:"options"`
			} `yaml:"providers"`
		}
		if err := readYAML(f, &doc); err != nil {
			return out, err
		}
		for _, p := range doc.Providers {
			if p.Type != "" && p.Type != "file" {
				continue
			}
			jsons, err := filepath.Glob(filepath.Join(p.Options.Path, "*.json"))
			if err != nil {
				return out, err
			}
			for _, j := range jsons {
				var d Dashboard
				raw, err := os.ReadFile(j)
				if err != nil {
					return out, err
				}
				if err := json.Unmarshal(raw, &d); err != nil {
					return out, fmt.Errorf("dashboard %s: %w", j, err)
				}
				d.Type, d.FolderTitle = "dash-db", p.Folder
				if d.Tags == nil {
					d.Tags = []string{}
				}
				out = append(out, d)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Title < out[j].Title })
	return out, nil
}

// Datasource is one entry of GET /api/datasources.
type Datasource struct {
	UID       string `json:"uid" yaml:"uid"`
	Name      string `json:"name" yaml:"name"`
	Type      string `json:"type" yaml:"type"`
	Access    string `json:"access" yaml:"access"`
	URL       string `json:"url" yaml:"url"`
	IsDefault bool   `json:"isDefault" yaml:"isDefault"`
}

func datasources(provisioning string) ([]Datasource, error) {
	out := []Datasource{}
	files, err := yamlFiles(filepath.Join(provisioning, "datasources"))
	if err != nil {
		return out, err
	}
	for _, f := range files {
		var doc struct {
			Datasources []Datasource `yaml:"datasources"`
		}
		if err := readYAML(f, &doc); err != nil {
			return out, err
		}
		out = append(out, doc.Datasources...)
	}
	return out, nil
}

func yamlFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".yml") || strings.HasSuffix(e.Name(), ".yaml")) {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	return files, nil
}

func readYAML(path string, dst any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
