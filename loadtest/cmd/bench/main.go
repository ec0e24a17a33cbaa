// Command bench runs the side-by-side benchmarks behind `make bench`: interleaved A/B rounds after a
// warm-up, CPU time per request (getrusage, plus /proc of the stack's processes) first, QPS and p50/p99
// second. It writes Go-benchmark-format files per variant into -out (compare with `benchstat a.txt
// b.txt`), runs benchstat when it resolves, and prints a markdown summary for docs/BENCHMARKS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/loadtest"
	"github.com/shopmesh/shopmesh/loadtest/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if dir := os.Getenv(bench.HandshakeServerEnv); dir != "" {
		if err := bench.ServeHandshakes(ctx, dir); err != nil {
			fmt.Fprintln(os.Stderr, "bench handshake server:", err)
			stop()
			os.Exit(1) //nolint:gocritic // exitAfterDefer: stop() ran on the line above
		}
		return
	}
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	root := fs.String("root", ".", "repository root")
	casesFlag := fs.String("cases", "chain,validation,mtls,gateway,orders,orders-pg,pg-ceiling,outbox,outbox-real", "comma-separated: chain, validation (the server chain's validation stage off / valid request / invalid one), mtls, gateway, orders, orders-pg (needs -pg/-kafka), pg-ceiling (after orders-pg's run, which it implies: pgbench replays the run's statements per order on copies of its databases), outbox (embedded), outbox-real (-pg/-kafka/-nats)")
	rounds := fs.Int("rounds", 5, "measured rounds per case (each variant once per round, order rotating)")
	each := fs.Duration("each", 2*time.Second, "length of one variant's run in a round")
	warmup := fs.Duration("warmup", time.Second, "warm-up per variant before the rounds")
	out := fs.String("out", "loadtest/out", "output directory (relative to -root)")
	otlp := fs.String("otlp", os.Getenv("OTLP_ENDPOINT"), "OTLP gRPC endpoint: adds a chain variant exporting traces there (default $OTLP_ENDPOINT)")
	sample := fs.Float64("sample", 0.1, "trace sampling ratio of the traced chain variant (the prod profile's default)")
	dsn := fs.String("pg", os.Getenv("DATABASE_URL"), "PostgreSQL URL for orders-pg (one database per service is created: bench_<svc>_<pid>)")
	kafka := fs.String("kafka", os.Getenv("KAFKA_BROKERS"), "Kafka brokers for orders-pg")
	natsURL := fs.String("nats", os.Getenv("NATS_URL"), "NATS server for outbox-real (JetStream)")
	outboxEvents := fs.Int("outbox-events", 20000, "backlog drained by the outbox relay case")
	relayBatch := fs.Int("relay-batch", 0, "outbox relay batch size of the outbox cases (0: the relay's default)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (chain, mtls cases: client and server run here)")
	stackProfiles := fs.String("stack-profiles", "", "directory: save a CPU profile of every stack process (order, inventory, payment, gateway) over the closed-loop order rounds")
	openRate := fs.Float64("open-rate", 0, "orders/s of the order cases' open loop (default: half the closed-loop maximum)")
	skus := fs.Int("skus", 24, "catalogue size of the order cases: inventory seeds this many products and orders pick among them (the dev catalogue has 24)")
	drainLimit := fs.Duration("drain", 90*time.Second, "orders-pg: how long to wait after the load for the consumers to commit and capture every confirmed order before reading the per-order figures")
	replicas := fs.Int("replicas", 2, "inventory and payment instances of the stack cases (make run has 2)")
	pgbenchBin := fs.String("pgbench", "", "pgbench binary of pg-ceiling (default: PATH, then /usr/lib/postgresql/*/bin)")
	ceilingEach := fs.Duration("ceiling-each", 5*time.Second, "length of each pgbench run of pg-ceiling (whole seconds)")
	ceilingClients := fs.Int("ceiling-clients", 8, "pgbench clients per service database in pg-ceiling (≈ the connections a service keeps busy: sqldb pools hold up to 10)")
	ceilingMin := fs.Float64("ceiling-min", 0.02, "pg-ceiling replays statements with at least this many calls per order (rarer ones are background work)")
	runBenchstat := fs.Bool("benchstat", true, "run golang.org/x/perf/cmd/benchstat on the A/B files (go run; skipped when it does not resolve)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The outbox-real case's own Kafka and NATS clients: the admin's credentials of an authenticating set.
	auth, err := loadtest.ReadBrokerAuth(os.LookupEnv)
	if err != nil {
		return err
	}
	rootDir, err := localstack.FindRoot(*root)
	if err != nil {
		return err
	}
	outDir := *out
	if !filepath.IsAbs(outDir) {
		outDir = filepath.Join(rootDir, outDir)
	}
	if err := bench.Ensure(outDir); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	want := strings.Split(*casesFlag, ",")
	r := bench.Rounds{N: *rounds, Each: *each, Warmup: *warmup}
	started := time.Now()
	fmt.Printf("shopmesh bench %s, %s\n", started.UTC().Format(time.RFC3339), bench.Machine())
	fmt.Printf("rounds %d × %v per variant, warm-up %v\n\n", r.N, r.Each, r.Warmup)

	var outcomes []bench.Outcome
	var files [][]string
	record := func(o bench.Outcome) error {
		outcomes = append(outcomes, o)
		paths, err := bench.AppendFiles(outDir, bench.FileName(o.Case), o)
		files = append(files, paths)
		return err
	}
	runCases := func(cs []bench.Case) error {
		for _, c := range cs {
			fmt.Printf("== %s\n", c.Name)
			if err := record(bench.RunCase(ctx, c, r, os.Stdout)); err != nil {
				return err
			}
		}
		return nil
	}
	// Fresh result files for this run.
	for _, old := range must(filepath.Glob(filepath.Join(outDir, "*.txt"))) {
		_ = os.Remove(old)
	}

	var cl bench.Cleanup
	defer cl.Run()
	if slices.Contains(want, "chain") {
		cs, err := bench.ChainCases(ctx, &cl, *otlp, *sample)
		if err != nil {
			return err
		}
		if err := runCases(cs); err != nil {
			return err
		}
	}
	if slices.Contains(want, "validation") {
		c, err := bench.ValidationCase(ctx, &cl)
		if err != nil {
			return err
		}
		if err := runCases([]bench.Case{c}); err != nil {
			return err
		}
	}
	if slices.Contains(want, "mtls") {
		cs, err := bench.MTLSCases(ctx, &cl)
		if err != nil {
			return err
		}
		if err := runCases(cs); err != nil {
			return err
		}
	}
	var orderFigures []string
	if slices.Contains(want, "gateway") || slices.Contains(want, "orders") {
		fmt.Println("== starting the embedded stack (SQLite, kfake, embedded NATS) on free ports")
		s, err := bench.StartStack(ctx, &cl, rootDir, catalogueEnv(nil, *skus), *replicas)
		if err != nil {
			return err
		}
		fmt.Printf("   gateway %s, TLS %v, %d processes\n", s.Target.GatewayURL, s.Target.TLS, len(s.Pids))
		if slices.Contains(want, "gateway") {
			c, closeCase, err := bench.GatewayCase(s)
			if err != nil {
				return err
			}
			s.ProfileDir = *stackProfiles
			wait := s.ProfileProcs(ctx, "gateway-case", *warmup*2+time.Duration(*rounds)*2**each)
			err = runCases([]bench.Case{c})
			if perr := wait(); perr != nil {
				fmt.Printf("  profiles: %v\n", perr)
			}
			closeCase()
			if err != nil {
				return err
			}
		}
		if slices.Contains(want, "orders") {
			s.ProfileDir, s.OpenRate, s.SKUs = *stackProfiles, *openRate, *skus
			o, line, err := bench.Orders(ctx, s, "embedded"+stackSuffix(*replicas, *skus), r, os.Stdout)
			if err != nil {
				return err
			}
			for _, x := range o {
				if err := record(x); err != nil {
					return err
				}
			}
			orderFigures = append(orderFigures, line)
		}
	}
	if slices.Contains(want, "orders-pg") || slices.Contains(want, "pg-ceiling") {
		if *dsn == "" || *kafka == "" {
			fmt.Println("== orders-pg skipped: no -pg / -kafka (source .run/infra.env)")
		} else {
			pg, err := bench.PostgresEnv(ctx, *dsn, *kafka)
			if err != nil {
				return err
			}
			cl.Add(pg.Drop)
			fmt.Println("== starting the stack on PostgreSQL + Kafka")
			s, err := bench.StartStack(ctx, &cl, rootDir, catalogueEnv(pg.Env, *skus), *replicas)
			if err != nil {
				return err
			}
			s.ProfileDir, s.OpenRate, s.SKUs = *stackProfiles, *openRate, *skus
			s.Infra = bench.InfraPids(rootDir)
			n0, err0 := pg.Orders(ctx)
			st0, err1 := pg.Stats(ctx)
			stmts0, stmtErr := pg.Statements(ctx)
			o, line, err := bench.Orders(ctx, s, "postgres-kafka"+stackSuffix(*replicas, *skus), r, os.Stdout)
			if err != nil {
				return err
			}
			// The consumers settle what the load confirmed (commit, capture): their work belongs to the
			// orders measured, and a backlog left here would be the next run's. Then PostgreSQL publishes its
			// counters (up to a second later).
			if set, waited, err := pg.Drain(ctx, *drainLimit); err != nil {
				fmt.Printf("  drain: %v\n", err)
			} else {
				fmt.Printf("  consumers settled %s %.1f s after the load stopped%s\n", set, waited.Seconds(),
					map[bool]string{true: "", false: " (gave up: not all settled)"}[set.Done()])
			}
			time.Sleep(2 * time.Second)
			n1, err2 := pg.Orders(ctx)
			st1, err3 := pg.Stats(ctx)
			if err := errors.Join(err0, err1, err2, err3); err != nil {
				fmt.Printf("  pg_stat_database: %v\n", err)
			} else {
				per := fmt.Sprintf("PostgreSQL work per order (pg_stat_database, %d orders): %s", n1-n0, bench.PerOrder(st0, st1, n1-n0))
				fmt.Println("  " + per)
				line += "\n" + per
				var stmts1 bench.StmtStats
				if stmtErr == nil {
					if stmts1, stmtErr = pg.Statements(ctx); stmtErr == nil {
						rep := bench.StatementReport(stmts0, stmts1, n1-n0, 12)
						fmt.Print("  " + rep)
						line += "\n" + rep
					}
				} else {
					fmt.Printf("  no per-statement figures: %v\n", stmtErr)
				}
				if slices.Contains(want, "pg-ceiling") {
					if stmtErr != nil {
						fmt.Printf("== pg-ceiling skipped: no pg_stat_statements (%v)\n", stmtErr)
					} else {
						rep, err := pgCeiling(ctx, pg, s, stmts0, stmts1, st0, st1, n1-n0, bench.Summarize(o[0])[0].QPS,
							bench.CeilingConfig{PGBench: *pgbenchBin, Each: *ceilingEach, Clients: *ceilingClients, MinPerOrder: *ceilingMin, ScriptDir: outDir})
						if err != nil {
							return err
						}
						line += "\n" + rep
					}
				}
			}
			for _, x := range o {
				if err := record(x); err != nil {
					return err
				}
			}
			orderFigures = append(orderFigures, line)
		}
	}

	for _, mode := range []string{"outbox", "outbox-real"} {
		if !slices.Contains(want, mode) {
			continue
		}
		oc := bench.OutboxConfig{Events: *outboxEvents, Rate: 500, Duration: 4 * time.Second, BatchSize: *relayBatch}
		if mode == "outbox-real" {
			if *dsn == "" || *kafka == "" || *natsURL == "" {
				fmt.Println("== outbox-real skipped: no -pg / -kafka / -nats (source .run/infra.env)")
				continue
			}
			oc.PostgresURL, oc.Kafka, oc.NATSURL = *dsn, strings.Split(*kafka, ","), *natsURL
			oc.KafkaSASL, oc.NATSAuth = auth.Kafka, auth.NATS
		}
		fmt.Printf("== %s relay (kafka %v, nats %q, postgres %v; embedded when empty)\n", mode, oc.Kafka, oc.NATSURL, oc.PostgresURL != "")
		rs, err := bench.Outbox(ctx, oc, os.Stdout)
		if err != nil {
			// A real broker can be down or restarting (other tests restart them): report, go on.
			fmt.Printf("   %s failed: %v\n", mode, err)
			orderFigures = append(orderFigures, fmt.Sprintf("%s: failed: %v", mode, err))
		}
		for _, x := range rs {
			orderFigures = append(orderFigures, fmt.Sprintf("outbox %s: %.0f events/s draining %d, %.1f µs CPU/event in process; "+
				"commit-to-consume at %.0f/s: p50 %.2f ms, p99 %.2f ms, %d/%d received",
				x.Name, x.Throughput, oc.Events, float64(x.CPUPerEvt)/1e3, oc.Rate, float64(x.P50)/1e6, float64(x.P99)/1e6, x.Got, x.Sent))
		}
	}

	fmt.Printf("\n## Summary (medians over %d rounds; %s)\n\n", r.N, time.Since(started).Round(time.Second))
	bench.WriteSummary(os.Stdout, outcomes)
	for _, l := range orderFigures {
		fmt.Println(l)
	}
	var sum strings.Builder
	bench.WriteSummary(&sum, outcomes)
	for _, l := range orderFigures {
		sum.WriteString(l + "\n")
	}
	if err := os.WriteFile(filepath.Join(outDir, "summary.md"), []byte(sum.String()), 0o644); err != nil {
		return err
	}
	if *runBenchstat {
		for _, ps := range files {
			if len(ps) < 2 {
				continue
			}
			benchstat(outDir, ps)
		}
	}
	fmt.Printf("\nfiles in %s (compare with: go run golang.org/x/perf/cmd/benchstat@latest A.txt B.txt)\n", outDir)
	return nil
}

