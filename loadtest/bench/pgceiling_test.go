package bench

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
)

func testCatalog() *Catalog {
	common := func(s string) *string { return &s }
	return &Catalog{
		Columns: map[string]map[string]string{
			"orders":         {"id": "text", "customer_id": "text", "idempotency_key": "text", "status": "text", "version": "bigint"},
			"order_lines":    {"order_id": "text", "line_no": "integer", "sku": "text", "quantity": "bigint"},
			"outbox":         {"seq": "bigint", "event_id": "text", "topic": "text", "done": "integer"},
			"accounts":       {"customer_id": "text", "balance_cents": "bigint"},
			"ledger_entries": {"order_id": "text", "kind": "text", "amount_cents": "bigint"},
		},
		Uniques: map[string][][]string{
			"orders":         {{"id"}, {"customer_id", "idempotency_key"}},
			"order_lines":    {{"order_id", "line_no"}},
			"outbox":         {{"seq"}, {"event_id"}},
			"accounts":       {{"customer_id"}},
			"ledger_entries": {{"order_id", "kind"}},
		},
		FKs:    map[string]int{"order_lines": 1},
		Spread: map[string][]string{"customer_id": {"cust-0001", "cust-0002"}},
		Common: map[[2]string]*string{
			{"orders", "status"}: common("CONFIRMED"), {"orders", "version"}: common("3"),
			{"outbox", "topic"}: common("shopmesh.order.events"), {"ledger_entries", "kind"}: common("HOLD"),
		},
	}
}

func bindSQL(t *testing.T, c *Catalog, d StmtDelta, types ...string) (string, []string) {
	t.Helper()
	b := c.Bind(d, 1, types)
	v := &varSet{}
	return b.SQL(0, v), v.sets
}

// TestBindChoosesValuesByColumn: the binder maps each parameter to the column it is inserted into or
// compared with, also inside CTEs and unnest(), and picks the value class the replay needs.
func TestBindChoosesValuesByColumn(t *testing.T) {
	c := testCatalog()
	sql, sets := bindSQL(t, c, StmtDelta{Query: `WITH o AS ( INSERT INTO orders (id, customer_id, idempotency_key, status, version)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id ), l AS ( INSERT INTO order_lines (order_id, line_no, sku, quantity)
		SELECT o.id, (l.n - $8)::int, l.sku, l.qty FROM o CROSS JOIN unnest($6::text[], $7::bigint[]) WITH ORDINALITY AS l(sku, qty, n) )
		SELECT count(*) FROM o`}, "text", "text", "text", "text", "bigint", "text[]", "bigint[]", "bigint")
	for _, want := range []string{
		`VALUES (('pc' || :oid)::text, `,                // the order's id
		`((ARRAY['cust-0001','cust-0002'])[:v1])::text`, // a catalogue key
		`('pc' || :v2)::text`,                           // a fresh idempotency key (unique with customer_id)
		`('CONFIRMED')::text`, `('3')::bigint`,          // most common values
		`ARRAY[(1)::bigint]::bigint[]`, // an array of one element of its type
	} {
		if !strings.Contains(sql, want) {
			t.Errorf("bound SQL lacks %q:\n%s", want, sql)
		}
	}
	if len(sets) != 2 {
		t.Errorf("sets = %q, want two random variables", sets)
	}
	if strings.Contains(sql, "$") {
		t.Errorf("a parameter is left unbound:\n%s", sql)
	}

	// Lane bits, LIMIT from the run's rows per call, a lookup by another key (fresh: no hot row).
	sql, _ = bindSQL(t, c, StmtDelta{Query: `SELECT seq FROM outbox o WHERE ((done | $4) & $2) = $3 AND seq IN ($5) ORDER BY seq LIMIT $1`,
		Calls: 10, Rows: 30}, "bigint", "integer", "integer", "integer", "bigint")
	for _, want := range []string{`LIMIT (3)::bigint`, `& (1)::integer) = (1)::integer`, `| (1)::integer`, `seq IN ((:v1)::bigint)`} {
		if !strings.Contains(sql, want) {
			t.Errorf("bound SQL lacks %q:\n%s", want, sql)
		}
	}

	// A second statement inserting ledger entries (order_id, kind) gets its own order id.
	a, _ := bindSQL(t, c, StmtDelta{Query: `INSERT INTO ledger_entries (order_id, kind, amount_cents) VALUES ($1, $2, $3)`}, "text", "text", "bigint")
	b, _ := bindSQL(t, c, StmtDelta{Query: `WITH a AS (UPDATE accounts SET balance_cents = $1 WHERE customer_id = $2 RETURNING $3)
		INSERT INTO ledger_entries (order_id, kind, amount_cents) SELECT $4::text, $5::text, $6::bigint WHERE EXISTS (SELECT 1 FROM a)`},
		"bigint", "text", "text", "text", "text", "bigint")
	ida, idb := between(a, "VALUES (", ","), between(b, "SELECT (", ",")
	if ida == "" || idb == "" || ida == idb || !strings.Contains(ida, ":oid") || !strings.Contains(idb, ":oid") {
		t.Errorf("ledger order ids %q and %q: want two different ids derived from the order's", ida, idb)
	}
}

