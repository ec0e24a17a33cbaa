package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
	"github.com/shopmesh/shopmesh/services/payment/internal/app"
	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

// errNotPlain rolls back a batch in which one capture is not the plain one.
var errNotPlain = errors.New("not the plain capture")

// CaptureConfirmedBatch implements app.Store: on PostgreSQL, with an EventPreparer, the captures of cs
// in ONE transaction, each by CaptureConfirmed's statement (captureStatement), so a batch of n
// confirmations costs n statements and one BEGIN/COMMIT instead of n autocommit transactions. done is
// false, with the transaction rolled back and nothing of the batch written, as soon as one statement
// writes nothing (the event is in the inbox already, or the authorization is not the AUTHORIZED one the
// event describes) or one capture is not the plain one; and always on SQLite, where each event keeps
// its own inbox transaction.
//
// The statements run in the order of (customer, order), not the batch's. Each locks its authorization
// and then its customer's account until the commit, so two batches run at once (two payment instances,
// each with its partitions) would deadlock if one took the accounts of c1 then c2 while the other took
// c2 then c1; in one order, the second waits for the first instead. Their authorizations do not
// overlap: an order's events share a partition (key = order id). Reordering is safe because the events
// are of different orders (an order is confirmed once, a final state; a relay's resend of the same
// event makes the batch not plain) and captures of different orders commute: each moves its own amount
// off balance and held. A batch that overlaps another capture of the same customer (the settlement's
// CapturePayment, or a batch of the former owner of a partition still running after a rebalance) can
// still meet it in the other order; PostgreSQL then aborts one of them (deadlock detected), the
// settlement's transaction runs again and the batch fails as a whole, so its events are applied one at
// a time.
func (s *Store) CaptureConfirmedBatch(ctx context.Context, consumer string, cs []app.ConfirmedCapture, now time.Time) (bool, error) {
	if len(cs) == 0 {
		return true, nil
	}
	if s.prep == nil || consumer == "" {
		return false, nil
	}
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(x, y app.ConfirmedCapture) int {
		return cmp.Or(cmp.Compare(x.Authorization.CustomerID, y.Authorization.CustomerID),
			cmp.Compare(x.Authorization.OrderID, y.Authorization.OrderID))
	})
	evs := make([]domain.Event, len(cs))
	for i, c := range cs {
		ev, ok := plainCapture(c.Authorization, now)
		if !ok || c.EventID == "" {
			return false, nil
		}
		evs[i] = ev
	}
	rows, err := s.prep.PrepareEvents(ctx, evs...)
	if err != nil {
		return false, err
	}
	err = sqldb.InTx(ctx, s.db, func(tx *sql.Tx) error {
		for i, c := range cs {
			a := c.Authorization
			var auths, accounts int64
			if err := tx.QueryRowContext(ctx, s.q.captureOne, captureArgs(consumer, c.EventID, a, now, one(rows, i))...).
				Scan(&auths, &accounts); err != nil {
				return fmt.Errorf("capture %s on %s: %w", a.OrderID, c.EventID, err)
			}
			if auths != 1 || accounts != 1 {
				// A repeat, another state of the authorization, or an account gone: the one-at-a-time
				// path tells them apart (and reports the inconsistent one).
				return fmt.Errorf("capture %s on %s: %w", a.OrderID, c.EventID, errNotPlain)
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errNotPlain):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("capture batch of %d: %w", len(cs), err)
	}
	s.afterCommit()
	return true, nil
}
