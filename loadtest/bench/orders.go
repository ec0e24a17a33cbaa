package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shopmesh/shopmesh/deploy/localstack"
)

// ordersConc is the closed-loop concurrency used to find the maximum sustained order rate.
const ordersConc = 32

// Orders measures order placement end to end (gateway → order → inventory → payment, outbox and
// events): the maximum sustained rate closed loop (r.N rounds of r.Each at concurrency 32, median),
// then an open-loop run at half that rate for 4 × r.Each, reporting p50/p99 and the error rate.
func Orders(ctx context.Context, s *Stack, label string, r Rounds, log io.Writer) ([]Outcome, string, error) {
	closed := Case{Name: "Orders/" + label + "/closed/conc=32", Conc: ordersConc,
		Variants: []Variant{{Name: "max", Op: s.PlaceOrder, Pids: s.Pids}}}
	fmt.Fprintf(log, "== %s\n", closed.Name)
	before := map[int]time.Duration{}
	for _, p := range s.Pids {
		before[p] = procCPU(p)
	}
	machine0, infra0 := machineCPU(), infraCPU(s.Infra)
	// The profile covers the warm-up and the measured rounds.
	waitProfiles := s.ProfileProcs(ctx, label, r.Warmup+time.Duration(r.N)*r.Each)
	oc := RunCase(ctx, closed, r, log)
	if err := waitProfiles(); err != nil {
		fmt.Fprintf(log, "  profiles: %v\n", err)
	} else if s.ProfileDir != "" {
		fmt.Fprintf(log, "  CPU profiles of every process: %s/%s-*.pprof (go tool pprof -top <file>)\n", s.ProfileDir, label)
	}
	maxRate := Summarize(oc)[0].QPS
	ops := 0
	for _, st := range oc.Stats["max"] {
		ops += st.Ops
	}
	var split []string
	for _, p := range s.Pids {
		if d := procCPU(p) - before[p]; d > 0 {
			// Includes the warm-up: an upper bound per order.
			split = append(split, fmt.Sprintf("%s %.0f µs", s.Procs[p], float64(d)/float64(max(1, ops))/1e3))
		}
	}
	for _, name := range []string{"postgres", "kafka"} {
		if pid, ok := s.Infra[name]; ok {
			if d := treeCPU(pid) - infra0[name]; d > 0 {
				split = append(split, fmt.Sprintf("%s server %.0f µs", name, float64(d)/float64(max(1, ops))/1e3))
			}
		}
	}
	split = append(split, fmt.Sprintf("whole machine %.0f µs", float64(machineCPU()-machine0)/float64(max(1, ops))/1e3))
	fmt.Fprintf(log, "  CPU per order by process (closed loop, warm-up included): %s\n", strings.Join(split, ", "))
	if maxRate < 2 {
		return nil, "", fmt.Errorf("orders %s: %.1f orders/s closed loop; see the stack logs", label, maxRate)
	}
	rate := maxRate / 2
	if s.OpenRate > 0 {
		rate = s.OpenRate
	}
	// At the closed loop's maximum the request path outruns the consumers and relays: the open loop
	// starts once the backlog is worked off, or it would measure that work's CPU and queueing rather
	// than its own rate's.
	waited, quiet := settle(ctx, s, settleLimit)
	fmt.Fprintf(log, "  the stack settled %.1f s after the closed loop%s\n", waited.Seconds(),
		map[bool]string{true: "", false: " (gave up: still busy)"}[quiet])
	name := fmt.Sprintf("Orders/%s/open/rate=%.0f", label, rate)
	fmt.Fprintf(log, "== %s (%.0f%% of %.0f orders/s) for %v\n", name, 100*rate/maxRate, maxRate, 4*r.Each)
	waitProfiles = s.ProfileProcs(ctx, label+"-open", 4*r.Each)
	machine0 = machineCPU()
	for _, p := range s.Pids {
		before[p] = procCPU(p)
	}
	st := OpenLoop(ctx, s.PlaceOrder, rate, 4*r.Each, s.Pids)
	busy := machineBusy(machineCPU()-machine0, st.Wall)
	var openSplit []string
	for _, p := range s.Pids {
		openSplit = append(openSplit, fmt.Sprintf("%s %.0f%%", s.Procs[p], 100*machineBusy(procCPU(p)-before[p], st.Wall)))
	}
	if err := waitProfiles(); err != nil {
		fmt.Fprintf(log, "  profiles: %v\n", err)
	}
	fmt.Fprintf(log, "  %s: %d orders, %d errors, p50 %.2f ms, p99 %.2f ms, max %.2f ms, cpu %.0f µs/order\n",
		name, st.Ops, st.Errors, ms(st.P50), ms(st.P99), ms(st.Max), st.CPUPerOp()/1e3)
	// Half the closed-loop maximum need not leave the machine half idle: per-order CPU rises when
	// batches (relays, consumers) get smaller, and other programs share the cores. A p99 measured on
	// a machine this busy is mostly time spent waiting for a core.
	fmt.Fprintf(log, "  machine busy during the open loop: %.0f%% of %d cores (this process and the stack: %.0f%%; %s)\n",
		100*busy, runtime.NumCPU(), 100*machineBusy(st.CPU, st.Wall), strings.Join(openSplit, ", "))
	oo := Outcome{Case: name, Order: []string{"open"}, Stats: map[string][]Stats{"open": {st}}}
	line := fmt.Sprintf("\nCPU per order by process (%s, closed loop): %s\n", label, strings.Join(split, ", ")) + fmt.Sprintf("orders (%s): max sustained %.0f orders/s closed loop (conc %d, median of %d rounds); "+
		"open loop at %.0f/s: p50 %.2f ms, p99 %.2f ms, errors %d/%d (%.3f%%), CPU %.0f µs/order (all stack processes), "+
		"machine %.0f%% busy; the closed loop's backlog took %.1f s to settle",
		label, maxRate, ordersConc, r.N, rate, ms(st.P50), ms(st.P99), st.Errors, st.Ops,
		100*float64(st.Errors)/float64(max(1, st.Ops)), st.CPUPerOp()/1e3, 100*busy, waited.Seconds())
	return []Outcome{oc, oo}, line, nil
}

