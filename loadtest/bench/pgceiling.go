package bench

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shopmesh/shopmesh/deploy/localstack"
)

// The pg-ceiling case: replay, with pgbench against the same PostgreSQL, the statements one order
// needed in the orders-pg run (pg_stat_statements deltas per service database) and report the
// orders/s PostgreSQL alone sustains for them. See docs/BENCHMARKS.md (e), "The PostgreSQL ceiling".

// CeilingConfig configures PGCeiling.
type CeilingConfig struct {
	// PGBench is the pgbench binary (FindPGBench).
	PGBench string
	// Each is the length of one pgbench run (whole seconds).
	Each time.Duration
	// Clients is pgbench's client count per database (the stack's closed-loop concurrency).
	Clients int
	// MinPerOrder: statements rarer than this per order are background work (migrations, periodic
	// sweeps) and are not replayed; the report says how many there were.
	MinPerOrder float64
	// ScriptDir, when set, keeps a copy of each generated pgbench script there.
	ScriptDir string
}

// FindPGBench returns pgbench from PATH or from /usr/lib/postgresql/<version>/bin (newest first).
func FindPGBench() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	slices.SortFunc(ms, func(a, b string) int { return cmp.Compare(verOf(b), verOf(a)) })
	if len(ms) > 0 {
		return ms[0], nil
	}
	return "", errors.New("pgbench not found (apt install postgresql-15, or pass -pgbench)")
}

func verOf(p string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
	return n
}

// StmtDelta is one statement's calls, rows and execution time between two pg_stat_statements readings.
type StmtDelta struct {
	Query  string
	Calls  int64
	Rows   int64
	TimeMs float64
}

// Deltas splits after − before per service.
func Deltas(before, after StmtStats) map[string][]StmtDelta {
	out := map[string][]StmtDelta{}
	for k, a := range after {
		b := before[k]
		if a.Calls-b.Calls <= 0 {
			continue
		}
		out[k[0]] = append(out[k[0]], StmtDelta{Query: k[1], Calls: a.Calls - b.Calls, Rows: a.Rows - b.Rows, TimeMs: a.TimeMs - b.TimeMs})
	}
	for _, ds := range out {
		slices.SortFunc(ds, func(x, y StmtDelta) int { return cmp.Or(cmp.Compare(y.Calls, x.Calls), cmp.Compare(x.Query, y.Query)) })
	}
	return out
}

var (
	reTxBegin  = regexp.MustCompile(`(?i)^\s*(begin|start\s+transaction)\b`)
	reTxEnd    = regexp.MustCompile(`(?i)^\s*(commit|end|rollback|abort)\b`)
	reTxOther  = regexp.MustCompile(`(?i)^\s*(savepoint|release|rollback\s+to|set\s+transaction)\b`)
	reParam    = regexp.MustCompile(`\$(\d+)\b`)
	reFrom     = regexp.MustCompile(`(?i)\bFROM ([\w."]+)`)
	reColOp    = regexp.MustCompile(`([\w."]+)\s*(?:=|<>|!=|<=|>=|<|>|\+|-)\s*\$(\d+)\b`)
	reOpCol    = regexp.MustCompile(`\$(\d+)\s*(?:=|<>|!=|<=|>=|<|>)\s*([A-Za-z_][\w."]*)`)
	reInList   = regexp.MustCompile(`(?i)([\w."]+)\s+IN\s*\(([^()]*)\)`)
	reInsertAt = regexp.MustCompile(`(?i)\bINSERT INTO ([\w."]+) ?\(([^)]*)\) ?(VALUES|SELECT)\b`)
	reDML      = regexp.MustCompile(`(?i)\b(INSERT INTO|UPDATE|DELETE FROM) ([\w."]+)`)
	reLimit    = regexp.MustCompile(`(?i)\bLIMIT \$(\d+)\b`)
	reBitOp    = regexp.MustCompile(`[&|] ?\(?\$(\d+)\b`)
	reBitEq    = regexp.MustCompile(`&[^()]*\) ?(?:=|<>) ?\(?\$(\d+)\b`)
	reUnnest   = regexp.MustCompile(`(?is)unnest\(([^()]*)\)\s*(?:WITH\s+ORDINALITY\s+)?(?:AS\s+)?\w+\s*\(([^()]*)\)`)
	reLead     = regexp.MustCompile(`^\s*\$(\d+)`)
	// A CASE's results: THEN $n, ELSE $n.
	reCaseResult = regexp.MustCompile(`(?i)\b(?:THEN|ELSE)\s+\$(\d+)`)
	// INSERT INTO t (a, b, …): which table each listed column is written to.
	reInsertCols = regexp.MustCompile(`(?is)INSERT\s+INTO\s+(\w+)\s*\(([^()]*)\)`)
)

// Catalog is what the binder needs to know about one database: column types, unique indexes,
// foreign-key counts, catalogue keys (single-column text primary keys of small tables no replayed
// statement inserts into, with their values) and each column's most common value.
type Catalog struct {
	Columns  map[string]map[string]string // table → column → type
	Uniques  map[string][][]string        // table → unique indexes (columns)
	FKs      map[string]int               // table → foreign keys it has
	Spread   map[string][]string          // column name → existing key values
	Common   map[[2]string]*string        // (table, column) → most common value as text (nil: NULL/empty)
	LoadedAt time.Time
	stmts    int // statements bound with a per-statement order id
}

// bitCol marks a bit-mask parameter, bitZero what a masked value is compared with (both bound to 1).
const (
	bitCol  = " bits"
	bitZero = " bits0"
)

// limitCol marks a LIMIT parameter: bound to the rows per call the run's statement returned.
const limitCol = " limit"