func between(s, from, to string) string {
	_, rest, ok := strings.Cut(s, from)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, to)
	return v
}

// TestPlanKeepsTheRunsCounts: statements per order become that many executions (a fraction with its
// probability), COMMITs per order that many BEGIN…COMMIT blocks, the rest of the committed transactions
// autocommit statements; transaction control and rare statements are not replayed.
func TestPlanKeepsTheRunsCounts(t *testing.T) {
	c := testCatalog()
	ds := []StmtDelta{
		{Query: "begin", Calls: 200}, {Query: "commit", Calls: 200},
		{Query: "INSERT INTO outbox (event_id, topic) VALUES ($1, $2)", Calls: 150},
		{Query: "UPDATE orders SET status = $1 WHERE id = $2", Calls: 100},
		{Query: "SELECT status FROM orders WHERE id = $1", Calls: 50},
		{Query: "CREATE INDEX x ON orders (status)", Calls: 1},
	}
	types := map[string][]string{ds[2].Query: {"text", "text"}, ds[3].Query: {"text", "text"}, ds[4].Query: {"text"}}
	p := Plan("order", c, ds, types, 100, 250, 0.02)
	if got := p.Stmts(); got < 2.999 || got > 3.001 {
		t.Errorf("replayed %.3f statements per order, want 3 (1.5 + 1 + 0.5)", got)
	}
	if len(p.Txs) != 2 {
		t.Errorf("%d BEGIN…COMMIT blocks, want 2 (200 COMMITs over 100 orders)", len(p.Txs))
	}
	if p.RealTx != 2.5 || p.RealStmts < 3.009 || p.RealStmts > 3.011 || p.Background < 0.0099 {
		t.Errorf("real %.2f tx, %.3f statements, %.3f background; want 2.5, 3.01, 0.01", p.RealTx, p.RealStmts, p.Background)
	}
	if len(p.Auto) != 1 {
		t.Errorf("%d autocommit statements, want 1 (2.5 transactions − 2 COMMITs, rounded)", len(p.Auto))
	}
	s := p.Script()
	for _, want := range []string{"\\set oid random(1, ", "BEGIN;\n", "COMMIT;\n", "\\if :g1 <= 5000\n", "\\endif\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if strings.Count(s, "BEGIN;") != 2 || strings.Contains(s, "CREATE INDEX") || strings.Contains(strings.ToLower(s), "\nbegin\n") {
		t.Errorf("script:\n%s", s)
	}
	// Inserts come first, so the order's later statements find its rows.
	if strings.Index(s, "INSERT INTO outbox") > strings.Index(s, "UPDATE orders") {
		t.Errorf("inserts should precede updates:\n%s", s)
	}
}

const pgbenchOut = `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: /tmp/order.sql
number of transactions actually processed: 6959
number of failed transactions: 0 (0.000%)
latency average = 0.567 ms
rate limit schedule lag: avg 12.5 (max 80.1) ms
initial connection time = 56.226 ms
tps = 3527.943963 (without initial connection time)
statement latencies in milliseconds and failures:
         0.002           0  \set oid random(1, 1125899906842624)
         0.310           0  BEGIN;
         2.250           0  INSERT INTO outbox (event_id) VALUES (('pc' || :v1)::text);
         0.900           0  COMMIT;
`

func TestParsePGBench(t *testing.T) {
	r, err := ParsePGBench(pgbenchOut)
	if err != nil {
		t.Fatal(err)
	}
	if r.TPS != 3527.943963 || r.Failed != 0 || r.LagMs != 12.5 {
		t.Errorf("parsed %+v", r)
	}
	sl := Slowest(pgbenchOut, 2)
	if len(sl) != 2 || !strings.HasPrefix(sl[0], "2.25 ms INSERT INTO outbox") || !strings.HasPrefix(sl[1], "0.90 ms COMMIT") {
		t.Errorf("slowest = %q", sl)
	}
	if _, err := ParsePGBench(pgbenchOut + "pgbench: error: client 3 script 0 aborted in command 2 query 0: ERROR: boom\n"); err == nil {
		t.Error("aborted clients not reported")
	}
	if _, err := ParsePGBench("pgbench: error: connection refused\n"); err == nil {
		t.Error("no tps: no error")
	}
}

func TestHarmonic(t *testing.T) {
	if got := Harmonic([]float64{600, 300, 200}); got < 99.99 || got > 100.01 {
		t.Errorf("Harmonic = %v, want 100 (1/600 + 1/300 + 1/200 = 1/100)", got)
	}
	if Harmonic([]float64{100, 0}) != 0 {
		t.Error("a database that did nothing gives a ceiling")
	}
}

