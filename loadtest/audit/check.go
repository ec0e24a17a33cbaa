package audit

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
)

// The wiring the audit knows: which topics exist and which inboxes apply the order events.
const (
	orderTopic     = "shopmesh.order.events"
	inventoryTopic = "shopmesh.inventory.events"
)

// orderConsumers are the consumers (Kafka groups and inbox names) that apply every OrderConfirmed
// and OrderCancelled: a dead letter of an order event that does not name its consumer is accounted
// for once all of them applied it.
var orderConsumers = []string{"inventory", "payment"}

// Statuses as the services store them.
const (
	orderPending   = "PENDING"
	orderConfirmed = "CONFIRMED"
	orderCancelled = "CANCELLED"

	resHeld      = "HELD"
	resCommitted = "COMMITTED"
	resReleased  = "RELEASED"

	authAuthorized = "AUTHORIZED"
	authDeclined   = "DECLINED"
	authCaptured   = "CAPTURED"
	authVoided     = "VOIDED"

	entryHold    = "HOLD"
	entryRelease = "RELEASE"
	entryDebit   = "DEBIT"
)

type input struct {
	start    time.Time
	accepted []string
	opening  map[string]int64
	orders   orderSnap
	inv      inventorySnap
	pay      paymentSnap
	dlq      []dlqEntry
}

func (in input) check() Report {
	var r Report
	for _, twice := range slices.Concat(in.orders.twice, in.inv.twice, in.pay.twice) {
		r.violate("one row per order expected, found more: %s", twice)
	}
	in.checkKeys(&r)
	in.checkOrders(&r)
	in.checkOrphans(&r)
	in.checkMoney(&r)
	in.checkStock(&r)
	in.checkDLQ(&r)
	return r
}

// checkKeys: every accepted key has exactly one order; no customer has two orders under one key.
func (in input) checkKeys(r *Report) {
	byKey := map[string][]*order{}
	perCustomer := map[[2]string]int{}
	for i := range in.orders.orders {
		o := &in.orders.orders[i]
		if o.key == "" {
			continue
		}
		byKey[o.key] = append(byKey[o.key], o)
		perCustomer[[2]string{o.customer, o.key}]++
	}
	dup := map[string]bool{}
	for ck, n := range perCustomer {
		if n > 1 {
			dup[ck[1]] = true
			r.Duplicated++
			r.violate("duplicated: customer %s has %d orders under idempotency key %q", ck[0], n, ck[1])
		}
	}
	seen := map[string]bool{}
	for _, k := range in.accepted {
		if seen[k] {
			continue // the client saw the same order twice (a retry answered with the original)
		}
		seen[k] = true
		switch os := byKey[k]; {
		case len(os) == 0:
			r.Lost++
			r.violate("lost: accepted idempotency key %q has no order", k)
		case len(os) > 1 && !dup[k]:
			r.Duplicated++
			r.violate("duplicated: accepted idempotency key %q names %d orders (%s)", k, len(os), orderIDs(os))
		}
	}
}

func orderIDs(os []*order) string {
	ids := make([]string, len(os))
	for i, o := range os {
		ids[i] = o.id + " of " + o.customer
	}
	return strings.Join(ids, ", ")
}

// checkOrders: each order's status against its reservation and its authorization.
func (in input) checkOrders(r *Report) {
	for i := range in.orders.orders {
		o := &in.orders.orders[i]
		r.Orders++
		res := in.inv.reservations[o.id]
		auth := in.pay.auths[o.id]
		stuck := false
		switch o.status {
		case orderPending:
			r.Pending++
			stuck = true
			r.violate("stuck: order %s is PENDING (reservation %s, payment %s)", o.id, resStatus(res), authStatus(auth))
		case orderConfirmed:
			r.Confirmed++
			stuck = in.checkConfirmed(r, o, res, auth)
		case orderCancelled:
			r.Cancelled++
			stuck = in.checkCancelled(r, o, res, auth)
		default:
			r.violate("order %s has unknown status %q", o.id, o.status)
		}
		if stuck {
			r.Stuck++
		}
	}
}