// dmlOf is the statement's kind (the first data-modifying command in it, CTEs included: INSERT,
// UPDATE, DELETE; else SELECT or OTHER) and its table. q has its whitespace collapsed.
func dmlOf(q string) (kind, table string) {
	for _, m := range reDML.FindAllStringSubmatchIndex(q, -1) {
		before := strings.ToUpper(q[max(0, m[0]-4):m[0]])
		if strings.HasSuffix(before, "FOR ") || strings.HasSuffix(before, "DO ") || strings.HasSuffix(before, "KEY ") {
			continue // FOR UPDATE, ON CONFLICT DO UPDATE, FOR NO KEY UPDATE
		}
		return strings.ToUpper(strings.Fields(q[m[2]:m[3]])[0]), tableOf(q[m[4]:m[5]])
	}
	if m := reFrom.FindStringSubmatch(q); m != nil {
		table = tableOf(m[1])
	}
	switch f := strings.Fields(q); {
	case len(f) > 0 && (strings.EqualFold(f[0], "SELECT") || strings.EqualFold(f[0], "WITH")):
		return "SELECT", table
	default:
		return "OTHER", table
	}
}

// topItems splits s at top-level commas up to the end of its list — a parenthesis closing what s did
// not open, or a top-level FROM, WHERE, ON CONFLICT, RETURNING — and returns where it ended.
func topItems(s string) ([]string, int) {
	var items []string
	up := strings.ToUpper(s)
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			if depth == 0 {
				return append(items, s[start:i]), i
			}
			depth--
		case ',':
			if depth == 0 {
				items = append(items, s[start:i])
				start = i + 1
			}
		case ' ':
			if depth == 0 {
				for _, kw := range []string{" FROM ", " WHERE ", " ON CONFLICT", " RETURNING", " GROUP BY", " ORDER BY"} {
					if strings.HasPrefix(up[i:], kw) {
						return append(items, s[start:i]), i
					}
				}
			}
		}
	}
	return append(items, s[start:]), len(s)
}

// tableOf strips quotes and a schema.
func tableOf(s string) string {
	s = strings.ReplaceAll(s, `"`, "")
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		s = s[i+1:]
	}
	return strings.ToLower(s)
}

// Bound is one replayed statement: the pg_stat_statements text with every $n replaced by an
// expression of pgbench variables or a literal.
type Bound struct {
	StmtDelta
	PerOrder float64
	Kind     string // INSERT, SELECT, UPDATE, DELETE, OTHER
	Table    string
	Types    []string // $1… types
	// cols[i] is the column $i+1 is compared with or inserted into ("" unknown).
	cols []string
	ins  []bool   // $i+1 is a value of an INSERT's column list…
	tabs []string // …of this table
	// SQL(rep) is the statement for the rep-th execution within one order (0-based).
	exprs []func(rep int, v *varSet) string
}

type varSet struct {
	sets []string
	n    int
}

// fresh adds a variable drawn from 1…hi for each script run and returns its reference.
func (v *varSet) fresh(hi int64) string {
	v.n++
	name := fmt.Sprintf("v%d", v.n)
	v.sets = append(v.sets, fmt.Sprintf(`\set %s random(1, %d)`, name, hi))
	return ":" + name
}

// freshMax bounds fresh ids: random 50-bit numbers do not repeat within a run.
const freshMax = 1 << 50

// Bind maps each $n of q to a column (INSERT lists, "col <op> $n", "col IN (...)") and chooses a value:
// the order's id for order-id columns (order_id, orders.id), a random existing key for catalogue keys
// (products.sku, accounts.customer_id…), a fresh value for inserted unique columns, the column's most
// common value otherwise, and a value of the parameter's type where no column is known.
func (c *Catalog) Bind(d StmtDelta, perOrder float64, types []string) *Bound {
	b := &Bound{StmtDelta: d, PerOrder: perOrder, Types: types, cols: make([]string, len(types)), ins: make([]bool, len(types)), tabs: make([]string, len(types))}
	q := strings.Join(strings.Fields(d.Query), " ")
	b.Kind, b.Table = dmlOf(q)
	set := func(n int, col string) {
		if n >= 1 && n <= len(b.cols) && b.cols[n-1] == "" {
			b.cols[n-1] = tableOf(col)
		}
	}
	// INSERT INTO t (cols) VALUES (…), (…) or INSERT INTO t (cols) SELECT …, anywhere (CTEs too).
	for _, m := range reInsertAt.FindAllStringSubmatchIndex(q, -1) {
		cols := strings.Split(q[m[4]:m[5]], ",")
		rest := q[m[7]:]
		var lists [][]string
		if strings.EqualFold(q[m[6]:m[7]], "VALUES") {
			for {
				rest = strings.TrimLeft(rest, " ,")
				if !strings.HasPrefix(rest, "(") {
					break
				}
				items, end := topItems(rest[1:])
				lists = append(lists, items)
				rest = rest[1+end:]
				if !strings.HasPrefix(strings.TrimLeft(rest, " "), ",") {
					break
				}
			}
		} else {
			items, _ := topItems(rest)
			lists = append(lists, items)
		}
		for _, items := range lists {
			for i, e := range items {
				if i >= len(cols) {
					break
				}
				// The item's value: a leading parameter, or the results of a CASE (THEN $n, ELSE $n; a
				// constant of the statement, normalized into a parameter by pg_stat_statements).
				var ns []string
				if pm := reLead.FindStringSubmatch(e); pm != nil {
					ns = append(ns, pm[1])
				} else {
					for _, pm := range reCaseResult.FindAllStringSubmatch(e, -1) {
						ns = append(ns, pm[1])
					}
				}
				for _, num := range ns {
					n, _ := strconv.Atoi(num)
					set(n, strings.TrimSpace(cols[i]))
					if n >= 1 && n <= len(b.ins) && !b.ins[n-1] {
						b.ins[n-1], b.tabs[n-1] = true, tableOf(q[m[2]:m[3]])
					}
				}
			}
		}
	}
	// Bit masks (the outbox's lane bits, "((done | parked) & $2) = $3"): the mask 1 (the first lane),
	// compared with itself. A claim then looks for rows the lane has done — which the relay deletes —
	// rather than for pending ones: the replay's own inserts are never sent, so pending rows would pile
	// up and every claim would walk them all. Claims touch no row (the report lists them).
	for _, m := range reBitEq.FindAllStringSubmatch(q, -1) {
		n, _ := strconv.Atoi(m[1])
		set(n, bitZero)
	}
	for _, m := range reBitOp.FindAllStringSubmatch(q, -1) {
		n, _ := strconv.Atoi(m[1])
		set(n, bitCol)
	}
	if m := reLimit.FindStringSubmatch(q); m != nil {
		n, _ := strconv.Atoi(m[1])
		if n >= 1 && n <= len(b.cols) && b.cols[n-1] == "" {
			b.cols[n-1] = limitCol
		}
	}
	// unnest($2::text[], $3::bigint[]) AS i(sku, qty): each array feeds the alias column at its place.
	// The alias column belongs to the table an INSERT of the statement lists it for (outbox.event_id
	// fed by unnest in a CTE of an order's INSERT), else to whichever table has it.
	inserts := map[string]string{}
	for _, m := range reInsertCols.FindAllStringSubmatch(q, -1) {
		for _, col := range strings.Split(m[2], ",") {
			inserts[strings.TrimSpace(col)] = m[1]
		}
	}
	for _, m := range reUnnest.FindAllStringSubmatch(q, -1) {
		names := strings.Split(m[2], ",")
		for j, a := range strings.Split(m[1], ",") {
			if pm := reLead.FindStringSubmatch(a); pm != nil && j < len(names) {
				n, _ := strconv.Atoi(pm[1])
				name := strings.TrimSpace(names[j])
				set(n, name)
				if t := inserts[name]; t != "" && n >= 1 && n <= len(b.tabs) && b.tabs[n-1] == "" {
					b.tabs[n-1] = t
				}
			}
		}
	}
	for _, m := range reColOp.FindAllStringSubmatch(q, -1) {
		n, _ := strconv.Atoi(m[2])
		set(n, m[1])
	}
	for _, m := range reOpCol.FindAllStringSubmatch(q, -1) {
		n, _ := strconv.Atoi(m[1])
		set(n, m[2])
	}
	for _, m := range reInList.FindAllStringSubmatch(q, -1) {
		for _, pm := range reParam.FindAllStringSubmatch(m[2], -1) {
			n, _ := strconv.Atoi(pm[1])
			set(n, m[1])
		}
	}
	for i := range b.cols {
		b.exprs = append(b.exprs, c.valueFor(b, i))
	}
	return b
}

