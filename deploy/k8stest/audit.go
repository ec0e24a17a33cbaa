package k8stest

import (
	"bufio"
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/shopmesh/shopmesh/deploy/composetest"
)

// AuditQuery returns the query the audit runs in the order database (psql -tA -F'|'): every order whose
// idempotency key starts with prefix, with its status and how many of its events the outbox still has
// to send (the relay deletes, or marks, a row once every destination has it). The prefix is the
// harness's run id: letters, digits and '-' only.
func AuditQuery(prefix string) string {
	return "SELECT o.idempotency_key, o.id, o.status, " +
		"(SELECT count(*) FROM outbox x WHERE x.msg_key = o.id AND x.sent_at IS NULL) " +
		"FROM orders o WHERE o.idempotency_key LIKE '" + prefix + "%' ORDER BY 1"
}

// Row is one line of AuditQuery's answer.
type Row struct {
	Key, ID, Status string
	// Unsent is the number of the order's events still in the outbox, not yet published.
	Unsent int
}

// ParseRows reads psql's unaligned output (key|id|status|events per line).
func ParseRows(out []byte) ([]Row, error) {
	var rows []Row
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != 4 {
			return nil, fmt.Errorf("audit row %q: want key|id|status|events", line)
		}
		n, err := strconv.Atoi(f[3])
		if err != nil {
			return nil, fmt.Errorf("audit row %q: %w", line, err)
		}
		rows = append(rows, Row{Key: f[0], ID: f[1], Status: f[2], Unsent: n})
	}
	return rows, sc.Err()
}

// Terminal are the order statuses an order ends in.
var Terminal = map[string]bool{"CONFIRMED": true, "CANCELLED": true}

// AuditResult compares the orders the clients were told were accepted with the order database.
type AuditResult struct {
	Accepted int
	Rows     int
	ByStatus map[string]int
	// Missing: accepted, no row. WrongID: the row's id is not the one the API answered.
	// NotTerminal: the row is not CONFIRMED/CANCELLED. Unsent: events of the order not yet published.
	// Unclaimed: a row whose order the client counted as failed (it may have been created after all: not
	// an error, reported).
	Missing, WrongID, NotTerminal, Unsent, Unclaimed []string
}

// OK reports an audit without a lost, stuck, doubled or misattributed order.
func (r AuditResult) OK() bool {
	return len(r.Missing)+len(r.WrongID)+len(r.NotTerminal)+len(r.Unsent) == 0
}

func (r AuditResult) String() string {
	keys := make([]string, 0, len(r.ByStatus))
	for k := range r.ByStatus {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, r.ByStatus[k])
	}
	s := fmt.Sprintf("%d accepted, %d rows (%s)", r.Accepted, r.Rows, strings.Join(parts, ", "))
	for _, p := range []struct {
		name string
		l    []string
	}{{"missing", r.Missing}, {"wrong id", r.WrongID}, {"not terminal", r.NotTerminal},
		{"events not published", r.Unsent}, {"rows of orders counted failed", r.Unclaimed}} {
		if len(p.l) > 0 {
			s += fmt.Sprintf("; %s: %d (%s)", p.name, len(p.l), strings.Join(first(p.l, 5), ", "))
		}
	}
	return s
}

func first(l []string, n int) []string {
	if len(l) > n {
		return append(l[:n:n], "…")
	}
	return l
}

// Audit checks that every accepted order has exactly one row (the idempotency key is unique per
// customer), with the id the API answered, in a terminal status, with every event published.
func Audit(outs []composetest.Outcome, rows []Row) AuditResult {
	r := AuditResult{ByStatus: map[string]int{}, Rows: len(rows)}
	byKey := map[string]Row{}
	for _, row := range rows {
		byKey[row.Key] = row
		r.ByStatus[row.Status]++
	}
	accepted := map[string]bool{}
	for _, o := range outs {
		if !o.Accepted {
			continue
		}
		r.Accepted++
		accepted[o.Key] = true
		row, ok := byKey[o.Key]
		switch {
		case !ok:
			r.Missing = append(r.Missing, o.Key)
			continue
		case row.ID != o.OrderID:
			r.WrongID = append(r.WrongID, fmt.Sprintf("%s: row %s, answered %s", o.Key, row.ID, o.OrderID))
		}
		if !Terminal[row.Status] {
			r.NotTerminal = append(r.NotTerminal, row.ID+" "+row.Status)
		}
		if row.Unsent != 0 {
			r.Unsent = append(r.Unsent, fmt.Sprintf("%s: %d", row.ID, row.Unsent))
		}
	}
	for _, row := range rows {
		if !accepted[row.Key] {
			r.Unclaimed = append(r.Unclaimed, row.ID+" "+row.Status)
		}
	}
	return r
}
