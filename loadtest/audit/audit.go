// Package audit checks, after a load or fault campaign has settled, that the order saga kept its
// promises: every accepted order exists once and ended in one terminal state, a confirmed order was
// captured once and its stock committed, a cancelled one neither, money and stock are conserved, no
// hold is left behind, and every dead-lettered event was applied or replayed. It reads the three
// services' databases (PostgreSQL or SQLite) in read-only transactions and, when brokers are given,
// the Kafka dead-letter topics; it writes nothing.
package audit

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go/sasl"
)

// Config names what to audit.
type Config struct {
	// Order, Inventory, Payment are the services' DSNs: postgres://… or an SQLite file (a path, or
	// sqlite:<path> / file:<path>).
	Order, Inventory, Payment string
	// Kafka lists brokers; when set, every "<topic>.dlq" topic is read and its entries accounted for,
	// and the StockChanged events on inventory's topic complete each product's history (the outbox
	// deletes a row once it is sent).
	Kafka []string
	// KafkaSASL is how the Kafka clients authenticate (pkg/platform/kafkaauth): the admin's SCRAM
	// credential on an authenticating cluster (infra.env's KAFKA_USERNAME/KAFKA_PASSWORD); nil: they do not.
	KafkaSASL sasl.Mechanism
	// DLQTopics, when set, limits the dead letters read to these topics (e.g. on a broker other
	// suites share); by default every topic named "*.dlq" is read.
	DLQTopics []string
	// DLQSince, when set, leaves out dead letters and stock events written before it (a campaign's
	// scenario on a Kafka that earlier scenarios or test suites also wrote to).
	DLQSince time.Time
	// ReplayGroup is the consumer group whose committed offsets on a dead-letter topic record what
	// was replayed (default DefaultReplayGroup, the dlq command's).
	ReplayGroup string
	// AcceptedKeys are the idempotency keys of the CreateOrder calls the client saw accepted (201/200
	// with an order). Keys are taken as unique across customers, as a campaign's random keys are.
	AcceptedKeys []string
	// OpeningBalances, when set, are the customers' balances before any order (DevOpeningBalances is
	// make run's seed): each listed account must hold its opening balance minus what was captured from
	// it. Without it the per-account ledger checks still run; the opening balance itself is recorded
	// nowhere in the payment schema.
	OpeningBalances map[string]int64
	// Timeout bounds the whole audit when ctx has no deadline (default 2 min).
	Timeout time.Duration
}

// Report is the audit's outcome.
type Report struct {
	// Orders counts the orders in the order database's snapshot, by status.
	Orders, Confirmed, Cancelled, Pending int
	// Lost: accepted keys without an order. Duplicated: keys naming more than one order. Stuck: orders
	// not finished — PENDING, or terminal while money or stock is still held for them.
	Lost, Duplicated, Stuck int // each must be 0
	// DLQEntries counts the messages on the Kafka dead-letter topics; DLQUnaccounted those whose event
	// was neither applied by the consumer that gave up on it nor replayed.
	DLQEntries, DLQUnaccounted int
	// HeldCents and HeldUnits are the money and stock still held for orders that are CONFIRMED or
	// CANCELLED (open authorizations, HELD reservations).
	HeldCents, HeldUnits int64 // holds left on terminal orders
	// Violations are human-readable findings, capped at MaxViolations; ViolationCount counts them all.
	Violations []string // human-readable, capped at 50
	// ViolationCount is the number of findings, including those past the cap.
	ViolationCount int
	// Accounts, SKUs and DownstreamIgnored describe the coverage: accounts and SKUs checked, and
	// reservations or authorizations of orders created after the order snapshot (skipped).
	Accounts, SKUs, DownstreamIgnored int
	// Notes are checks that could not run (e.g. stock conservation of a SKU whose outbox history was
	// purged); they do not make the report fail.
	Notes []string
}

// MaxViolations caps Report.Violations.
const MaxViolations = 50

// OK reports whether every invariant held.
func (r Report) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.Stuck == 0 && r.DLQUnaccounted == 0 &&
		r.HeldCents == 0 && r.HeldUnits == 0 && r.ViolationCount == 0 && len(r.Violations) == 0
}