// tableWith is the table whose column col is: the statement's own table first, else any table.
func (c *Catalog) tableWith(table, col string) string {
	if _, ok := c.Columns[table][col]; ok {
		return table
	}
	var ts []string
	for t, cs := range c.Columns {
		if _, ok := cs[col]; ok {
			ts = append(ts, t)
		}
	}
	slices.Sort(ts)
	if len(ts) > 0 {
		return ts[0]
	}
	return ""
}

// IsOrderID says whether a column holds an order's id (the key every service's rows of one order share).
func IsOrderID(table, col string) bool {
	return col == "order_id" || (col == "id" && table == "orders")
}

func (c *Catalog) valueFor(b *Bound, i int) func(int, *varSet) string {
	if elem, ok := strings.CutSuffix(b.Types[i], "[]"); ok {
		// An array parameter (a batch of lines): one element, bound as its column's value would be.
		eb := *b
		eb.Types = slices.Clone(b.Types)
		eb.Types[i] = elem
		f := c.valueFor(&eb, i)
		return func(rep int, v *varSet) string { return "ARRAY[" + f(rep, v) + "]::" + b.Types[i] }
	}
	typ := b.Types[i]
	col := b.cols[i]
	cast := func(e string) string { return "(" + e + ")::" + typ }
	switch {
	case col == bitCol, col == bitZero:
		lit := cast("1")
		return func(int, *varSet) string { return lit }
	case col == limitCol:
		lit := cast(strconv.FormatInt(max(1, int64(math.Round(float64(b.Rows)/float64(max(1, b.Calls))))), 10))
		return func(int, *varSet) string { return lit }
	case col == "" && strings.Contains(strings.ToLower(b.Query), "advisory"):
		// Advisory lock keys (per order or per aggregate in the services): distinct per run.
		return func(_ int, v *varSet) string { return cast(freshOf(typ, v)) }
	}
	if col != "" {
		table := c.tableWith(cmp.Or(b.tabs[i], b.Table), col)
		switch {
		case IsOrderID(table, col):
			// One order per script run: rows of the order share its id; a repeated insert of the same
			// statement within the order gets its own id unless the column references another table.
			fk := b.Kind == "INSERT" && c.FKs[b.Table] > 0
			if b.ins[i] && !fk && c.compositeWith(table, col) {
				// e.g. ledger entries (order_id, kind): each statement writing one gets its own id.
				c.stmts++
				k := c.stmts
				return func(rep int, v *varSet) string { return cast(fmt.Sprintf(`'pc' || :oid || '-s%d-%d'`, k, rep)) }
			}
			return func(rep int, v *varSet) string {
				if rep == 0 || fk || b.Kind != "INSERT" {
					return cast(`'pc' || :oid`)
				}
				return cast(fmt.Sprintf(`'pc' || :oid || '-%d'`, rep))
			}
		case len(c.Spread[col]) > 0:
			vals := c.Spread[col]
			arr := make([]string, len(vals))
			for j, s := range vals {
				arr[j] = literal(s)
			}
			a := "(ARRAY[" + strings.Join(arr, ",") + "])"
			return func(_ int, v *varSet) string { return cast(a + "[" + v.fresh(int64(len(vals))) + "]") }
		case b.ins[i] && c.unique(table, col):
			return func(_ int, v *varSet) string { return cast(freshOf(typ, v)) }
		case !b.ins[i] && c.keyOf(table, col):
			// A lookup by another key (outbox seq…): which row the run touched is not known, and one
			// most common value would make every client wait for the same row: a fresh value (no row).
			return func(_ int, v *varSet) string { return cast(freshOf(typ, v)) }
		}
		if table != "" {
			if s := c.Common[[2]string{table, col}]; s != nil {
				lit := cast(literal(*s))
				return func(int, *varSet) string { return lit }
			}
		}
	}
	lit := cast(typeDefault(typ))
	return func(int, *varSet) string { return lit }
}