// settleLimit bounds how long the order cases wait for the stack to settle between their loops.
const settleLimit = 90 * time.Second

// settle waits, up to limit, until the stack's processes, its servers (s.Infra, with their children)
// and this process (the load generator, and the embedded brokers when it hosts them) together use
// less than a fifth of one core over half a second; it returns how long it waited and whether they
// got that quiet.
func settle(ctx context.Context, s *Stack, limit time.Duration) (time.Duration, bool) {
	const (
		window = 500 * time.Millisecond
		quiet  = 0.2 // of one core
	)
	cpu := func() time.Duration {
		d := procCPU(os.Getpid())
		for _, p := range s.Pids {
			d += procCPU(p)
		}
		for _, pid := range s.Infra {
			d += treeCPU(pid)
		}
		return d
	}
	start := time.Now()
	for time.Since(start) < limit {
		c0, t0 := cpu(), time.Now()
		select {
		case <-ctx.Done():
			return time.Since(start), false
		case <-time.After(window):
		}
		if float64(cpu()-c0) < quiet*float64(time.Since(t0)) {
			return time.Since(start), true
		}
	}
	return time.Since(start), false
}

// machineBusy is cpu spent over wall as a fraction of all the machine's cores.
func machineBusy(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return cpu.Seconds() / wall.Seconds() / float64(runtime.NumCPU())
}