// checkConfirmed: one capture of the full amount, one committed reservation of exactly the order's
// lines. It reports whether the order is stuck (a hold still open).
func (in input) checkConfirmed(r *Report, o *order, res *reservation, auth *authorization) (stuck bool) {
	switch {
	case auth == nil:
		r.violate("confirmed order %s has no payment authorization", o.id)
	case auth.status == authAuthorized:
		stuck = true
		r.HeldCents += auth.amount
		r.violate("stuck: confirmed order %s: %d cents authorized, never captured (money held)", o.id, auth.amount)
	case auth.status != authCaptured:
		r.violate("confirmed order %s: payment %s, want CAPTURED", o.id, auth.status)
	}
	if auth != nil && auth.status != authDeclined {
		if auth.amount != o.total {
			r.violate("order %s: payment amount %d cents, order total %d", o.id, auth.amount, o.total)
		}
		if auth.customer != o.customer {
			r.violate("order %s of %s: payment taken from %s", o.id, o.customer, auth.customer)
		}
	}
	switch {
	case res == nil:
		r.violate("confirmed order %s has no stock reservation", o.id)
	case res.status == resHeld:
		stuck = true
		r.HeldUnits += units(res.lines)
		r.violate("stuck: confirmed order %s: reservation HELD, never committed (%d units held)", o.id, units(res.lines))
	case res.status != resCommitted:
		r.violate("confirmed order %s: reservation %s, want COMMITTED", o.id, res.status)
	}
	if res != nil && len(res.lines) > 0 && !sameLines(o.lines, res.lines) {
		r.violate("order %s: reserved %s, ordered %s", o.id, fmtLines(res.lines), fmtLines(o.lines))
	}
	return stuck
}

// checkCancelled: no capture, the hold voided or never made, the reservation released or never made.
func (in input) checkCancelled(r *Report, o *order, res *reservation, auth *authorization) (stuck bool) {
	if auth != nil {
		switch auth.status {
		case authAuthorized:
			stuck = true
			r.HeldCents += auth.amount
			r.violate("stuck: cancelled order %s: %d cents still authorized (hold not voided)", o.id, auth.amount)
		case authCaptured:
			r.violate("cancelled order %s was charged: %d cents captured", o.id, auth.amount)
		}
	}
	if res != nil {
		switch res.status {
		case resHeld:
			stuck = true
			r.HeldUnits += units(res.lines)
			r.violate("stuck: cancelled order %s: reservation HELD, never released (%d units held)", o.id, units(res.lines))
		case resCommitted:
			r.violate("cancelled order %s: its stock was committed (%s)", o.id, fmtLines(res.lines))
		}
		if len(res.lines) > 0 && !sameLines(o.lines, res.lines) {
			r.violate("order %s: reserved %s, ordered %s", o.id, fmtLines(res.lines), fmtLines(o.lines))
		}
	}
	return stuck
}

// checkOrphans: a reservation or authorization of an order the order snapshot lacks is younger than
// the audit (skipped) or an effect of no order at all.
func (in input) checkOrphans(r *Report) {
	for _, id := range slices.Sorted(maps.Keys(in.inv.reservations)) {
		v := in.inv.reservations[id]
		if in.orders.byID[id] != nil {
			continue
		}
		if !v.created.Before(in.start) {
			r.DownstreamIgnored++
			continue
		}
		r.violate("reservation of unknown order %s (%s, %s)", id, v.status, fmtLines(v.lines))
	}
	for _, id := range slices.Sorted(maps.Keys(in.pay.auths)) {
		a := in.pay.auths[id]
		if in.orders.byID[id] != nil {
			continue
		}
		if !a.created.Before(in.start) {
			r.DownstreamIgnored++
			continue
		}
		r.violate("payment authorization of unknown order %s (%s, %d cents of %s)", id, a.status, a.amount, a.customer)
	}
}

