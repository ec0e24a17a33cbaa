package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

// Scenario is one fault of the matrix (docs/RELIABILITY.md), by its id.
type Scenario struct {
	ID, Title string
	// Fault is how long the fault lasts when the campaign does not say (-fault).
	Fault time.Duration
	// ProxyPayment and ProxyInventory put a Proxy in front of every instance of that service and give
	// the order service static discovery through them (network faults need an address in between).
	ProxyPayment, ProxyInventory bool
	// Servers names the infra.sh components the scenario kills (the campaign refuses to run it on
	// servers infra.sh would not act on).
	Servers []string
	// AnswerInTime fails the scenario when an order got no HTTP answer within the client's timeout
	// (a call that outlived its deadline somewhere).
	AnswerInTime bool
	inject       func(ctx context.Context, e *Env) error
	heal         func(ctx context.Context, e *Env) error
	// check runs after the system settled; it returns findings (failures) and notes.
	check func(ctx context.Context, e *Env) (fail, notes []string)
}

// Env is what a scenario acts on.
type Env struct {
	Stack     *localstack.Stack
	Infra     localstack.InfraEndpoints
	KafkaSASL sasl.Mechanism    // authenticates the scenario's own Kafka clients (Options.KafkaSASL)
	Proxies   map[string]*Proxy // instance name → its proxy
	Ctl       func(ctx context.Context, verb, component string) error
	baseline  int // go_goroutines of order-1 at the end of the warm-up
	held      pgx.Tx
	heldConn  *pgx.Conn
	heldID    string
	logf      func(format string, args ...any)
}

const r7Topic = "shopmesh.chaos.r7"

// Scenarios lists every scenario in campaign order.
func Scenarios() []Scenario {
	kill := func(names ...string) func(context.Context, *Env) error {
		return func(_ context.Context, e *Env) error {
			var errs []error
			for _, n := range names {
				errs = append(errs, e.Stack.Kill(n))
			}
			return errors.Join(errs...)
		}
	}
	start := func(names ...string) func(context.Context, *Env) error {
		return func(ctx context.Context, e *Env) error {
			var errs []error
			for _, n := range names {
				errs = append(errs, e.Stack.StartInstance(ctx, n))
			}
			return errors.Join(errs...)
		}
	}
	server := func(verb, comp string) func(context.Context, *Env) error {
		return func(ctx context.Context, e *Env) error { return e.Ctl(ctx, verb, comp) }
	}
	return []Scenario{
		{ID: "R1", Title: "kill -9 one inventory and one payment instance, restart them", Fault: 30 * time.Second,
			inject: kill("inventory-2", "payment-2"), heal: start("inventory-2", "payment-2")},
		{ID: "R2", Title: "rolling restart of every service (SIGTERM, drain, start) under load", Fault: 30 * time.Second,
			inject: rolling, heal: func(context.Context, *Env) error { return nil }},
		{ID: "R3", Title: "one payment instance 500 ms slower (latency proxy in front of payment-1)", Fault: 60 * time.Second,
			ProxyPayment: true,
			inject: func(_ context.Context, e *Env) error {
				e.Proxies["payment-1"].Delay(500 * time.Millisecond)
				return nil
			},
			heal: func(_ context.Context, e *Env) error { e.Proxies["payment-1"].Heal(); return nil }},
		{ID: "R4", Title: "every payment instance down (SIGKILL), restarted after the fault", Fault: 60 * time.Second,
			inject: kill("payment-1", "payment-2"), heal: start("payment-1", "payment-2")},
		{ID: "R6", Title: "SIGKILL of Kafka, then start", Fault: 30 * time.Second, Servers: []string{"kafka"},
			inject: server("kill", "kafka"), heal: server("start", "kafka")},
		{ID: "R7", Title: "outbox relay killed (kill -9 order) while a transaction holds an outbox row; commit after the restart",
			Fault: 20 * time.Second, inject: holdOutboxRow, heal: commitHeldRow, check: checkHeldRow},
		{ID: "R9", Title: "SIGKILL of NATS, then start", Fault: 30 * time.Second, Servers: []string{"nats"},
			inject: server("kill", "nats"), heal: server("start", "nats")},
		{ID: "R10", Title: "PostgreSQL down (immediate shutdown), then start", Fault: 30 * time.Second, Servers: []string{"postgres"},
			inject: server("kill", "postgres"), heal: server("start", "postgres")},
		{ID: "R11", Title: "Nacos down (SIGKILL), then start", Fault: 60 * time.Second, Servers: []string{"nacos"},
			inject: server("kill", "nacos"), heal: server("start", "nacos")},
		{ID: "R12", Title: "blackholing TCP proxy between order and inventory-1", Fault: 30 * time.Second, ProxyInventory: true,
			AnswerInTime: true,
			inject:       func(_ context.Context, e *Env) error { e.Proxies["inventory-1"].Blackhole(); return nil },
			heal:         func(_ context.Context, e *Env) error { e.Proxies["inventory-1"].Heal(); return nil },
			check:        checkGoroutines},
	}
}

