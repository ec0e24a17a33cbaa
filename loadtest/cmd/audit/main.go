// Command audit checks a settled shopmesh for lost, doubled or stuck orders, unconserved money and
// stock, holds left behind and dead letters nobody applied (package loadtest/audit), prints the report
// and exits 1 when an invariant does not hold (2 when the audit could not run).
//
//	go run ./loadtest/cmd/audit -stack .run/stack.json -dev-seed
//	go run ./loadtest/cmd/audit -order postgres://…/order_svc -inventory … -payment … -kafka 127.0.0.1:9092 -keys accepted.txt
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shopmesh/shopmesh/loadtest"
	"github.com/shopmesh/shopmesh/loadtest/audit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	order := fs.String("order", "", "order database: postgres://… or an SQLite file")
	inventory := fs.String("inventory", "", "inventory database")
	payment := fs.String("payment", "", "payment database")
	kafka := fs.String("kafka", "", "Kafka brokers, comma-separated: count and account for the *.dlq topics (empty: skip)")
	keys := fs.String("keys", "", "file of accepted idempotency keys, one per line ('-': stdin)")
	stack := fs.String("stack", "", "stack.json of make run / shopmesh-dev: takes the databases and brokers from it (flags still override)")
	devSeed := fs.Bool("dev-seed", false, "check every account against make run's opening balances (cust-0001…cust-1000: 10,000,000 cents; cust-broke: 0)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	timeout := fs.Duration("timeout", 2*time.Minute, "bound on the whole audit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := audit.Config{Order: *order, Inventory: *inventory, Payment: *payment, Timeout: *timeout}
	if *stack != "" {
		if err := fromStack(*stack, &cfg); err != nil {
			fmt.Fprintln(stderr, "audit:", err)
			return 2
		}
	}
	if *kafka != "" {
		cfg.Kafka = strings.Split(*kafka, ",")
	}
	auth, err := loadtest.ReadBrokerAuth(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, "audit:", err)
		return 2
	}
	cfg.KafkaSASL = auth.Kafka
	if *keys != "" {
		k, err := readKeys(*keys)
		if err != nil {
			fmt.Fprintln(stderr, "audit: keys:", err)
			return 2
		}
		cfg.AcceptedKeys = k
	}
	if *devSeed {
		cfg.OpeningBalances = audit.DevOpeningBalances()
	}
	r, err := audit.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			fmt.Fprintln(stderr, "audit:", err)
			return 2
		}
	} else {
		printReport(stdout, r)
	}
	if !r.OK() {
		return 1
	}
	return 0
}

func printReport(w io.Writer, r audit.Report) {
	fmt.Fprintln(w, r.Line())
	fmt.Fprintf(w, "checked %d accounts, %d SKUs; %d downstream rows of orders newer than the snapshot skipped\n",
		r.Accounts, r.SKUs, r.DownstreamIgnored)
	for _, v := range r.Violations {
		fmt.Fprintln(w, "  violation:", v)
	}
	if more := r.ViolationCount - len(r.Violations); more > 0 {
		fmt.Fprintf(w, "  … and %d more violations\n", more)
	}
	for _, n := range r.Notes {
		fmt.Fprintln(w, "  note:", n)
	}
	if r.OK() {
		fmt.Fprintln(w, "OK")
	} else {
		fmt.Fprintln(w, "FAILED")
	}
}

// stackInfo is the part of stack.json the audit reads.
type stackInfo struct {
	KafkaBrokers []string `json:"kafka_brokers"`
	DataDir      string   `json:"data_dir"`
	Infra        *struct {
		Databases map[string]string `json:"databases"`
	} `json:"infra"`
}

// fromStack fills the DSNs and brokers cfg does not have yet from a stack.json: the SQLite files
// <data_dir>/<service>.db, or the PostgreSQL databases of a stack on the real servers.
func fromStack(path string, cfg *audit.Config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var s stackInfo
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	dsn := func(service string) string {
		if s.Infra != nil && s.Infra.Databases[service] != "" {
			return s.Infra.Databases[service]
		}
		if s.DataDir == "" {
			return ""
		}
		return filepath.Join(s.DataDir, service+".db")
	}
	for _, f := range []struct {
		field   *string
		service string
	}{{&cfg.Order, "order"}, {&cfg.Inventory, "inventory"}, {&cfg.Payment, "payment"}} {
		if *f.field == "" {
			*f.field = dsn(f.service)
		}
	}
	if cfg.Order == "" {
		return errors.New(path + ": no databases")
	}
	cfg.Kafka = s.KafkaBrokers
	return nil
}

func readKeys(path string) ([]string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer func() { _ = f.Close() }()
		r = f
	}
	var keys []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if k := strings.TrimSpace(sc.Text()); k != "" && !strings.HasPrefix(k, "#") {
			keys = append(keys, k)
		}
	}
	return keys, sc.Err()
}