// keyOf says whether col alone is a unique key of table.
func (c *Catalog) keyOf(table, col string) bool {
	for _, u := range c.Uniques[table] {
		if len(u) == 1 && u[0] == col {
			return true
		}
	}
	return false
}

// compositeWith says whether col is in a unique index of table together with other columns.
func (c *Catalog) compositeWith(table, col string) bool {
	for _, u := range c.Uniques[table] {
		if len(u) > 1 && slices.Contains(u, col) {
			return true
		}
	}
	return false
}

func (c *Catalog) unique(table, col string) bool {
	for _, u := range c.Uniques[table] {
		if slices.Contains(u, col) && !slices.ContainsFunc(u, func(x string) bool { return IsOrderID(table, x) }) {
			return true
		}
	}
	return false
}

func freshOf(typ string, v *varSet) string {
	switch {
	case typ == "smallint":
		return v.fresh(math.MaxInt16)
	case typ == "integer":
		return v.fresh(math.MaxInt32)
	case strings.Contains(typ, "int") || typ == "numeric":
		return v.fresh(freshMax)
	case typ == "uuid":
		return "md5(" + v.fresh(freshMax) + "::text)"
	default:
		return "'pc' || " + v.fresh(freshMax)
	}
}

// literal is a constant of any type: its text form quoted when that is plain, else hex-encoded, so
// that no quote, backslash or colon reaches the script (pgbench reads ":name" as a variable anywhere).
func literal(s string) string {
	if reSafe.MatchString(s) {
		return "'" + s + "'"
	}
	return "convert_from(decode('" + hex.EncodeToString([]byte(s)) + "', 'hex'), 'UTF8')"
}

func typeDefault(typ string) string {
	switch {
	case strings.HasPrefix(typ, "timestamp"), typ == "date":
		return "now()"
	case strings.Contains(typ, "int"), typ == "numeric", typ == "real", typ == "double precision":
		return "1"
	case typ == "boolean":
		return "true"
	case typ == "bytea":
		return `'\x00'`
	case typ == "json", typ == "jsonb":
		return "'{}'"
	case typ == "text", strings.HasPrefix(typ, "character"):
		// Valid JSON too: a text parameter may be cast to json(b) in the statement (outbox headers).
		return "'{}'"
	default:
		return "NULL"
	}
}

// SQL is the statement for the rep-th execution within one order.
func (b *Bound) SQL(rep int, v *varSet) string {
	vals := make([]string, len(b.exprs))
	for i, e := range b.exprs {
		vals[i] = e(rep, v)
	}
	return reParam.ReplaceAllStringFunc(b.Query, func(m string) string {
		n, _ := strconv.Atoi(m[1:])
		if n >= 1 && n <= len(vals) {
			return vals[n-1]
		}
		return m
	})
}

// Slot is one execution of a statement within one order; P < 1 for the fractional part of its
// calls per order (pgbench runs it with that probability).
type Slot struct {
	B   *Bound
	Rep int
	P   float64
	SQL string
}

// DBPlan is one service database's replay: its slots grouped into transactions.
type DBPlan struct {
	Service string
	// Real figures per order from the run.
	RealStmts, RealTx float64
	// Background statements (below MinPerOrder) and statements that could not be bound, per order.
	Background, Unbound float64
	UnboundWhy          []string
	// Failed are the unbound statements as the check ran them, each with its error (for diagnosis).
	Failed []string
	// Missed lists replayed statements that touched no row in the check run where the run's calls
	// touched some on average (pg_stat_statements rows/calls): they do less work than the real ones.
	Missed []string
	// Txs are explicit BEGIN…COMMIT blocks; Auto run one statement per transaction.
	Txs  [][]Slot
	Auto []Slot
	// Sets are the script's \set lines (order id, fresh values, gates).
	Sets []string
	// commits is the run's COMMITs (and ROLLBACKs) per order: the BEGIN…COMMIT blocks.
	commits float64
}

// Stmts and Tx are the replay's expected statements and transactions per script run (= per order).
func (p *DBPlan) Stmts() float64 {
	var n float64
	for _, t := range p.Txs {
		for _, s := range t {
			n += s.P
		}
	}
	for _, s := range p.Auto {
		n += s.P
	}
	return n
}

// Tx counts BEGIN…COMMIT blocks and autocommit statements per order.
func (p *DBPlan) Tx() float64 {
	n := float64(len(p.Txs))
	for _, s := range p.Auto {
		n += s.P
	}
	return n
}

// Plan builds one database's replay from its statements' deltas over orders, with xacts committed
// transactions (pg_stat_database) in the same interval. Grouping: pg_stat_statements does not say
// which statements shared a transaction, so the replay keeps the counts — COMMITs per order become
// that many BEGIN…COMMIT blocks, the remaining committed transactions per order are single
// statements in autocommit — and deals the statements into them in script order (inserts, parents
// first; then reads, updates, deletes).
func Plan(svc string, cat *Catalog, ds []StmtDelta, types map[string][]string, orders, xacts int64, minPerOrder float64) *DBPlan {
	n := float64(max(1, orders))
	p := &DBPlan{Service: svc, RealTx: float64(xacts) / n}
	var commits float64
	var bs []*Bound
	for _, d := range ds {
		per := float64(d.Calls) / n
		switch {
		case reTxEnd.MatchString(d.Query):
			commits += per
			continue
		case reTxBegin.MatchString(d.Query) || reTxOther.MatchString(d.Query):
			continue
		}
		p.RealStmts += per
		if per < minPerOrder {
			p.Background += per
			continue
		}
		ts, ok := types[d.Query]
		if !ok {
			p.Unbound += per
			p.UnboundWhy = append(p.UnboundWhy, fmt.Sprintf("%.2f/order not prepared: %s", per, short(d.Query)))
			continue
		}
		bs = append(bs, cat.Bind(d, per, ts))
	}
	rank := map[string]int{"INSERT": 0, "SELECT": 1, "UPDATE": 2, "DELETE": 3, "OTHER": 4}
	slices.SortStableFunc(bs, func(x, y *Bound) int {
		return cmp.Or(cmp.Compare(rank[x.Kind], rank[y.Kind]), cmp.Compare(cat.FKs[x.Table], cat.FKs[y.Table]),
			cmp.Compare(y.PerOrder, x.PerOrder), cmp.Compare(x.Query, y.Query))
	})
	v := &varSet{}
	var slots []Slot
	for _, b := range bs {
		whole := int(math.Floor(b.PerOrder + 1e-9))
		frac := b.PerOrder - float64(whole)
		for r := range whole {
			slots = append(slots, Slot{B: b, Rep: r, P: 1, SQL: b.SQL(r, v)})
		}
		if frac >= 0.005 {
			slots = append(slots, Slot{B: b, Rep: whole, P: frac, SQL: b.SQL(whole, v)})
		}
	}
	p.Sets = v.sets
	p.commits = commits
	p.group(slots)
	return p
}