// PGStack is one fresh database per service on a PostgreSQL server, for the stack's ServiceEnv.
type PGStack struct {
	// Env points order, inventory and payment at their databases and everything at the Kafka brokers.
	Env  map[string][]string
	conn *pgx.Conn
	dbs  map[string]string // service → database
	// copies are the pg-ceiling case's copies of dbs (dropped with them).
	copies []string
	base   *url.URL // the server's URL (dsn)
}

// PostgresEnv creates one fresh database per service on the server of dsn (bench_<svc>_<pid>).
func PostgresEnv(ctx context.Context, dsn, kafka string) (*PGStack, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		_ = conn.Close(ctx)
		return nil, err
	}
	p := &PGStack{Env: map[string][]string{}, conn: conn, dbs: map[string]string{}, base: u}
	for _, svc := range []string{localstack.Order, localstack.Inventory, localstack.Payment} {
		db := fmt.Sprintf("bench_%s_%d", svc, os.Getpid())
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			p.Drop()
			return nil, fmt.Errorf("create database %s: %w", db, err)
		}
		p.dbs[svc] = db
		su := *u
		su.Path = "/" + db
		p.Env[svc] = []string{strings.ToUpper(svc) + "_DSN=" + su.String(), "KAFKA_BROKERS=" + kafka}
	}
	p.Env[localstack.Gateway] = []string{"KAFKA_BROKERS=" + kafka}
	return p, nil
}

// copyDB creates a copy of svc's database (CREATE DATABASE … TEMPLATE: nobody may be connected to it,
// so the stack must have stopped) and returns its name and URL; Drop drops it.
func (p *PGStack) copyDB(ctx context.Context, svc string) (string, string, error) {
	src, ok := p.dbs[svc]
	if !ok {
		return "", "", fmt.Errorf("no database for %s", svc)
	}
	db := "ceil_" + src
	if _, err := p.conn.Exec(ctx, "CREATE DATABASE "+db+" TEMPLATE "+src); err != nil {
		return "", "", fmt.Errorf("copy %s: %w", src, err)
	}
	p.copies = append(p.copies, db)
	u := *p.base
	u.Path = "/" + db
	return db, u.String(), nil
}

// Drop drops the databases and closes the connection.
func (p *PGStack) Drop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, db := range p.copies {
		_, _ = p.conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	}
	for _, db := range p.dbs {
		_, _ = p.conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
	}
	_ = p.conn.Close(ctx)
}

// DBStats is PostgreSQL's own count of committed transactions and of rows written (inserted + updated
// + deleted) per service database, from pg_stat_database.
type DBStats map[string][2]int64

// Stats reads DBStats now. PostgreSQL publishes these counters with a delay of up to a second
// (stats_fetch_consistency, PGSTAT_MIN_INTERVAL); callers wait before the final read.
func (p *PGStack) Stats(ctx context.Context) (DBStats, error) {
	out := DBStats{}
	for svc, db := range p.dbs {
		var x, w int64
		if err := p.conn.QueryRow(ctx, `SELECT xact_commit, tup_inserted + tup_updated + tup_deleted
			FROM pg_stat_database WHERE datname = $1`, db).Scan(&x, &w); err != nil {
			return nil, fmt.Errorf("pg_stat_database %s: %w", db, err)
		}
		out[svc] = [2]int64{x, w}
	}
	return out, nil
}

// Orders counts the orders in the order service's database.
func (p *PGStack) Orders(ctx context.Context) (int64, error) {
	cfg := p.conn.Config().Copy()
	cfg.Database = p.dbs[localstack.Order]
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer func() { _ = c.Close(ctx) }()
	var n int64
	err = c.QueryRow(ctx, `SELECT count(*) FROM orders`).Scan(&n)
	return n, err
}

// StmtStats are pg_stat_statements' cumulative calls and execution time per (service, statement), when
// the server loads the extension (deploy/infra/infra.sh does); nil otherwise.
type StmtStats map[[2]string]StmtStat

// StmtStat is one statement's cumulative figures.
type StmtStat struct {
	Calls  int64
	Rows   int64
	TimeMs float64
}

