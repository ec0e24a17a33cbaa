// Command loadtest runs the shopmesh load scenarios (ghz configs in loadtest/ghz for gRPC, open-loop
// HTTP against the gateway) against a target, prints a table and writes report.json and report.html.
// Without -gateway/-order it starts its own `make run` stack on free loopback ports and stops it after.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/loadtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		stop()
		os.Exit(1) //nolint:gocritic // exitAfterDefer: stop() ran on the line above
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	root := fs.String("root", ".", "repository root (holds go.work, proto/, loadtest/ghz/)")
	gateway := fs.String("gateway", "", "gateway base URL, e.g. http://127.0.0.1:8080 (empty with -order empty: start a stack)")
	order := fs.String("order", "", "order gRPC address")
	inventory := fs.String("inventory", "", "inventory gRPC address")
	payment := fs.String("payment", "", "payment gRPC address")
	stackFile := fs.String("stack", "", "read the target from a running stack's stack.json (make run writes .run/stack.json)")
	certs := fs.String("certs", "", "directory with ca.pem and <service>.pem/-key.pem (default <root>/.run/certs)")
	tlsMode := fs.String("tls", "auto", "gRPC transport: auto (probe a TLS handshake), on, off")
	scen := fs.String("scenarios", "all", "comma-separated scenario names (see -list)")
	list := fs.Bool("list", false, "print the scenarios and exit")
	dur := fs.Duration("duration", 0, "length of every scenario (0 = each scenario's own, ~3-8 s)")
	scale := fs.Float64("rate-scale", 1, "multiply every scenario's arrival rate")
	out := fs.String("out", "loadtest/out", "directory for report.json and report.html (relative to -root)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *list {
		for _, s := range loadtest.Scenarios() {
			fmt.Printf("%-24s %-4s %s\n", s.Name, s.Kind, s.Summary)
		}
		return nil
	}
	rootDir, err := localstack.FindRoot(*root)
	if err != nil {
		return err
	}
	scs, unknown := loadtest.Select(strings.Split(*scen, ","))
	if len(unknown) > 0 {
		return fmt.Errorf("unknown scenarios %v (see -list)", unknown)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	t := loadtest.Target{Root: rootDir, GatewayURL: *gateway, Order: *order, Inventory: *inventory, Payment: *payment}
	switch {
	case *stackFile != "":
		info, err := loadtest.ReadStackFile(underRoot(rootDir, *stackFile))
		if err != nil {
			return err
		}
		if t, err = loadtest.TargetFromInfo(rootDir, info); err != nil {
			return err
		}
	case t.GatewayURL == "" && t.Order == "":
		fmt.Fprintln(os.Stderr, "starting a stack on free loopback ports (builds the services first)...")
		t0 := time.Now()
		s, st, dir, err := loadtest.StartStack(ctx, loadtest.StackOptions{Root: rootDir, Env: os.Environ(), Logger: logger})
		if err != nil {
			return err
		}
		defer func() { s.Stop(); _ = os.RemoveAll(dir) }()
		fmt.Fprintf(os.Stderr, "stack up in %.1f s (gateway %s, TLS %v)\n", time.Since(t0).Seconds(), st.GatewayURL, st.TLS)
		t = st
	}
	if *certs != "" {
		t.CertsDir = underRoot(rootDir, *certs)
	} else if t.CertsDir == "" {
		t.CertsDir = rootDir + "/.run/certs"
	}
	switch *tlsMode {
	case "on":
		t.TLS = true
	case "off":
		t.TLS = false
	case "auto":
		if t.Order != "" && !t.TLS {
			t.TLS = loadtest.DetectTLS(t.Order, t.CertsDir)
		}
	default:
		return fmt.Errorf("-tls: want auto, on or off, got %q", *tlsMode)
	}

	rep, err := loadtest.Run(ctx, t, loadtest.Options{Scenarios: scs, Duration: *dur, RateScale: *scale, Progress: os.Stderr})
	if err != nil {
		return err
	}
	fmt.Println()
	loadtest.PrintTable(os.Stdout, rep.Results)
	outDir := *out
	if !strings.HasPrefix(outDir, "/") {
		outDir = rootDir + "/" + outDir
	}
	jp, hp, err := loadtest.WriteFiles(outDir, rep)
	if err != nil {
		return err
	}
	fmt.Printf("\n%s\n%s\n", jp, hp)
	return nil
}

// underRoot resolves a relative path against the working directory when it exists there, else against
// the repository root (make runs the harness from loadtest/, users name paths from the root).
func underRoot(root, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return filepath.Join(root, p)
}
