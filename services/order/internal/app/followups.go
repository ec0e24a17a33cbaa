package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// The saga leaves work behind a terminal order, and the recovery worker makes sure it happens:
//
//   - Compensation: a cancelled order that may hold stock or funds gets them back (ReleaseStock,
//     VoidPayment). The saga tries at once; the worker retries from RecoveryAfter on.
//   - Settlement: a confirmed order's stock is committed and its payment captured (CommitStock,
//     CapturePayment). Inventory and payment do both when they consume OrderConfirmed; the worker does
//     it again, idempotently, SettleAfter after the confirmation, so an event that was lost or
//     dead-lettered cannot leave the money uncaptured and the stock held. The saga itself does not
//     call them: its path stays reserve → authorize → confirm, and the cost of settling is two
//     idempotent calls per order off that path (which normally find the work done).
//
// Each order's work is claimed (no two instances run one row at once) and backs off on its own: the
// n-th failure waits RetryMin·2^(n-1) up to RetryMax, a permanent refusal waits RetryMax, and claims
// take the earliest due first, so failing rows never starve the rest.

// followupWorkers bounds the follow-ups one pass runs at once: settlement covers every confirmed order,
// so a pass must keep up with the order rate, without bursts of calls.
const followupWorkers = 8

type followupOutcome int

const (
	followupDone followupOutcome = iota
	followupFailed
	followupRefused
)

// runFollowups claims the work of kind due at now, batch after batch, and runs it. Every claimed row is
// attempted. A batch in which nothing got done and something failed for want of a dependency ends the
// pass: during an outage a pass costs one batch of (breaker-fast) failures, and those rows back off.
func (a *App) runFollowups(ctx context.Context, kind FollowupKind, now time.Time, st *RecoveryStats) error {
	// A claim lasts RecoveryAfter and one attempt at most SagaTimeout: the pass stops claiming after
	// RecoveryAfter-SagaTimeout, and no attempt outlives its claim, so no other instance takes a row up
	// while this one still works on it.
	pctx, cancel := context.WithTimeout(ctx, a.cfg.RecoveryAfter-a.cfg.SagaTimeout)
	defer cancel()
	for pctx.Err() == nil {
		claimEnd := time.Now().Add(a.cfg.RecoveryAfter)
		batch, err := a.orders.ClaimFollowups(pctx, kind, now, now.Add(a.cfg.RecoveryAfter), a.cfg.RecoveryBatch)
		if err != nil {
			if ctx.Err() == nil && pctx.Err() != nil {
				return nil // the pass's time is up
			}
			return fmt.Errorf("claim %ss: %w", kind, err)
		}
		var bst RecoveryStats
		err = a.runBatch(ctx, kind, batch, claimEnd, &bst)
		st.add(bst)
		done, failed := bst.count(kind, followupDone), bst.count(kind, followupFailed)
		if err != nil || (failed > 0 && done == 0) || len(batch) < a.cfg.RecoveryBatch {
			return err
		}
	}
	return nil
}

// runBatch runs the claimed work, followupWorkers at a time, each attempt ending by claimEnd.
func (a *App) runBatch(ctx context.Context, kind FollowupKind, batch []Followup, claimEnd time.Time, st *RecoveryStats) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, followupWorkers)
	)
	for _, f := range batch {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			outcome, err := a.runFollowup(ctx, kind, f, claimEnd)
			mu.Lock()
			defer mu.Unlock()
			errs = append(errs, err)
			*st.counter(kind, outcome)++
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *RecoveryStats) add(o RecoveryStats) {
	for _, k := range []FollowupKind{Compensation, Settlement} {
		for _, out := range []followupOutcome{followupDone, followupFailed, followupRefused} {
			*s.counter(k, out) += o.count(k, out)
		}
	}
}

func (s RecoveryStats) count(kind FollowupKind, o followupOutcome) int { return *s.counter(kind, o) }

func (s *RecoveryStats) counter(kind FollowupKind, o followupOutcome) *int {
	counters := map[FollowupKind][3]*int{
		Compensation: {&s.Compensated, &s.CompensationsFailed, &s.CompensationsRefused},
		Settlement:   {&s.Settled, &s.SettlementsFailed, &s.SettlementsRefused},
	}
	return counters[kind][o]
}

// runFollowup makes one attempt at one order's work, ending by claimEnd, and records its outcome; the
// error is the store's only.
func (a *App) runFollowup(ctx context.Context, kind FollowupKind, f Followup, claimEnd time.Time) (followupOutcome, error) {
	deadline := time.Now().Add(a.cfg.SagaTimeout)
	if claimEnd.Before(deadline) {
		deadline = claimEnd
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	var err error
	if kind == Settlement {
		err = a.completeSale(cctx, f.OrderID)
	} else {
		err = a.undo(cctx, f.OrderID)
	}
	cancel()
	if err == nil {
		return followupDone, a.orders.FollowupDone(ctx, kind, f.OrderID, a.now())
	}
	attempts := f.Attempts + 1
	outcome, wait := followupFailed, a.backoff(attempts)
	if !errors.Is(err, domain.ErrUnavailable) {
		// Retrying cannot change the answer (e.g. a captured payment cannot be voided); a person must
		// look. It is retried at the slowest rate, in case the other side is repaired.
		outcome, wait = followupRefused, a.cfg.RetryMax
	}
	if outcome == followupRefused || attempts >= a.cfg.StuckAttempts {
		a.log.WarnContext(ctx, "order "+string(kind)+" is not getting done", "order_id", f.OrderID,
			"status", string(f.Status), "attempts", attempts, "refused", outcome == followupRefused,
			"next_attempt_in", wait.String(), "err", err)
	}
	if serr := a.orders.FollowupFailed(ctx, kind, f.OrderID, a.now().Add(wait), err.Error()); serr != nil {
		return outcome, serr
	}
	return outcome, nil
}

// backoff is the wait after the attempts-th failure: RetryMin·2^(attempts-1), at most RetryMax.
func (a *App) backoff(attempts int) time.Duration {
	d := a.cfg.RetryMin
	for i := 1; i < attempts && d < a.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, a.cfg.RetryMax)
}

// undo releases the order's stock and voids its payment (both idempotent).
func (a *App) undo(ctx context.Context, orderID string) error {
	if err := a.stock.ReleaseStock(ctx, orderID); err != nil {
		return err
	}
	return a.payment.VoidPayment(ctx, orderID)
}

// completeSale commits the order's stock, then captures its payment (both idempotent): money is not
// taken for stock that could not be committed.
func (a *App) completeSale(ctx context.Context, orderID string) error {
	if err := a.stock.CommitStock(ctx, orderID); err != nil {
		return err
	}
	return a.payment.CapturePayment(ctx, orderID)
}
