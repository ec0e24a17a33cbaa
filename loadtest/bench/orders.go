package bench

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
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
	oc := RunCase(ctx, closed, r, log)
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
	fmt.Fprintf(log, "  CPU per order by process (closed loop, warm-up included): %s\n", strings.Join(split, ", "))
	if maxRate < 2 {
		return nil, "", fmt.Errorf("orders %s: %.1f orders/s closed loop; see the stack logs", label, maxRate)
	}
	rate := maxRate / 2
	name := fmt.Sprintf("Orders/%s/open/rate=%.0f", label, rate)
	fmt.Fprintf(log, "== %s (50%% of %.0f orders/s) for %v\n", name, maxRate, 4*r.Each)
	st := OpenLoop(ctx, s.PlaceOrder, rate, 4*r.Each, s.Pids)
	fmt.Fprintf(log, "  %s: %d orders, %d errors, p50 %.2f ms, p99 %.2f ms, max %.2f ms, cpu %.0f µs/order\n",
		name, st.Ops, st.Errors, ms(st.P50), ms(st.P99), ms(st.Max), st.CPUPerOp()/1e3)
	oo := Outcome{Case: name, Order: []string{"open"}, Stats: map[string][]Stats{"open": {st}}}
	line := fmt.Sprintf("\nCPU per order by process (%s, closed loop): %s\n", label, strings.Join(split, ", ")) + fmt.Sprintf("orders (%s): max sustained %.0f orders/s closed loop (conc %d, median of %d rounds); "+
		"open loop at %.0f/s: p50 %.2f ms, p99 %.2f ms, errors %d/%d (%.3f%%), CPU %.0f µs/order (all stack processes)",
		label, maxRate, ordersConc, r.N, rate, ms(st.P50), ms(st.P99), st.Errors, st.Ops,
		100*float64(st.Errors)/float64(max(1, st.Ops)), st.CPUPerOp()/1e3)
	return []Outcome{oc, oo}, line, nil
}

// PostgresEnv creates one fresh database per service on the server of dsn and returns the stack's
// ServiceEnv pointing order, inventory and payment at them and at the Kafka brokers, plus a function
// dropping the databases.
func PostgresEnv(ctx context.Context, dsn, kafka string) (map[string][]string, func(), error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: %w", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, nil, err
	}
	env := map[string][]string{}
	var dbs []string
	for _, svc := range []string{localstack.Order, localstack.Inventory, localstack.Payment} {
		db := fmt.Sprintf("bench_%s_%d", svc, os.Getpid())
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+db); err != nil {
			_ = conn.Close(ctx)
			return nil, nil, fmt.Errorf("create database %s: %w", db, err)
		}
		dbs = append(dbs, db)
		su := *u
		su.Path = "/" + db
		env[svc] = []string{strings.ToUpper(svc) + "_DSN=" + su.String(), "KAFKA_BROKERS=" + kafka}
	}
	env[localstack.Gateway] = []string{"KAFKA_BROKERS=" + kafka}
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, db := range dbs {
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
		}
		_ = conn.Close(ctx)
	}
	return env, drop, nil
}
