// Package service is the one shape every shopmesh service's main has: a Spec (name, config defaults,
// migrations, authorization rules) and a Wire function, and the platform does the rest.
//
//	func main() {
//		service.Main(service.Spec[config.Config]{
//			Name: "payment", Summary: "accounts, authorizations and captures",
//			Defaults: config.Default, Migrations: migrations.FS, Wire: wire,
//		})
//	}
//
// Main parses the command line (serve, migrate, check-config, healthcheck, -h), loads the
// configuration once (<NAME>_* variables; shared ones such as KAFKA_BROKERS through aliases), builds
// the logger (JSON, `service` set once) and the Platform, migrates and opens the database, then calls
// Wire, which builds the service and registers on the *Service its server (GRPC or HTTP), its workers
// (relays, consumers, feeds, recovery loops: Go) and what must be closed (OnStop).
//
// The lifecycle is the platform's: workers start before the server serves and stop after its drain
// (so calls finishing during the drain still get their events out); a worker that fails stops the
// server and the process exits with its error; streams end when the drain reaches them (see
// platform.Serve); closers run last, in reverse order of registration.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/authz"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/healthcheck"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/telemetry"
)

// StartTimeout bounds start-up: migrations, opening the database and Wire (topics, streams, seeding).
const StartTimeout = 30 * time.Second

// Spec describes a service to Main and Run. C is the service's configuration: a struct that embeds
// config.Config (and config.Database when Migrations is set, config.Brokers when it uses the brokers)
// and has a Validate method naming the field of every problem.
type Spec[C any] struct {
	// Name is the service's name: its binary, its logs' `service`, its env prefix (upper case: ORDER_).
	Name string
	// Summary is one line saying what the service does (printed by -h).
	Summary string
	// Defaults returns the configuration of a profile before the environment is applied.
	Defaults func(config.Profile) C
	// Migrations is the service's own schema (NNNN_name.up.sql / .down.sql at the root), applied after
	// the platform's outbox and inbox schemas (migrate.UpAll); nil: the service has no database.
	Migrations fs.FS
	// Policy says who may call each method of the service's gRPC API (deny by default).
	Policy authz.Rules
	// Wire builds the service on s: see Service. ctx bounds start-up (StartTimeout); long-lived work
	// gets its own context from Service.Go.
	Wire func(ctx context.Context, s *Service, cfg C) error
	// Healthcheck is the `healthcheck` command; nil asks the gRPC health service of the running server
	// (Config.ListenAddr, with the configured mTLS identity).
	Healthcheck func(ctx context.Context, cfg C) error
	// Backends links discovery and config-center backends that live in modules of their own, so their
	// client libraries are in this binary only when listed: `[]platform.Backend{nacos.Backend()}`
	// (github.com/shopmesh/shopmesh/pkg/platform/contrib/nacos) makes <P>_REGISTRY_BACKEND=nacos and
	// <P>_CONFIG_CENTER_BACKEND=nacos work; static and dns are built in. check-config and serve refuse a
	// backend the binary does not link.
	Backends []platform.Backend
	// Options are extra platform options (tests).
	Options []platform.Option
}

// Env is what a run reads from its process.
type Env struct {
	// Lookup reads one environment variable (os.LookupEnv).
	Lookup config.Lookup
	// Environ is the whole environment (os.Environ), for check-config to find unknown variables.
	Environ []string
	// Stdout receives the logs and the commands' output.
	Stdout io.Writer
}

// configOf is the constraint of a service config: a pointer to it reaches the platform part and
// validates the whole.
type configOf[C any] interface {
	*C
	Base() *config.Config
	Validate() error
}

// Main runs the service as a process: SIGINT or SIGTERM starts the graceful stop; an error is printed
// and exits 1.
func Main[C any, PC configOf[C]](spec Spec[C]) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := Run[C, PC](ctx, spec, os.Args[1:], Env{Lookup: os.LookupEnv, Environ: os.Environ(), Stdout: os.Stdout})
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", spec.Name, err)
		os.Exit(1)
	}
}