// group deals slots into round(commits) transactions; the last slots run in autocommit, as many as
// make the expected autocommit transactions per order closest to RealTx − commits.
func (p *DBPlan) group(slots []Slot) {
	k := int(math.Round(p.commits))
	target := max(0, p.RealTx-p.commits)
	auto, sum := 0, 0.0
	for auto < len(slots) {
		next := sum + slots[len(slots)-1-auto].P
		if math.Abs(next-target) > math.Abs(sum-target) {
			break
		}
		sum = next
		auto++
	}
	if k == 0 {
		auto = len(slots)
	}
	explicit := slots[:len(slots)-auto]
	p.Auto = slots[len(slots)-auto:]
	k = min(k, len(explicit))
	p.Txs = nil
	for i := range k {
		lo, hi := i*len(explicit)/k, (i+1)*len(explicit)/k
		if hi > lo {
			p.Txs = append(p.Txs, explicit[lo:hi])
		}
	}
}

// Drop removes slots (statement executions that failed validation) and regroups.
func (p *DBPlan) Drop(bad map[*Bound]string) {
	var keep []Slot
	for _, s := range p.all() {
		if why, ok := bad[s.B]; ok {
			p.Unbound += s.P
			p.UnboundWhy = append(p.UnboundWhy, fmt.Sprintf("%.2f/order %s: %s", s.P, why, short(s.B.Query)))
			continue
		}
		keep = append(keep, s)
	}
	p.group(keep)
}

func (p *DBPlan) all() []Slot {
	var out []Slot
	for _, t := range p.Txs {
		out = append(out, t...)
	}
	return append(out, p.Auto...)
}

// Script is the pgbench script: one run = this database's work for one order.
func (p *DBPlan) Script() string {
	var b strings.Builder
	fmt.Fprintf(&b, "-- shopmesh pg-ceiling replay: %s, one order per run (generated)\n", p.Service)
	fmt.Fprintf(&b, "\\set oid random(1, %d)\n", int64(freshMax))
	for _, s := range p.Sets {
		b.WriteString(s + "\n")
	}
	gates := 0
	stmt := func(s Slot) {
		line := strings.Join(strings.Fields(s.SQL), " ")
		if strings.Contains(s.SQL, "--") { // a comment would swallow the rest of a joined line
			line = strings.TrimSpace(s.SQL)
		}
		if s.P < 1 {
			gates++
			fmt.Fprintf(&b, "\\set g%d random(1, 10000)\n\\if :g%d <= %d\n%s;\n\\endif\n", gates, gates, int(math.Round(s.P*10000)), line)
			return
		}
		b.WriteString(line + ";\n")
	}
	for _, t := range p.Txs {
		b.WriteString("BEGIN;\n")
		for _, s := range t {
			stmt(s)
		}
		b.WriteString("COMMIT;\n")
	}
	for _, s := range p.Auto {
		stmt(s)
	}
	return b.String()
}

func short(q string) string {
	q = strings.Join(strings.Fields(q), " ")
	if len(q) > 80 {
		q = q[:80] + "…"
	}
	return q
}