// Line is the one-line summary, e.g. "audit: 1234 orders (1200 confirmed, 34 cancelled, 0 pending);
// lost 0, duplicated 0, stuck 0; DLQ 0 (0 unaccounted)"; holds and violations are appended when there
// are any.
func (r Report) Line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "audit: %d orders (%d confirmed, %d cancelled, %d pending); lost %d, duplicated %d, stuck %d; DLQ %d (%d unaccounted)",
		r.Orders, r.Confirmed, r.Cancelled, r.Pending, r.Lost, r.Duplicated, r.Stuck, r.DLQEntries, r.DLQUnaccounted)
	if r.HeldCents != 0 || r.HeldUnits != 0 {
		fmt.Fprintf(&b, "; held %d cents, %d units", r.HeldCents, r.HeldUnits)
	}
	if n := max(r.ViolationCount, len(r.Violations)); n > 0 {
		fmt.Fprintf(&b, "; %d violations", n)
	}
	return b.String()
}

// violate records one finding.
func (r *Report) violate(format string, args ...any) {
	r.ViolationCount++
	if len(r.Violations) < MaxViolations {
		r.Violations = append(r.Violations, fmt.Sprintf(format, args...))
	}
}

func (r *Report) note(format string, args ...any) {
	if len(r.Notes) < MaxViolations {
		r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
	}
}

// DevOpeningBalances is the payment service's development seed (make run): cust-0001 … cust-1000
// with 100,000.00 EUR each and cust-broke with nothing.
func DevOpeningBalances() map[string]int64 {
	m := make(map[string]int64, 1001)
	for i := 1; i <= 1000; i++ {
		m[fmt.Sprintf("cust-%04d", i)] = 10_000_000
	}
	m["cust-broke"] = 0
	return m
}

// Run audits the databases (and dead-letter topics) cfg names. An error means the audit could not
// run (a database unreachable, a schema it does not know); findings are in the Report.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Order == "" || cfg.Inventory == "" || cfg.Payment == "" {
		return Report{}, fmt.Errorf("audit: the order, inventory and payment DSNs are all required")
	}
	if _, ok := ctx.Deadline(); !ok {
		timeout := cfg.Timeout
		if timeout <= 0 {
			timeout = 2 * time.Minute
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}

	// The dead letters first: an entry whose event is applied by the time the databases are read is
	// accounted for.
	var dlq []dlqEntry
	if len(cfg.Kafka) > 0 {
		var err error
		if dlq, err = readDLQ(ctx, cfg.Kafka, cfg.KafkaSASL, cfg.DLQTopics, cfg.DLQSince, cmp.Or(cfg.ReplayGroup, DefaultReplayGroup)); err != nil {
			return Report{}, fmt.Errorf("audit: dead letters: %w", err)
		}
	}
	eventIDs := make([]string, 0, len(dlq))
	for _, e := range dlq {
		if e.eventID != "" {
			eventIDs = append(eventIDs, e.eventID)
		}
	}

	// The order snapshot first, then the downstream ones: a reservation or authorization of an order
	// the snapshot does not have was made after it (and is skipped) if it is younger than the start.
	start := time.Now().UTC()
	orders, err := readOrders(ctx, cfg.Order)
	if err != nil {
		return Report{}, fmt.Errorf("audit: order database: %w", err)
	}
	inv, err := readInventory(ctx, cfg.Inventory, eventIDs)
	if err != nil {
		return Report{}, fmt.Errorf("audit: inventory database: %w", err)
	}
	if len(cfg.Kafka) > 0 {
		// The outbox keeps only what is not yet sent: the stock history is on the topic.
		if err := readStockHistory(ctx, cfg.Kafka, cfg.KafkaSASL, cfg.DLQSince, inv.events); err != nil {
			return Report{}, fmt.Errorf("audit: stock history: %w", err)
		}
	}
	pay, err := readPayment(ctx, cfg.Payment, eventIDs)
	if err != nil {
		return Report{}, fmt.Errorf("audit: payment database: %w", err)
	}
	in := input{
		start: start, accepted: cfg.AcceptedKeys, opening: cfg.OpeningBalances,
		orders: orders, inv: inv, pay: pay, dlq: dlq,
	}
	return in.check(), nil
}