// Run is Main without the process: it runs the command in args (the arguments after the program
// name) and, for serve, blocks until ctx ends (then it stops gracefully and returns nil) or a part of
// the service fails.
func Run[C any, PC configOf[C]](ctx context.Context, spec Spec[C], args []string, env Env) error {
	if spec.Name == "" || spec.Defaults == nil || spec.Wire == nil {
		return errors.New("service: Spec needs Name, Defaults and Wire")
	}
	if env.Lookup == nil {
		env.Lookup = func(string) (string, bool) { return "", false }
	}
	if env.Stdout == nil {
		env.Stdout = io.Discard
	}
	cmd, rest := "serve", args
	if len(args) > 0 {
		cmd, rest = args[0], args[1:]
	}
	prefix := Prefix(spec.Name)
	switch cmd {
	case "-h", "-help", "--help", "help":
		return usage(spec, prefix, env)
	case "check-config":
		defaults := spec.Defaults(listedProfile(prefix, env.Lookup))
		// Every variable the service reads: its own and the shared ones it takes as aliases (KAFKA_BROKERS).
		var keys []string
		for _, v := range config.Vars(&defaults, prefix) {
			keys = append(keys, v.Name)
			if v.Alias != "" {
				keys = append(keys, v.Alias)
			}
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
		if len(rest) == 0 {
			rest = env.Environ
		}
		return config.CheckCommand(rest, prefix, keys, func() error {
			cfg, err := config.Load[C, PC](prefix, env.Lookup, spec.Defaults)
			if err != nil {
				return err
			}
			return platform.CheckBackends(*PC(&cfg).Base(), spec.Backends...)
		}, env.Stdout)
	case "serve", "migrate", "healthcheck":
	default:
		return fmt.Errorf("unknown command %q (want serve, migrate, check-config or healthcheck; -h lists them)", cmd)
	}
	if cmd == "serve" && len(rest) > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", rest)
	}
	cfg, err := config.Load[C, PC](prefix, env.Lookup, spec.Defaults)
	if err != nil {
		return err
	}
	base := PC(&cfg).Base()
	// The config center may change the level at run time (log_level in its documents). Lines logged
	// inside a request (a span in the ctx) carry trace_id and span_id.
	level := new(slog.LevelVar)
	if l, err := base.Level(); err == nil {
		level.Set(l)
	}
	logger := slog.New(telemetry.LogHandler(slog.NewJSONHandler(env.Stdout, &slog.HandlerOptions{Level: level}))).
		With("service", base.Service)
	switch cmd {
	case "healthcheck":
		if len(rest) > 0 {
			return fmt.Errorf("healthcheck takes no arguments, got %q", rest)
		}
		if spec.Healthcheck != nil {
			return spec.Healthcheck(ctx, cfg)
		}
		return healthcheck.Service(ctx, *base)
	case "migrate":
		dsn, err := databaseDSN(spec, any(PC(&cfg)))
		if err != nil {
			return err
		}
		if len(rest) == 1 && rest[0] == "up" {
			mctx, cancel := context.WithTimeout(ctx, StartTimeout)
			defer cancel()
			return migrate.UpAll(mctx, dsn, spec.Migrations, migrate.Options{Logger: logger})
		}
		return migrate.Command(ctx, dsn, spec.Migrations, migrate.Options{Logger: logger}, rest, env.Stdout)
	}
	// The process's garbage collection target (<P>_GC_PERCENT, replacing GOGC): serving only.
	debug.SetGCPercent(base.GCPercent)
	opts := append([]platform.Option{platform.WithLogLevel(level), platform.WithBackends(spec.Backends...)}, spec.Options...)
	if spec.Policy != nil {
		opts = append(opts, platform.WithPolicy(spec.Policy))
	}
	p, err := platform.New(ctx, *base, logger, opts...)
	if err != nil {
		return err
	}
	defer func() { _ = p.Close() }()
	s := &Service{name: spec.Name, platform: p, logger: logger, base: *base}
	defer s.close()
	if spec.Migrations != nil {
		dsn, err := databaseDSN(spec, any(PC(&cfg)))
		if err != nil {
			return err
		}
		if err := s.openDatabase(ctx, dsn, spec.Migrations); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, StartTimeout)
	err = spec.Wire(wctx, s, cfg)
	cancel()
	if err != nil {
		return err
	}
	return s.serve(ctx)
}

// Prefix is the environment prefix of a service name: "order" → "ORDER", "stock-sync" → "STOCK_SYNC".
func Prefix(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// listedProfile is the profile whose defaults -h and check-config -keys list: the one <prefix>_PROFILE
// selects (config.Load's rule), or dev's when none (or an unknown one) is, since listing the variables
// must work before a profile is chosen. Only listing: serve, migrate, healthcheck and check-config itself
// refuse to run without a profile (config.Load).
func listedProfile(prefix string, lookup config.Lookup) config.Profile {
	if p, err := config.SelectedProfile(prefix, lookup); err == nil {
		return p
	}
	return config.Dev
}

// databaseDSN is the DSN of a config that embeds config.Database.
func databaseDSN[C any](spec Spec[C], cfg any) (string, error) {
	db, ok := cfg.(interface{ DatabaseDSN() string })
	if spec.Migrations == nil || !ok {
		return "", fmt.Errorf("%s has no database (no migrations, or its config does not embed config.Database)", spec.Name)
	}
	return db.DatabaseDSN(), nil
}

// usage is -h: the commands, then every environment variable with its default and meaning.
func usage[C any](spec Spec[C], prefix string, env Env) error {
	profile := listedProfile(prefix, env.Lookup)
	defaults := spec.Defaults(profile)
	w := env.Stdout
	fmt.Fprintf(w, "%s — %s\n\nUsage:\n", spec.Name, spec.Summary)
	fmt.Fprintf(w, "  %s [serve]            run the service until SIGINT/SIGTERM, then drain and stop\n", spec.Name)
	if spec.Migrations != nil {
		fmt.Fprintf(w, "  %s migrate up         apply the outbox, inbox and %s schemas\n", spec.Name, spec.Name)
		fmt.Fprintf(w, "  %s migrate down N | version | force V   on the %s schema\n", spec.Name, spec.Name)
	}
	fmt.Fprintf(w, "  %s check-config [-keys]   validate the environment; fail on unknown %s_* variables (-keys lists them)\n", spec.Name, prefix)
	fmt.Fprintf(w, "  %s healthcheck        exit 0 when the running server reports SERVING (container healthchecks)\n", spec.Name)
	fmt.Fprintf(w, "  %s -h                 this help\n\n", spec.Name)
	fmt.Fprintf(w, "Environment (defaults of profile %q; %s_PROFILE must be set, to dev (what make run uses), test, compose, k8s or prod):\n", profile, prefix)
	vars := config.Vars(&defaults, prefix)
	for i, v := range vars {
		if v.Name == prefix+"_PROFILE" {
			vars[i].Default, _ = env.Lookup(v.Name) // no default: what is set, or nothing
		}
	}
	return config.WriteVars(w, vars)
}