// LoadCatalog reads the binder's view of the database conn is connected to; inserted are the tables
// the replay inserts into (never catalogue tables).
func LoadCatalog(ctx context.Context, conn *pgx.Conn, inserted map[string]bool) (*Catalog, error) {
	c := &Catalog{Columns: map[string]map[string]string{}, Uniques: map[string][][]string{}, FKs: map[string]int{},
		Spread: map[string][]string{}, Common: map[[2]string]*string{}, LoadedAt: time.Now()}
	rows, err := conn.Query(ctx, `SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var t, col, typ string
		if err := rows.Scan(&t, &col, &typ); err != nil {
			return nil, err
		}
		if c.Columns[t] == nil {
			c.Columns[t] = map[string]string{}
		}
		c.Columns[t][col] = typ
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = conn.Query(ctx, `SELECT c.relname, i.indisprimary,
			array_agg(a.attname::text ORDER BY k.ord)
		FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
		WHERE i.indisunique AND n.nspname = current_schema()
		GROUP BY c.relname, i.indexrelid, i.indisprimary`)
	if err != nil {
		return nil, err
	}
	type pk struct {
		table string
		cols  []string
	}
	var pks []pk
	for rows.Next() {
		var t string
		var primary bool
		var cols []string
		if err := rows.Scan(&t, &primary, &cols); err != nil {
			return nil, err
		}
		c.Uniques[t] = append(c.Uniques[t], cols)
		if primary {
			pks = append(pks, pk{t, cols})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = conn.Query(ctx, `SELECT c.relname, count(*) FROM pg_constraint f JOIN pg_class c ON c.oid = f.conrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE f.contype = 'f' AND n.nspname = current_schema() GROUP BY 1`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var t string
		var n int
		if err := rows.Scan(&t, &n); err != nil {
			return nil, err
		}
		c.FKs[t] = n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Catalogue keys: single-column text primary keys of tables the replay does not insert into and
	// that hold at most 5,000 rows (products, accounts).
	slices.SortFunc(pks, func(a, b pk) int { return cmp.Compare(a.table, b.table) })
	for _, k := range pks {
		if len(k.cols) != 1 || inserted[k.table] || c.Spread[k.cols[0]] != nil {
			continue
		}
		if typ := c.Columns[k.table][k.cols[0]]; typ != "text" && !strings.HasPrefix(typ, "character") {
			continue
		}
		var vals []string
		q := fmt.Sprintf(`SELECT %s::text FROM %s ORDER BY 1 LIMIT 5001`,
			pgx.Identifier{k.cols[0]}.Sanitize(), pgx.Identifier{k.table}.Sanitize())
		r, err := conn.Query(ctx, q)
		if err != nil {
			return nil, err
		}
		vals, err = pgx.CollectRows(r, pgx.RowTo[string])
		if err != nil {
			return nil, err
		}
		if len(vals) > 0 && len(vals) <= 5000 {
			c.Spread[k.cols[0]] = vals
		}
	}
	return c, nil
}

// LoadCommon fills the most common value of each (table, column) the bound statements use.
func (c *Catalog) LoadCommon(ctx context.Context, conn *pgx.Conn, want map[[2]string]bool) error {
	for k := range want {
		if _, ok := c.Columns[k[0]][k[1]]; !ok {
			continue
		}
		var s *string
		q := fmt.Sprintf(`SELECT %[1]s::text FROM %[2]s WHERE %[1]s IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1`,
			pgx.Identifier{k[1]}.Sanitize(), pgx.Identifier{k[0]}.Sanitize())
		if err := conn.QueryRow(ctx, q).Scan(&s); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%s.%s: %w", k[0], k[1], err)
		}
		c.Common[k] = s
	}
	return nil
}

var reSafe = regexp.MustCompile(`^[A-Za-z0-9 ._@+/=-]*$`)

var reVar = regexp.MustCompile(`(^|[^:]):([A-Za-z_]\w*)`)

// concrete substitutes pgbench variables with values, for validating a statement outside pgbench.
func concrete(sql string, vals map[string]int64) string {
	return reVar.ReplaceAllStringFunc(sql, func(m string) string {
		sm := reVar.FindStringSubmatch(m)
		v, ok := vals[sm[2]]
		if !ok {
			v = 1 + rand.Int64N(freshMax)
		}
		return sm[1] + strconv.FormatInt(v, 10)
	})
}

// validate runs every slot of the plan in script order inside one transaction that is rolled back,
// each under a savepoint, and returns the statements that failed (with the error) and the rows each
// affected.
func validate(ctx context.Context, conn *pgx.Conn, p *DBPlan) (map[*Bound]string, map[*Bound]int64, error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	vals := map[string]int64{"oid": 1 + rand.Int64N(freshMax)}
	for _, s := range p.Sets {
		// \set vN random(lo, hi)
		f := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '(' || r == ',' || r == ')' })
		if len(f) >= 5 {
			lo, _ := strconv.ParseInt(f[3], 10, 64)
			hi, _ := strconv.ParseInt(f[4], 10, 64)
			vals[f[1]] = lo + rand.Int64N(max(1, hi-lo+1))
		}
	}
	bad := map[*Bound]string{}
	rows := map[*Bound]int64{}
	for _, s := range p.all() {
		if _, ok := bad[s.B]; ok {
			continue
		}
		if _, err := tx.Exec(ctx, "SAVEPOINT replay"); err != nil {
			return nil, nil, err
		}
		tag, err := tx.Exec(ctx, concrete(s.SQL, vals), pgx.QueryExecModeSimpleProtocol)
		if err == nil && s.Rep == 0 {
			rows[s.B] = tag.RowsAffected()
		}
		if err != nil {
			msg := err.Error()
			if i := strings.Index(msg, " (SQLSTATE"); i > 0 {
				msg = msg[:i]
			}
			bad[s.B] = "fails with these values (" + msg + ")"
			p.Failed = append(p.Failed, concrete(s.SQL, vals)+";\n-- "+msg)
			if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT replay"); err != nil {
				return nil, nil, err
			}
			continue
		}
		if _, err := tx.Exec(ctx, "RELEASE SAVEPOINT replay"); err != nil {
			return nil, nil, err
		}
	}
	return bad, rows, nil
}

// PGBenchRun is one pgbench run's result.
type PGBenchRun struct {
	TPS    float64 // script runs (= orders) per second
	Failed int64
	LagMs  float64 // average schedule lag with -R
	Output string
}

var (
	reTPS    = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)
	reFailed = regexp.MustCompile(`number of failed transactions: (\d+)`)
	reLag    = regexp.MustCompile(`rate limit schedule lag: avg ([0-9.]+)`)
)

// ParsePGBench reads tps, failed transactions and the schedule lag from pgbench's output.
func ParsePGBench(out string) (PGBenchRun, error) {
	r := PGBenchRun{Output: out}
	m := reTPS.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New("no tps in pgbench output")
	}
	r.TPS, _ = strconv.ParseFloat(m[1], 64)
	if m := reFailed.FindStringSubmatch(out); m != nil {
		r.Failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := reLag.FindStringSubmatch(out); m != nil {
		r.LagMs, _ = strconv.ParseFloat(m[1], 64)
	}
	if strings.Contains(out, "aborted") {
		return r, fmt.Errorf("pgbench clients aborted: %s", abortReason(out))
	}
	return r, nil
}

// LoadAvg is the machine's 1-minute load average (/proc/loadavg), "?" when unreadable.
func LoadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

var reLatency = regexp.MustCompile(`^\s+([0-9.]+)\s+(?:\d+\s+)?(\S.*)$`)

// Slowest lists the n commands with the highest average latency in pgbench -r output.
func Slowest(out string, n int) []string {
	_, lat, ok := strings.Cut(out, "statement latencies in milliseconds")
	if !ok {
		return nil
	}
	type cmdLat struct {
		ms  float64
		cmd string
	}
	var ls []cmdLat
	for _, l := range strings.Split(lat, "\n")[1:] {
		m := reLatency.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		ms, _ := strconv.ParseFloat(m[1], 64)
		ls = append(ls, cmdLat{ms, m[2]})
	}
	slices.SortStableFunc(ls, func(a, b cmdLat) int { return cmp.Compare(b.ms, a.ms) })
	var outs []string
	for _, l := range ls[:min(n, len(ls))] {
		c := l.cmd
		if len(c) > 60 {
			c = c[:60] + "…"
		}
		outs = append(outs, fmt.Sprintf("%.2f ms %s", l.ms, c))
	}
	return outs
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], " | ")
}

// pgbench runs one script; rate > 0 throttles it (-R).
func pgbench(ctx context.Context, bin, dsn, script string, clients int, d time.Duration, rate float64) (PGBenchRun, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return PGBenchRun{}, err
	}
	env := os.Environ()
	if pw, ok := u.User.Password(); ok {
		env = append(env, "PGPASSWORD="+pw)
		u.User = url.User(u.User.Username())
	}
	args := []string{"-n", "-r", "-M", "prepared", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)),
		"-T", strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second))), "-f", script}
	if rate > 0 {
		args = append(args, "-R", fmt.Sprintf("%.1f", rate))
	}
	cctx, cancel := context.WithTimeout(ctx, d+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, bin, append(args, u.String())...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	r, err := ParsePGBench(out.String())
	if err == nil && runErr != nil {
		err = fmt.Errorf("pgbench: %w: %s", runErr, abortReason(out.String()))
	}
	return r, err
}

// abortReason is the first client's error in pgbench's output (why it aborted), else its last lines.
func abortReason(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "aborted in command") || strings.Contains(l, "ERROR:") {
			return l
		}
	}
	return lastLines(out, 4)
}

// Harmonic combines per-database rates measured alone: each order needs the work of every database,
// so at saturation the seconds per order add up.
func Harmonic(rates []float64) float64 {
	var s float64
	for _, r := range rates {
		if r <= 0 {
			return 0
		}
		s += 1 / r
	}
	if s == 0 {
		return 0
	}
	return 1 / s
}

// CeilingResult is what PGCeiling measured.
type CeilingResult struct {
	Plans []*DBPlan
	Alone map[string]float64 // orders/s per database replayed alone
	// Estimate is Harmonic(Alone), the ceiling reported (Ceiling); Concurrent the orders/s every
	// database kept up with when all three ran at once throttled to Estimate (min over the databases):
	// a check of the additive model, reported beside it.
	Estimate, Concurrent, Ceiling float64
	KeptUp                        bool
	Report                        string
}

// PGCeiling copies the stack's three databases (CREATE DATABASE … TEMPLATE, after the stack stopped:
// seeded catalogue and accounts, the run's rows), builds one pgbench script per database from the
// statements per order of the run (before → after over orders, with the run's committed
// transactions per database), runs each alone for cfg.Each with cfg.Clients clients, then all three
// at once at the combined rate, and reports the orders/s PostgreSQL alone sustains beside stackRate.
// The copies are dropped by p.Drop.
func PGCeiling(ctx context.Context, p *PGStack, before, after StmtStats, st0, st1 DBStats, orders int64,
	stackRate float64, cfg CeilingConfig, log io.Writer) (*CeilingResult, error) {
	if orders <= 0 {
		return nil, errors.New("pg-ceiling: no orders in the run")
	}
	dir, err := os.MkdirTemp("", "shopmesh-pg-ceiling-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	deltas := Deltas(before, after)
	res := &CeilingResult{Alone: map[string]float64{}}
	dsns := map[string]string{}
	scripts := map[string]string{}
	for _, svc := range []string{localstack.Order, localstack.Inventory, localstack.Payment} {
		copyDB, dsn, err := p.copyDB(ctx, svc)
		if err != nil {
			return nil, err
		}
		dsns[svc] = dsn
		plan, err := buildPlan(ctx, dsn, svc, deltas[svc], orders, st1[svc][0]-st0[svc][0], cfg.MinPerOrder)
		if err != nil {
			return nil, fmt.Errorf("pg-ceiling %s (%s): %w", svc, copyDB, err)
		}
		res.Plans = append(res.Plans, plan)
		path := filepath.Join(dir, svc+".sql")
		if err := os.WriteFile(path, []byte(plan.Script()), 0o600); err != nil {
			return nil, err
		}
		scripts[svc] = path
		if cfg.ScriptDir != "" {
			_ = os.MkdirAll(cfg.ScriptDir, 0o755)
			_ = os.WriteFile(filepath.Join(cfg.ScriptDir, "pg-ceiling-"+svc+".sql"), []byte(plan.Script()), 0o644)
			_ = os.WriteFile(filepath.Join(cfg.ScriptDir, "pg-ceiling-"+svc+"-unbound.sql"), []byte(strings.Join(plan.Failed, "\n\n")), 0o644)
		}
	}
	var rates []float64
	for _, plan := range res.Plans {
		r, err := pgbench(ctx, cfg.PGBench, dsns[plan.Service], scripts[plan.Service], cfg.Clients, cfg.Each, 0)
		if err != nil {
			return nil, fmt.Errorf("pg-ceiling %s alone: %w", plan.Service, err)
		}
		fmt.Fprintf(log, "  pgbench %s alone: %.0f orders/s (%d clients, %v); slowest commands: %s\n", plan.Service, r.TPS, cfg.Clients, cfg.Each,
			strings.Join(Slowest(r.Output, 3), "; "))
		res.Alone[plan.Service] = r.TPS
		rates = append(rates, r.TPS)
	}
	res.Estimate = Harmonic(rates)
	// All three at once, each throttled to the estimate: the orders/s every database keeps up with.
	var wg sync.WaitGroup
	var mu sync.Mutex
	conc := map[string]PGBenchRun{}
	var errs []error
	for _, plan := range res.Plans {
		wg.Go(func() {
			r, err := pgbench(ctx, cfg.PGBench, dsns[plan.Service], scripts[plan.Service], cfg.Clients, cfg.Each, res.Estimate)
			mu.Lock()
			defer mu.Unlock()
			conc[plan.Service] = r
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", plan.Service, err))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pg-ceiling concurrent run: %w", err)
	}
	res.Concurrent = math.Inf(1)
	var concParts []string
	for _, plan := range res.Plans {
		r := conc[plan.Service]
		res.Concurrent = min(res.Concurrent, r.TPS)
		concParts = append(concParts, fmt.Sprintf("%s %.0f/s (lag %.1f ms)", plan.Service, r.TPS, r.LagMs))
	}
	res.KeptUp = res.Concurrent >= 0.95*res.Estimate
	res.Ceiling = res.Estimate
	res.Report = res.format(orders, stackRate, cfg, strings.Join(concParts, ", "))
	return res, nil
}

func (r *CeilingResult) format(orders int64, stackRate float64, cfg CeilingConfig, conc string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "PostgreSQL ceiling (pg-ceiling: pgbench replay of the run's pg_stat_statements, %d orders; %d clients per database, %v per run):\n", orders, cfg.Clients, cfg.Each)
	var alone []string
	for _, p := range r.Plans {
		fmt.Fprintf(&b, "  %-9s run %.1f statements (+ BEGIN/COMMIT), %.1f tx per order; replayed %.1f statements in %.1f tx (%d BEGIN…COMMIT + %.1f autocommit)",
			p.Service, p.RealStmts, p.RealTx, p.Stmts(), p.Tx(), len(p.Txs), p.Tx()-float64(len(p.Txs)))
		if p.Background > 0 || p.Unbound > 0 {
			fmt.Fprintf(&b, "; not replayed: %.2f background, %.2f unbound", p.Background, p.Unbound)
		}
		fmt.Fprintf(&b, "; alone %.0f orders/s\n", r.Alone[p.Service])
		for _, w := range p.UnboundWhy {
			fmt.Fprintf(&b, "            unbound: %s\n", w)
		}
		for _, w := range p.Missed {
			fmt.Fprintf(&b, "            touches no row in the replay: %s\n", w)
		}
		alone = append(alone, fmt.Sprintf("1/%.0f", r.Alone[p.Service]))
	}
	fmt.Fprintf(&b, "  combined 1/(%s) = %.0f orders/s; all three at once at that rate: %s → %s\n",
		strings.Join(alone, " + "), r.Estimate, conc, map[bool]string{true: "kept up", false: "did not keep up"}[r.KeptUp])
	frac := 0.0
	if r.Ceiling > 0 {
		frac = stackRate / r.Ceiling
	}
	fmt.Fprintf(&b, "  ceiling %.0f orders/s; the stack's %.0f orders/s (closed loop, same run) = %.0f%% of it (%.0f%% of the %.0f/s all three sustained at once)\n",
		r.Ceiling, stackRate, 100*frac, 100*stackRate/max(r.Concurrent, 1e-9), r.Concurrent)
	return b.String()
}

// buildPlan prepares every statement on the copy (parameter types), reads the catalog, binds,
// validates and returns the plan.
func buildPlan(ctx context.Context, dsn, svc string, ds []StmtDelta, orders, xacts int64, minPerOrder float64) (*DBPlan, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	types := map[string][]string{}
	inserted := map[string]bool{}
	typeName := map[uint32]string{}
	for _, d := range ds {
		if reTxBegin.MatchString(d.Query) || reTxEnd.MatchString(d.Query) || reTxOther.MatchString(d.Query) ||
			float64(d.Calls)/float64(orders) < minPerOrder {
			continue
		}
		sd, err := conn.Prepare(ctx, "", d.Query)
		if err != nil {
			continue // reported as not prepared
		}
		var ts []string
		for _, oid := range sd.ParamOIDs {
			name, ok := typeName[oid]
			if !ok {
				if err := conn.QueryRow(ctx, `SELECT format_type($1::oid, NULL)`, oid).Scan(&name); err != nil {
					return nil, err
				}
				typeName[oid] = name
			}
			ts = append(ts, name)
		}
		types[d.Query] = ts
		for _, m := range reInsertAt.FindAllStringSubmatch(strings.Join(strings.Fields(d.Query), " "), -1) {
			inserted[tableOf(m[1])] = true
		}
	}
	cat, err := LoadCatalog(ctx, conn, inserted)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	// Most common values of every (table, column) a statement names.
	want := map[[2]string]bool{}
	for q := range types {
		b := cat.Bind(StmtDelta{Query: q}, 1, types[q])
		for _, col := range b.cols {
			if col != "" {
				want[[2]string{cat.tableWith(b.Table, col), col}] = true
			}
		}
	}
	if err := cat.LoadCommon(ctx, conn, want); err != nil {
		return nil, err
	}
	plan := Plan(svc, cat, ds, types, orders, xacts, minPerOrder)
	var rows map[*Bound]int64
	for range 3 { // a failing statement can make a later one fail too: drop and retry
		var bad map[*Bound]string
		bad, rows, err = validate(ctx, conn, plan)
		if err != nil {
			return nil, fmt.Errorf("validate: %w", err)
		}
		if len(bad) == 0 {
			break
		}
		plan.Drop(bad)
	}
	seen := map[*Bound]bool{}
	for _, s := range plan.all() {
		if seen[s.B] {
			continue
		}
		seen[s.B] = true
		if real := float64(s.B.Rows) / float64(max(1, s.B.Calls)); rows[s.B] == 0 && real >= 0.5 {
			plan.Missed = append(plan.Missed, fmt.Sprintf("%.2f/order, %.1f rows/call in the run: %s", s.B.PerOrder, real, short(s.B.Query)))
		}
	}
	return plan, nil
}
