// Command grafana is the stand-in for grafana/grafana:12.1.1 in the compose test fixture (issue 19,
// deploy/compose/standin/README.md). Grafana itself cannot be built here (its frontend needs npm and
// its server a large cgo build), so this small server honours only what compose and the harness use
// of the official image: port 3000, GET /api/health ({"database":"ok"}), the admin login
// (GF_SECURITY_ADMIN_USER / GF_SECURITY_ADMIN_PASSWORD, HTTP basic auth), anonymous viewers
// (GF_AUTH_ANONYMOUS_ENABLED), and the provisioning folder compose mounts: GET /api/search lists the
// dashboards of every file provider under $GF_PATHS_PROVISIONING/dashboards, GET /api/datasources the
// data sources under $GF_PATHS_PROVISIONING/datasources. Every page says it is a stand-in.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/config/secret"
)

// Config is the part of Grafana's configuration the stand-in reads, from the official image's
// GF_<SECTION>_<KEY> variables.
type Config struct {
	Server struct {
		HTTPPort int `help:"port to listen on (all interfaces)"`
	}
	Security struct {
		AdminUser     string       `help:"the admin login"`
		AdminPassword secret.Value `help:"the admin password"`
	}
	Auth struct {
		Anonymous struct {
			Enabled bool   `help:"let requests without a login see the pages as OrgRole"`
			OrgRole string `help:"role of anonymous requests"`
		}
	}
	Paths struct {
		Provisioning string `help:"folder of the provisioning files (dashboards/, datasources/)"`
	}
}

func defaultConfig() Config {
	var c Config
	c.Server.HTTPPort = 3000
	c.Security.AdminUser = "admin"
	c.Security.AdminPassword = "admin"
	c.Auth.Anonymous.OrgRole = "Viewer"
	c.Paths.Provisioning = "/etc/grafana/provisioning"
	return c
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println("grafana stand-in for " + grafanaVersion)
		return
	}
	cfg := defaultConfig()
	if err := config.FromEnv(&cfg, "GF", os.LookupEnv); err != nil {
		log.Error("config", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := serve(ctx, cfg, log)
	stop()
	if err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	srv := &http.Server{
		Addr:              net.JoinHostPort("", strconv.Itoa(cfg.Server.HTTPPort)),
		Handler:           newHandler(cfg),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("grafana stand-in listening", "addr", srv.Addr, "of", grafanaVersion,
		"anonymous", cfg.Auth.Anonymous.Enabled, "provisioning", cfg.Paths.Provisioning)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