// rolling restarts every instance one after the other, in the stack's start order (callees first):
// SIGTERM (deregister, drain), start, ready.
func rolling(ctx context.Context, e *Env) error {
	for _, i := range e.Stack.Instances() {
		n := i.Name()
		if !e.Stack.Running(n) {
			continue
		}
		if killed, err := e.Stack.StopInstance(n); err != nil {
			return err
		} else if killed {
			e.logf("%s did not stop within the stop timeout and was killed", n)
		}
		if err := e.Stack.StartInstance(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// holdOutboxRow opens a transaction on the order database that inserts an outbox row (an event on a
// topic of its own) and keeps it open, then SIGKILLs the order instance (its relay).
func holdOutboxRow(ctx context.Context, e *Env) error {
	// The topic exists first: the scenario is about the held row, not about a topic the broker refuses.
	if err := createTopic(ctx, e.Infra.KafkaBrokers, e.KafkaSASL, r7Topic); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, e.Infra.DSN(localstack.Order))
	if err != nil {
		return fmt.Errorf("order database: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		_ = conn.Close(ctx)
		return err
	}
	e.heldConn, e.held = conn, tx
	e.heldID = fmt.Sprintf("chaos-r7-%d", time.Now().UnixNano())
	if _, err := tx.Exec(ctx, `INSERT INTO outbox (event_id, topic, msg_key, payload, headers, created_at)
		VALUES ($1, $2, $3, $4, '{}'::jsonb, now())`, e.heldID, r7Topic, e.heldID, []byte("held by the chaos campaign")); err != nil {
		return fmt.Errorf("insert the held outbox row: %w", err)
	}
	return e.Stack.Kill("order-1")
}

func createTopic(ctx context.Context, brokers []string, auth sasl.Mechanism, topic string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: kafkaauth.Transport(auth)}
	r, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
		{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := r.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// commitHeldRow starts the order instance again, then commits the held row.
func commitHeldRow(ctx context.Context, e *Env) error {
	err := e.Stack.StartInstance(ctx, "order-1")
	if e.held != nil {
		if cerr := e.held.Commit(ctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("commit the held outbox row: %w", cerr))
		}
		_ = e.heldConn.Close(ctx)
	}
	return err
}

// checkHeldRow: the row committed after the restart was published (the relay deletes a row once
// every destination has it) and is on Kafka.
func checkHeldRow(ctx context.Context, e *Env) (fail, notes []string) {
	if e.heldID == "" {
		return []string{"R7: no held outbox row (the fault did not run)"}, nil
	}
	conn, err := pgx.Connect(ctx, e.Infra.DSN(localstack.Order))
	if err != nil {
		return []string{"R7: order database: " + err.Error()}, nil
	}
	defer func() { _ = conn.Close(ctx) }()
	var left int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE event_id = $1`, e.heldID).Scan(&left); err != nil {
		return []string{"R7: held outbox row: " + err.Error()}, nil
	}
	if left != 0 {
		fail = append(fail, "R7: the outbox row committed after the relay restart was not published (row still in the outbox)")
	}
	found, err := kafkaHasKey(ctx, e.Infra.KafkaBrokers, e.KafkaSASL, r7Topic, e.heldID)
	switch {
	case err != nil:
		fail = append(fail, "R7: reading "+r7Topic+": "+err.Error())
	case !found:
		fail = append(fail, "R7: the held event is not on Kafka topic "+r7Topic)
	default:
		notes = append(notes, "R7: the held event "+e.heldID+" was delivered to "+r7Topic)
	}
	return fail, notes
}

// checkGoroutines: order-1's goroutines are back to the warm-up baseline (+20% +20) after the fault.
func checkGoroutines(ctx context.Context, e *Env) (fail, notes []string) {
	admin := adminAddr(e.Stack, "order-1")
	var now int
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		now, err = goroutines(ctx, admin)
		if err == nil && now <= e.baseline+e.baseline/5+20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return []string{"goroutines: " + err.Error()}, nil
	}
	msg := fmt.Sprintf("order-1 go_goroutines: %d at the end of the warm-up, %d after the recovery", e.baseline, now)
	if now > e.baseline+e.baseline/5+20 {
		return []string{msg + " (not back to the baseline: leaked calls or connections)"}, nil
	}
	return nil, []string{msg}
}

func adminAddr(s *localstack.Stack, name string) string {
	for _, i := range s.Instances() {
		if i.Name() == name {
			return i.AdminAddr
		}
	}
	return ""
}

// Select returns the scenarios named in ids ("R1,R4"); "all" or "" is every one.
func Select(ids string) ([]Scenario, error) {
	all := Scenarios()
	if ids == "" || ids == "all" {
		return all, nil
	}
	var out []Scenario
	for _, id := range strings.Split(ids, ",") {
		id = strings.ToUpper(strings.TrimSpace(id))
		found := false
		for _, s := range all {
			if s.ID == id {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			var known []string
			for _, s := range all {
				known = append(known, s.ID)
			}
			return nil, fmt.Errorf("unknown scenario %q (known: %s)", id, strings.Join(known, ","))
		}
	}
	return out, nil
}