// TestLiteralsSurvivePGBench: literals never carry a colon or quote into the script (pgbench would
// read ":07" as a variable), and the validation's variable substitution leaves casts alone.
func TestLiteralsSurvivePGBench(t *testing.T) {
	for _, s := range []string{"2026-12-07 07:00:00+00", `{"a": "b"}`, "it's", `\x0a24`} {
		l := literal(s)
		if strings.ContainsAny(strings.TrimSuffix(strings.TrimPrefix(l, "convert_from(decode('"), "', 'hex'), 'UTF8')"), `:'\`) {
			t.Errorf("literal(%q) = %s", s, l)
		}
	}
	if got := concrete(`SELECT ('pc' || :oid)::text, (:v1)::bigint`, map[string]int64{"oid": 7, "v1": 9}); got != `SELECT ('pc' || 7)::text, (9)::bigint` {
		t.Errorf("concrete = %s", got)
	}
}

// TestReplayOnRealPostgreSQL builds a plan against a real database (parameter types from PREPARE,
// the catalog, validation of every statement in a rolled-back transaction) and runs it with pgbench:
// the schema's constraints (a check, a foreign key, unique keys) hold for every bound statement, the
// order's statements find its rows, and pgbench completes orders without a failed transaction.
func TestReplayOnRealPostgreSQL(t *testing.T) {
	dsn := infratest.Require(t, infratest.DatabaseURL)
	bin, err := FindPGBench()
	if err != nil {
		if infratest.Required() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	db, drop, err := freshDatabase(t.Context(), dsn, "bench_ceiling_test_"+hex.EncodeToString(suffix[:]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(drop)
	conn, err := pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(t.Context()) }()
	for _, q := range []string{
		`CREATE TABLE accounts (customer_id TEXT PRIMARY KEY, balance_cents BIGINT NOT NULL CHECK (balance_cents >= 0))`,
		`CREATE TABLE orders (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, idempotency_key TEXT NOT NULL,
			status TEXT NOT NULL CHECK (status IN ('PENDING', 'CONFIRMED')), version BIGINT NOT NULL, UNIQUE (customer_id, idempotency_key))`,
		`CREATE TABLE order_lines (order_id TEXT NOT NULL REFERENCES orders (id), line_no INTEGER NOT NULL, quantity BIGINT NOT NULL CHECK (quantity > 0),
			PRIMARY KEY (order_id, line_no))`,
		`CREATE TABLE outbox (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, payload BYTEA NOT NULL)`,
		`INSERT INTO accounts SELECT format('cust-%s', lpad(i::text, 4, '0')), 100000 FROM generate_series(1, 50) i`,
		`INSERT INTO orders VALUES ('o1', 'cust-0001', 'k1', 'CONFIRMED', 2), ('o2', 'cust-0002', 'k2', 'CONFIRMED', 2)`,
		`INSERT INTO order_lines VALUES ('o1', 1, 3)`,
		`INSERT INTO outbox (event_id, payload) VALUES ('e1', '\x0102')`,
	} {
		if _, err := conn.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	ds := []StmtDelta{
		{Query: "begin", Calls: 200}, {Query: "commit", Calls: 200},
		{Query: "INSERT INTO orders (id, customer_id, idempotency_key, status, version) VALUES ($1, $2, $3, $4, $5)", Calls: 100, Rows: 100},
		{Query: "INSERT INTO order_lines (order_id, line_no, quantity) VALUES ($1, $2, $3)", Calls: 100, Rows: 100},
		{Query: "INSERT INTO outbox (event_id, payload) VALUES ($1, $2)", Calls: 150, Rows: 150},
		{Query: "UPDATE orders SET status = $1, version = version + $2 WHERE id = $3 AND status = $4", Calls: 100, Rows: 100},
		{Query: "SELECT customer_id, balance_cents FROM accounts WHERE customer_id = $1 FOR UPDATE", Calls: 100, Rows: 100},
		{Query: "SELECT seq FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2", Calls: 50, Rows: 50},
	}
	plan, err := buildPlan(t.Context(), db, "order", ds, 100, 200, 0.02)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Unbound != 0 || len(plan.UnboundWhy) != 0 {
		t.Fatalf("unbound statements: %q\n%s", plan.UnboundWhy, plan.Script())
	}
	// A lookup by another key (outbox seq) is bound to a fresh value: it touches no row, and the plan
	// says so; everything else touches the rows its statement did in the "run".
	if len(plan.Missed) != 1 || !strings.Contains(plan.Missed[0], "seq >") {
		t.Errorf("statements that touch no row: %q, want only the outbox lookup\n%s", plan.Missed, plan.Script())
	}
	path := t.TempDir() + "/order.sql"
	if err := os.WriteFile(path, []byte(plan.Script()), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := pgbench(t.Context(), bin, db, path, 2, time.Second, 0)
	if err != nil {
		t.Fatalf("%v\n%s\n%s", err, plan.Script(), r.Output)
	}
	if r.TPS <= 0 || r.Failed != 0 {
		t.Fatalf("pgbench: %.1f orders/s, %d failed\n%s", r.TPS, r.Failed, r.Output)
	}
	var orders int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM orders o JOIN order_lines l ON l.order_id = o.id WHERE o.id LIKE 'pc%'`).Scan(&orders); err != nil {
		t.Fatal(err)
	}
	if orders == 0 {
		t.Errorf("no replayed order with its line in the database")
	}
	t.Logf("replay: %.0f orders/s (2 clients, machine shared; not asserted), %d orders written", r.TPS, orders)
}