// checkMoney: the ledger matches every authorization, each account's hold is what its open
// authorizations hold, and (when known) balance + captured = opening balance.
func (in input) checkMoney(r *Report) {
	type sums struct{ hold, release, debit, open int64 }
	perCustomer := map[string]*sums{}
	sumOf := func(c string) *sums {
		if perCustomer[c] == nil {
			perCustomer[c] = &sums{}
		}
		return perCustomer[c]
	}
	kinds := map[string]map[string]entry{}
	for _, e := range in.pay.entries {
		if kinds[e.orderID] == nil {
			kinds[e.orderID] = map[string]entry{}
		}
		if _, twice := kinds[e.orderID][e.kind]; twice {
			r.violate("ledger: order %s has two %s entries", e.orderID, e.kind)
		}
		kinds[e.orderID][e.kind] = e
		s := sumOf(e.customer)
		switch e.kind {
		case entryHold:
			s.hold += e.amount
		case entryRelease:
			s.release += e.amount
		case entryDebit:
			s.debit += e.amount
		default:
			r.violate("ledger: order %s has an entry of unknown kind %q", e.orderID, e.kind)
		}
	}
	want := map[string][]string{
		authAuthorized: {entryHold},
		authCaptured:   {entryDebit, entryHold},
		authVoided:     {entryHold, entryRelease},
		authDeclined:   nil,
	}
	for _, id := range slices.Sorted(maps.Keys(in.pay.auths)) {
		a := in.pay.auths[id]
		if a.status == authAuthorized {
			sumOf(a.customer).open += a.amount
		}
		w, known := want[a.status]
		if !known {
			r.violate("payment of order %s has unknown status %q", id, a.status)
			continue
		}
		got := slices.Sorted(maps.Keys(kinds[id]))
		if !slices.Equal(got, w) {
			r.violate("ledger: payment of order %s is %s with entries %v, want %v", id, a.status, got, w)
		}
		for _, e := range kinds[id] {
			if e.amount != a.amount || e.customer != a.customer {
				r.violate("ledger: %s of order %s is %d cents of %s, the authorization %d cents of %s",
					e.kind, id, e.amount, e.customer, a.amount, a.customer)
			}
		}
	}
	for _, id := range slices.Sorted(maps.Keys(kinds)) {
		if in.pay.auths[id] == nil {
			r.violate("ledger: entries %v of order %s have no authorization", slices.Sorted(maps.Keys(kinds[id])), id)
		}
	}
	accounts := map[string]bool{}
	for _, a := range in.pay.accounts {
		r.Accounts++
		accounts[a.customer] = true
		s := sumOf(a.customer)
		if a.held != s.open {
			r.violate("money: account %s holds %d cents, its open authorizations %d", a.customer, a.held, s.open)
		}
		if ledger := s.hold - s.release - s.debit; a.held != ledger {
			r.violate("money: account %s holds %d cents, its ledger %d (holds %d - releases %d - debits %d)",
				a.customer, a.held, ledger, s.hold, s.release, s.debit)
		}
		if a.held < 0 || a.held > a.balance {
			r.violate("money: account %s has balance %d and held %d", a.customer, a.balance, a.held)
		}
		if opening, ok := in.opening[a.customer]; ok && a.balance+s.debit != opening {
			r.violate("money: account %s: balance %d + captured %d = %d, opening balance %d (%+d)",
				a.customer, a.balance, s.debit, a.balance+s.debit, opening, a.balance+s.debit-opening)
		}
	}
	for _, c := range slices.Sorted(maps.Keys(perCustomer)) {
		if !accounts[c] {
			r.violate("money: customer %s has payments but no account", c)
		}
	}
	for _, c := range slices.Sorted(maps.Keys(in.opening)) {
		if !accounts[c] {
			r.violate("money: account %s with an opening balance is missing", c)
		}
	}
}

// checkStock: per SKU, reserved = the HELD reservations' units and, where the outbox still holds the
// SKU's whole history, on hand + committed = seeded + imported.
func (in input) checkStock(r *Report) {
	held := map[string]int64{}
	committed := map[string]int64{}
	for _, v := range in.inv.reservations {
		for _, l := range v.lines {
			switch v.status {
			case resHeld:
				held[l.sku] += l.qty
			case resCommitted:
				committed[l.sku] += l.qty
			}
		}
		if v.status != resHeld && v.status != resCommitted && v.status != resReleased {
			r.violate("reservation of order %s has unknown status %q", v.orderID, v.status)
		}
	}
	unchecked := 0
	for _, p := range in.inv.products {
		r.SKUs++
		if p.reserved != held[p.sku] {
			r.violate("stock: %s has %d reserved, its HELD reservations %d", p.sku, p.reserved, held[p.sku])
		}
		if p.reserved < 0 || p.onHand < p.reserved {
			r.violate("stock: %s has %d on hand and %d reserved", p.sku, p.onHand, p.reserved)
		}
		evs := in.inv.events[p.sku]
		if !completeHistory(evs, p.version) {
			unchecked++
			continue
		}
		var imported, available int64
		for _, e := range evs {
			available += e.delta
			if e.cause == eventsv1.StockChangeCause_STOCK_CHANGE_CAUSE_IMPORTED {
				imported += e.delta
			}
		}
		if p.onHand+committed[p.sku] != imported {
			r.violate("stock: %s: on hand %d + committed %d = %d, seeded + imported %d (%+d)",
				p.sku, p.onHand, committed[p.sku], p.onHand+committed[p.sku], imported, p.onHand+committed[p.sku]-imported)
		}
		if available != p.onHand-p.reserved {
			r.violate("stock: %s: its events add up to %d available, the product has %d", p.sku, available, p.onHand-p.reserved)
		}
	}
	if unchecked > 0 {
		r.note("stock: conservation of %d of %d SKUs not checked: their history is incomplete (sent rows leave the outbox: give the audit Kafka)",
			unchecked, len(in.inv.products))
	}
}

