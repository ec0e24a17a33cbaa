package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// MaxLanes is how many destinations one outbox table can feed (bits of the done and parked columns).
const MaxLanes = 4

// Destination is one broker the Relay delivers every row to, with its own progress: a lane. A lane
// whose broker is down falls behind alone; the other lanes go on.
type Destination struct {
	// Lane is the destination's bit in each row's progress, 0 to MaxLanes-1. Like a column name it must
	// stay the same for as long as the table holds rows; lanes 0 and 1 have their own claim index.
	Lane int
	// Name labels logs, metrics (destination="…") and spans, e.g. "kafka", "nats".
	Name string
	// Publisher sends this lane's messages.
	Publisher Publisher
	// Route returns the message this destination sends for a row (it may rewrite Topic, ID or Headers;
	// it must not modify the row's maps in place), or false when the row is not for it, which counts as
	// delivered. nil sends every row as it is.
	Route func(Message) (Message, bool)
}

// Router is a Publisher with several destinations. NewRelay gives each of them its own lane, so one
// broker's outage or poison row never holds back another's events.
type Router interface {
	Publisher
	Destinations() []Destination
}

// Fanout publishes to each destination in turn (tools, tests); as a Router, a Relay delivers to each
// on its own lane instead.
type Fanout []Destination

var _ Router = Fanout(nil)

// Destinations returns f.
func (f Fanout) Destinations() []Destination { return f }

// Publish sends msgs, routed, to every destination in order; it stops at the first failure.
func (f Fanout) Publish(ctx context.Context, msgs []Message) error {
	for _, d := range f {
		out := make([]Message, 0, len(msgs))
		for _, m := range msgs {
			if d.Route == nil {
				out = append(out, m)
			} else if rm, ok := d.Route(m); ok {
				out = append(out, rm)
			}
		}
		if len(out) == 0 {
			continue
		}
		if err := d.Publisher.Publish(ctx, out); err != nil {
			return fmt.Errorf("%s: %w", d.Name, err)
		}
	}
	return nil
}

// ErrorKind tells the relay whose fault a failed publish is.
type ErrorKind int

const (
	// Transient is the broker's or the network's fault (unreachable, timeout, no leader): the batch is
	// retried with backoff for as long as it takes, and nothing is parked.
	Transient ErrorKind = iota
	// Retryable may be the message's fault: it is retried, and parked after RelayConfig.MaxAttempts.
	Retryable
	// Permanent is the message's fault (too large, invalid topic or subject, undecodable): it is
	// parked at once.
	Permanent
)

func (k ErrorKind) String() string {
	switch k {
	case Retryable:
		return "retryable"
	case Permanent:
		return "permanent"
	}
	return "transient"
}

// PublishError is how a Publisher reports a partial batch: msgs[:Index] are acknowledged, msgs[Index]
// failed with Err, and the state of the rest is unknown (they are sent again). A publisher returning
// any other error failed the whole batch transiently.
type PublishError struct {
	Index int
	Kind  ErrorKind
	Err   error
}

func (e *PublishError) Error() string {
	return fmt.Sprintf("message %d (%s): %v", e.Index, e.Kind, e.Err)
}

func (e *PublishError) Unwrap() error { return e.Err }

// Parked is a row a destination refused, out of the relay's way until Unpark.
type Parked struct {
	Seq         int64
	EventID     string
	Topic       string
	Key         string
	Destination string
	Attempts    int
	LastError   string
	ParkedAt    time.Time
}

// ListParked returns the parked rows, oldest first.
func ListParked(ctx context.Context, db *sql.DB) ([]Parked, error) {
	rows, err := db.QueryContext(ctx, `SELECT f.seq, o.event_id, o.topic, o.msg_key, f.destination, f.attempts, f.last_error, f.parked_at
		FROM outbox_failures f JOIN outbox o ON o.seq = f.seq
		WHERE f.parked_at IS NOT NULL ORDER BY f.seq, f.lane`)
	if err != nil {
		return nil, fmt.Errorf("list parked: %w", err)
	}
	defer rows.Close()
	var out []Parked
	for rows.Next() {
		var p Parked
		if err := rows.Scan(&p.Seq, &p.EventID, &p.Topic, &p.Key, &p.Destination, &p.Attempts, &p.LastError, &p.ParkedAt); err != nil {
			return nil, fmt.Errorf("list parked: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list parked: %w", err)
	}
	return out, nil
}

// Unpark puts the rows with these event ids back in the claim path of every destination that parked
// them, with their attempts reset, and returns how many rows it unparked. Fix the cause first (topic,
// size limit, subject): a row refused again is parked again. The key's later events, held behind the
// parked row, follow it in order.
func Unpark(ctx context.Context, db *sql.DB, eventIDs ...string) (int, error) {
	if len(eventIDs) == 0 {
		return 0, nil
	}
	d, err := sqldb.DialectOf(db)
	if err != nil {
		return 0, err
	}
	in := "(?" + strings.Repeat(", ?", len(eventIDs)-1) + ")"
	args := make([]any, len(eventIDs))
	for i, id := range eventIDs {
		args[i] = id
	}
	var n int64
	err = sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, d.Rebind("DELETE FROM outbox_failures WHERE seq IN (SELECT seq FROM outbox WHERE event_id IN "+in+")"), args...); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, d.Rebind("UPDATE outbox SET parked = 0 WHERE parked <> 0 AND event_id IN "+in), args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("unpark: %w", err)
	}
	return int(n), nil
}

// errKind is the ErrorKind of a publish error: what the publisher said, else Transient.
func errKind(err error) (ErrorKind, int) {
	var pe *PublishError
	if errors.As(err, &pe) {
		return pe.Kind, pe.Index
	}
	return Transient, 0
}