// Statements reads StmtStats now; an error when pg_stat_statements is not available.
func (p *PGStack) Statements(ctx context.Context) (StmtStats, error) {
	svcOf := map[string]string{}
	var dbs []string
	for svc, db := range p.dbs {
		svcOf[db] = svc
		dbs = append(dbs, db)
	}
	rows, err := p.conn.Query(ctx, `SELECT d.datname, s.query, sum(s.calls)::bigint, sum(s.rows)::bigint, sum(s.total_exec_time)
		FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
		WHERE d.datname = ANY($1) GROUP BY 1, 2`, dbs)
	if err != nil {
		return nil, fmt.Errorf("pg_stat_statements: %w", err)
	}
	defer rows.Close()
	out := StmtStats{}
	for rows.Next() {
		var (
			db, q string
			st    StmtStat
		)
		if err := rows.Scan(&db, &q, &st.Calls, &st.Rows, &st.TimeMs); err != nil {
			return nil, err
		}
		out[[2]string{svcOf[db], q}] = st
	}
	return out, rows.Err()
}

// StatementReport formats statements per order by service and the statements with the most execution
// time between two StmtStats readings.
func StatementReport(before, after StmtStats, orders int64, top int) string {
	type row struct {
		svc, q string
		calls  int64
		ms     float64
	}
	var rs []row
	perSvc := map[string]int64{}
	var totalMs float64
	for k, a := range after {
		b := before[k]
		if a.Calls-b.Calls <= 0 {
			continue
		}
		r := row{k[0], k[1], a.Calls - b.Calls, a.TimeMs - b.TimeMs}
		rs = append(rs, r)
		perSvc[r.svc] += r.calls
		totalMs += r.ms
	}
	slices.SortFunc(rs, func(x, y row) int { return cmp.Compare(y.ms, x.ms) })
	n := float64(max(1, orders))
	var b strings.Builder
	all := perSvc[localstack.Order] + perSvc[localstack.Inventory] + perSvc[localstack.Payment]
	// BEGIN and COMMIT sent in a pipeline (sqldb.WithPgx: extended protocol) do not reach
	// pg_stat_statements; those sent by database/sql do.
	fmt.Fprintf(&b, "statements per order (pg_stat_statements; BEGIN/COMMIT included except a pipeline's): order %.1f, inventory %.1f, "+
		"payment %.1f, %.1f in all; execution time %.0f µs per order in all\n", float64(perSvc[localstack.Order])/n,
		float64(perSvc[localstack.Inventory])/n, float64(perSvc[localstack.Payment])/n, float64(all)/n, 1000*totalMs/n)
	for i, r := range rs {
		if i == top {
			break
		}
		q := strings.Join(strings.Fields(r.q), " ")
		if len(q) > 90 {
			q = q[:90] + "…"
		}
		fmt.Fprintf(&b, "  %-9s %5.2f/order %6.1f µs/call %5.1f%%  %s\n", r.svc, float64(r.calls)/n,
			1000*r.ms/float64(r.calls), 100*r.ms/max(totalMs, 1e-9), q)
	}
	return b.String()
}

// PerOrder formats (after − before) / orders per service: transactions and rows written per order.
func PerOrder(before, after DBStats, orders int64) string {
	var (
		parts []string
		tx    int64
	)
	for _, svc := range []string{localstack.Order, localstack.Inventory, localstack.Payment} {
		b, a := before[svc], after[svc]
		tx += a[0] - b[0]
		parts = append(parts, fmt.Sprintf("%s %.1f tx, %.1f rows", svc,
			float64(a[0]-b[0])/float64(max(1, orders)), float64(a[1]-b[1])/float64(max(1, orders))))
	}
	return strings.Join(parts, "; ") + fmt.Sprintf("; %.1f tx in all", float64(tx)/float64(max(1, orders)))
}
