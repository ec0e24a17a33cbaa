package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/shopmesh/shopmesh/deploy/localstack"
)

// Settlement counts, per service database, the confirmed orders and how many of them the consumers of
// OrderConfirmed have settled: reservations committed (inventory) and payments captured (payment).
type Settlement struct{ Confirmed, Committed, Captured int64 }

// Done says every confirmed order is committed and captured.
func (s Settlement) Done() bool { return s.Committed >= s.Confirmed && s.Captured >= s.Confirmed }

func (s Settlement) String() string {
	return fmt.Sprintf("%d confirmed, %d committed, %d captured", s.Confirmed, s.Committed, s.Captured)
}

// Settlement reads the counts now.
func (p *PGStack) Settlement(ctx context.Context) (Settlement, error) {
	var s Settlement
	for _, q := range []struct {
		svc, query string
		into       *int64
	}{
		{localstack.Order, `SELECT count(*) FROM orders WHERE status = 'CONFIRMED'`, &s.Confirmed},
		{localstack.Inventory, `SELECT count(*) FROM reservations WHERE status = 'COMMITTED'`, &s.Committed},
		{localstack.Payment, `SELECT count(*) FROM authorizations WHERE status = 'CAPTURED'`, &s.Captured},
	} {
		cfg := p.conn.Config().Copy()
		cfg.Database = p.dbs[q.svc]
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return s, err
		}
		err = c.QueryRow(ctx, q.query).Scan(q.into)
		_ = c.Close(ctx)
		if err != nil {
			return s, fmt.Errorf("%s: %w", q.svc, err)
		}
	}
	return s, nil
}

// Drain waits, up to limit, until the consumers have settled every confirmed order, so that the
// per-order figures read afterwards include the asynchronous half of each order's work (and the next
// run does not inherit a backlog). It returns the last counts and how long it waited.
func (p *PGStack) Drain(ctx context.Context, limit time.Duration) (Settlement, time.Duration, error) {
	start := time.Now()
	for {
		s, err := p.Settlement(ctx)
		if err != nil || s.Done() || time.Since(start) >= limit {
			return s, time.Since(start), err
		}
		select {
		case <-ctx.Done():
			return s, time.Since(start), ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