// pgCeiling stops the stack (its processes would compete with pgbench, and the database copies need
// its connections gone) and runs the pg-ceiling case on the run's statements.
func pgCeiling(ctx context.Context, pg *bench.PGStack, s *bench.Stack, before, after bench.StmtStats, st0, st1 bench.DBStats,
	orders int64, stackRate float64, cfg bench.CeilingConfig) (string, error) {
	if cfg.PGBench == "" {
		p, err := bench.FindPGBench()
		if err != nil {
			return "", err
		}
		cfg.PGBench = p
	}
	fmt.Printf("== pg-ceiling: stopping the stack, replaying its statements per order with %s\n", cfg.PGBench)
	started, load := time.Now(), bench.LoadAvg()
	s.Stop()
	res, err := bench.PGCeiling(ctx, pg, before, after, st0, st1, orders, stackRate, cfg, os.Stdout)
	if err != nil {
		return "", err
	}
	rep := strings.TrimRight(res.Report, "\n") + fmt.Sprintf(" (pg-ceiling took %s, load average %s → %s; scripts: %s/pg-ceiling-*.sql)",
		time.Since(started).Round(time.Second), load, bench.LoadAvg(), cfg.ScriptDir)
	fmt.Println(rep)
	return rep, nil
}

// benchstat runs benchstat on the files and saves its output next to them; it only warns when benchstat
// does not resolve (no module proxy).
func benchstat(dir string, files []string) {
	args := append([]string{"run", "golang.org/x/perf/cmd/benchstat@latest"}, baseNames(files)...)
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	outp, err := cmd.CombinedOutput()
	if err != nil {
		fmt.Printf("benchstat %v: %v\n%s\n", files, err, outp)
		return
	}
	stem := strings.TrimSuffix(filepath.Base(files[0]), ".txt")
	_ = os.WriteFile(filepath.Join(dir, "benchstat-"+stem+".txt"), outp, 0o644)
	fmt.Printf("\n$ benchstat %s\n%s", strings.Join(baseNames(files), " "), outp)
}

func baseNames(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = filepath.Base(p)
	}
	return out
}

func must[T any](v T, _ error) T { return v }

// stackSuffix labels order runs whose stack differs from make run's (two inventory and payment
// instances, 24 products).
func stackSuffix(replicas, skus int) string {
	out := ""
	if replicas != 2 && replicas > 0 {
		out += fmt.Sprintf("-%dx", replicas)
	}
	if skus != 24 && skus > 0 {
		out += fmt.Sprintf("-%dsku", skus)
	}
	return out
}

// catalogueEnv adds INVENTORY_SEED_PRODUCTS when the order cases use a catalogue other than the dev one.
func catalogueEnv(env map[string][]string, skus int) map[string][]string {
	if skus == 24 || skus <= 0 {
		return env
	}
	out := map[string][]string{}
	for k, v := range env {
		out[k] = append([]string(nil), v...)
	}
	out[localstack.Inventory] = append(out[localstack.Inventory], fmt.Sprintf("INVENTORY_SEED_PRODUCTS=%d", skus))
	return out
}