// completeHistory reports whether evs are the versions 1..version of a product, each once.
func completeHistory(evs []stockEvent, version int64) bool {
	if int64(len(evs)) != version {
		return false
	}
	seen := make([]bool, version+1)
	for _, e := range evs {
		if e.version < 1 || e.version > version || seen[e.version] {
			return false
		}
		seen[e.version] = true
	}
	return true
}

// checkDLQ: each dead letter's event was applied by its consumer (or, when the entry does not say
// which, by every consumer of its topic), or replayed, or its effect is in place anyway (the order
// service's settlement and compensation workers capture, commit, void and release directly).
func (in input) checkDLQ(r *Report) {
	applied := func(consumer, id string) bool {
		return id != "" && (in.inv.applied[consumer][id] || in.pay.applied[consumer][id])
	}
	for _, e := range in.dlq {
		r.DLQEntries++
		if e.replayed {
			continue
		}
		consumers := []string{e.consumer}
		if e.consumer == "" && e.topic == orderTopic {
			consumers = orderConsumers
		}
		var missing []string
		for _, c := range consumers {
			switch {
			case c == "" && e.eventID != "" && anyApplied(in, e.eventID):
			case c != "" && applied(c, e.eventID):
			case in.effectInPlace(c, e):
			default:
				missing = append(missing, cmp.Or(c, "any consumer"))
			}
		}
		if len(missing) == 0 {
			continue
		}
		r.DLQUnaccounted++
		r.violate("dead letter %s: event %s (%s) of %s not applied by %s, not replayed, effect not in place; reason: %s",
			e.position, e.eventID, e.eventType, e.topic, strings.Join(missing, ", "), e.reason)
	}
}

// effectInPlace reports whether what consumer does on the entry's order event is done: the payment
// captured (OrderConfirmed) or not held (OrderCancelled), the reservation committed or not held.
func (in input) effectInPlace(consumer string, e dlqEntry) bool {
	if e.orderID == "" {
		return false
	}
	confirmed := strings.HasSuffix(e.eventType, ".OrderConfirmed")
	cancelled := strings.HasSuffix(e.eventType, ".OrderCancelled")
	switch consumer {
	case "payment":
		a := in.pay.auths[e.orderID]
		return (confirmed && a != nil && a.status == authCaptured) ||
			(cancelled && (a == nil || a.status == authVoided || a.status == authDeclined))
	case "inventory":
		v := in.inv.reservations[e.orderID]
		return (confirmed && v != nil && v.status == resCommitted) ||
			(cancelled && (v == nil || v.status == resReleased))
	}
	return false
}

func anyApplied(in input, id string) bool {
	for _, m := range []map[string]map[string]bool{in.inv.applied, in.pay.applied} {
		for _, ids := range m {
			if ids[id] {
				return true
			}
		}
	}
	return false
}

func resStatus(v *reservation) string {
	if v == nil {
		return "none"
	}
	return v.status
}

func authStatus(a *authorization) string {
	if a == nil {
		return "none"
	}
	return a.status
}

func units(ls []line) int64 {
	var n int64
	for _, l := range ls {
		n += l.qty
	}
	return n
}

// sameLines compares two sets of lines as quantities per SKU.
func sameLines(a, b []line) bool {
	return maps.Equal(perSKU(a), perSKU(b))
}

func perSKU(ls []line) map[string]int64 {
	m := map[string]int64{}
	for _, l := range ls {
		m[l.sku] += l.qty
	}
	return m
}

func fmtLines(ls []line) string {
	m := perSKU(ls)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d×%s", m[k], k)
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, " ")
}
