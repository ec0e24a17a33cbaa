// Command k6check runs shopmesh's k6 scripts without k6 (loadtest/k6check): each script's setup(), its
// scenarios at their own rate for a bounded time, teardown() and its thresholds, against make run's
// stack. Without script arguments it runs every script of loadtest/k6 as its header command says
// (and checks that command); with them, each as `k6 run -e ... script` would. Without -base-url or
// -stack it starts make run's stack itself, on free ports, with make run's settings. Exit status 1 when
// a script fails.
package main

import (
	"context"
	"errors"
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
	"github.com/shopmesh/shopmesh/loadtest/k6check"
)

// errFailed reports that a script failed (its report is already printed).
var errFailed = errors.New("a k6 script failed")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "k6check:", err)
		stop()
		os.Exit(1) //nolint:gocritic // exitAfterDefer: stop() ran on the line above
	}
}

// envFlags collects repeated -e KEY=VALUE.
type envFlags map[string]string

func (e envFlags) String() string { return fmt.Sprint(map[string]string(e)) }

func (e envFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", s)
	}
	e[k] = v
	return nil
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("k6check", flag.ContinueOnError)
	env := envFlags{}
	root := fs.String("root", ".", "repository root (holds go.work and loadtest/k6)")
	baseURL := fs.String("base-url", "", "gateway to run against, e.g. http://127.0.0.1:8080 of a running make run (default: start make run's stack on free ports)")
	stackFile := fs.String("stack", "", "run against a running stack: its stack.json (make run writes .run/stack.json)")
	maxDur := fs.Duration("max-duration", 5*time.Second, "cap on each scenario's duration (its rate and VUs are the script's)")
	maxIter := fs.Int("max-iterations", 0, "cap on the iterations each scenario starts (0: none)")
	sleepScale := fs.Float64("sleep-scale", 0.1, "multiply sleep() by this")
	timing := fs.Bool("timing", false, "fail on crossed thresholds on durations too (on a quiet machine)")
	verbose := fs.Bool("v", false, "print the scripts' console output")
	fs.Var(env, "e", "KEY=VALUE for the scripts' __ENV, as k6 run -e (repeatable; wins over a header's)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: k6check [flags] [script.js ...]\n\nWithout scripts: every script of loadtest/k6 as its header command says. Flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	rootDir, err := localstack.FindRoot(*root)
	if err != nil {
		return err
	}
	opts := k6check.Options{Env: env, MaxDuration: *maxDur, MaxIterations: *maxIter, SleepScale: *sleepScale, Timing: *timing}
	if *verbose {
		opts.Log = os.Stderr
	}

	url := *baseURL
	switch {
	case url != "" && *stackFile != "":
		return errors.New("-base-url and -stack: give one")
	case *stackFile != "":
		path := *stackFile
		if !filepath.IsAbs(path) {
			path = filepath.Join(rootDir, path)
		}
		info, err := loadtest.ReadStackFile(path)
		if err != nil {
			return err
		}
		if url = info.GatewayURL; url == "" {
			return fmt.Errorf("%s: the stack has no gateway", path)
		}
	case url == "":
		fmt.Fprintln(os.Stderr, "starting make run's stack on free loopback ports (builds the services first)...")
		t0 := time.Now()
		logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		u, stop, err := k6check.StartStack(ctx, rootDir, os.Environ(), logger)
		if err != nil {
			return err
		}
		defer stop()
		url = u
		fmt.Fprintf(os.Stderr, "stack ready in %.1f s, gateway %s\n", time.Since(t0).Seconds(), url)
	}

	t0 := time.Now()
	var results []k6check.Result
	if fs.NArg() == 0 {
		if results, err = k6check.RunShipped(ctx, rootDir, url, opts); err != nil {
			return err
		}
	} else {
		for _, script := range fs.Args() {
			o := opts
			o.Env = map[string]string{"BASE_URL": url}
			for k, v := range env {
				o.Env[k] = v
			}
			res, err := k6check.Run(ctx, script, o)
			if err != nil {
				return err
			}
			results = append(results, res)
		}
	}
	failed := 0
	for _, r := range results {
		k6check.Print(os.Stdout, r)
		if !r.OK() {
			failed++
		}
	}
	fmt.Printf("scripts ran in %.1f s\n", time.Since(t0).Seconds())
	fmt.Printf("k6check: %d passed, %d failed\n", len(results)-failed, failed)
	if failed > 0 {
		return errFailed
	}
	return nil
}
