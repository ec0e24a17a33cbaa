package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/loadtest"
	"github.com/shopmesh/shopmesh/loadtest/chaos"
)

// ciScenarios is the short campaign of `make chaos-ci`.
const ciScenarios = "R1,R4,R6,R10"

// run parses the flags and runs the campaign; failed is true when a scenario failed.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (failed bool, err error) {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		root      = fs.String("root", "", "repository root (default: found from the working directory up)")
		infraEnv  = fs.String("infra", "", "env file of the real servers (default <root>/.run/infra.env); the campaign kills and restarts them")
		scenarios = fs.String("scenarios", "all", "comma-separated scenario ids (R1,R2,R3,R4,R6,R7,R9,R10,R11,R12) or all")
		rate      = fs.Float64("rate", 30, "orders per second, open loop")
		warmup    = fs.Duration("warmup", 20*time.Second, "load before the fault")
		fault     = fs.Duration("fault", 0, "fault length (default: each scenario's own, 20-60s)")
		recovery  = fs.Duration("recovery", 40*time.Second, "load after the fault is healed")
		settle    = fs.Duration("settle", 2*time.Minute, "bound on the wait for no pending order, no unsent outbox row and no consumer lag")
		out       = fs.String("out", "", "report directory (default <root>/loadtest/out/chaos)")
		ci        = fs.Bool("ci", false, "the short CI campaign: -scenarios "+ciScenarios+" -rate 20 -warmup 10s -fault 20s -recovery 20s -settle 60s (explicit flags win)")
		list      = fs.Bool("list", false, "list the scenarios and exit")
		verbose   = fs.Bool("v", false, "log what the stack does (start, stop of each instance)")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, nil
		}
		return false, err
	}
	if fs.NArg() > 0 {
		return false, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if *list {
		for _, s := range chaos.Scenarios() {
			fmt.Fprintf(stdout, "%-4s %s\n", s.ID, s.Title)
		}
		return false, nil
	}
	if *ci {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("scenarios", func() { *scenarios = ciScenarios })
		def("rate", func() { *rate = 20 })
		def("warmup", func() { *warmup = 10 * time.Second })
		def("fault", func() { *fault = 20 * time.Second })
		def("recovery", func() { *recovery = 20 * time.Second })
		def("settle", func() { *settle = time.Minute })
	}
	scs, err := chaos.Select(*scenarios)
	if err != nil {
		return false, err
	}
	if *rate <= 0 || *warmup <= 0 || *recovery <= 0 || *fault < 0 || *settle <= 0 {
		return false, errors.New("-rate, -warmup, -recovery and -settle must be > 0, -fault >= 0")
	}
	if *root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return false, err
		}
		if *root, err = localstack.FindRoot(wd); err != nil {
			return false, err
		}
	}
	if *infraEnv == "" {
		*infraEnv = filepath.Join(*root, ".run", "infra.env")
	}
	if *out == "" {
		*out = filepath.Join(*root, "loadtest", "out", "chaos")
	}
	inf, err := localstack.ReadInfraEnv(*infraEnv)
	if err != nil {
		return false, err
	}
	// The campaign's own Kafka clients: the admin's credentials of an authenticating set (make chaos
	// sources the infra env file).
	auth, err := loadtest.ReadBrokerAuth(os.LookupEnv)
	if err != nil {
		return false, err
	}
	ctl := &chaos.InfraCtl{Root: *root, EnvFile: *infraEnv, Infra: inf}
	defer ctl.Release()
	for _, s := range scs {
		for _, c := range s.Servers {
			if err := ctl.Check(c); err != nil {
				return false, fmt.Errorf("scenario %s kills %s: %w", s.ID, c, err)
			}
		}
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(stderr, nil))
	}
	cmd := "chaos " + strings.Join(args, " ")
	fmt.Fprintf(stdout, "chaos campaign: %d scenario(s), %.0f orders/s, warm-up %v, fault %v, recovery %v; servers from %s; report in %s\n",
		len(scs), *rate, *warmup, orOwn(*fault), *recovery, *infraEnv, *out)
	rep := chaos.Run(ctx, chaos.Options{
		Root: *root, InfraEnv: *infraEnv, Infra: inf, KafkaSASL: auth.Kafka, OutDir: *out, Rate: *rate,
		Warmup: *warmup, Fault: *fault, Recovery: *recovery, SettleTimeout: *settle,
		Ctl: ctl.Do, Progress: stdout, Logger: logger, Command: cmd,
	}, scs)
	if err := rep.Write(*out); err != nil {
		return true, fmt.Errorf("report: %w", err)
	}
	fmt.Fprintf(stdout, "\n%s\nreport: %s/report.{md,json,html}\n", rep.Markdown(), *out)
	if ctx.Err() != nil {
		return true, errors.New("interrupted")
	}
	return rep.Failed(), nil
}

func orOwn(d time.Duration) string {
	if d == 0 {
		return "per scenario"
	}
	return d.String()
}
