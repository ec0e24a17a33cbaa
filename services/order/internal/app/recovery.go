package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// RecoveryStats counts what one recovery pass did.
type RecoveryStats struct {
	// PENDING orders claimed, finished, and given up (cancelled with DEPENDENCY_FAILED).
	Claimed  int
	Finished int
	GivenUp  int
	// Compensations done, failed (tried again after a backoff), and refused for good (tried again at
	// the slowest rate).
	Compensated          int
	CompensationsFailed  int
	CompensationsRefused int
	// Settlements done, failed and refused, likewise.
	Settled            int
	SettlementsFailed  int
	SettlementsRefused int
	// After the pass, when BacklogRead: compensations pending longer than StuckAfter or failed
	// StuckAttempts times, and confirmed orders older than SettleAfter not settled yet.
	BacklogRead        bool
	StuckCompensations int
	Unsettled          int
}

// busy reports whether the pass did or tried anything.
func (s RecoveryStats) busy() bool {
	return s.Claimed+s.Compensated+s.CompensationsFailed+s.CompensationsRefused+
		s.Settled+s.SettlementsFailed+s.SettlementsRefused > 0
}

// RecoverOnce claims PENDING orders whose lease ran out (their saga was interrupted by an outage or a
// crash, on any instance) and drives each again; orders older than GiveUpAfter are cancelled with
// DEPENDENCY_FAILED and compensated instead. It then runs the follow-up work whose time has come:
// compensations not known to be done, and settlements of confirmed orders (followups.go). The state
// lives in the store, so a fresh process recovers what a dead one left.
func (a *App) RecoverOnce(ctx context.Context) (RecoveryStats, error) {
	var st RecoveryStats
	now := a.now()
	claimed, err := a.orders.ClaimStale(ctx, now, now.Add(a.cfg.RecoveryAfter), a.cfg.RecoveryBatch)
	if err != nil {
		return st, fmt.Errorf("recovery claim: %w", err)
	}
	st.Claimed = len(claimed)
	for _, o := range claimed {
		if o.Status.Terminal() {
			continue // finished between the claim and the read
		}
		sctx, cancel := context.WithTimeout(ctx, a.cfg.SagaTimeout)
		var got domain.Order
		if now.Sub(o.CreatedAt) >= a.cfg.GiveUpAfter {
			got, err = a.settle(sctx, o, domain.DependencyFailed,
				fmt.Errorf("saga did not finish within %v", a.cfg.GiveUpAfter), true)
			if err == nil && got.CancelReason == domain.DependencyFailed {
				st.GivenUp++
			}
		} else {
			got, err = a.drive(sctx, o)
		}
		cancel()
		if err != nil {
			return st, fmt.Errorf("recover %s: %w", o.ID, err)
		}
		if got.Status.Terminal() {
			st.Finished++
		}
	}

	errs := []error{
		a.runFollowups(ctx, Compensation, now, &st),
		a.runFollowups(ctx, Settlement, now, &st),
	}
	stuck, serr := a.orders.FollowupBacklog(ctx, Compensation, now.Add(-a.cfg.StuckAfter), a.cfg.StuckAttempts)
	unsettled, uerr := a.orders.FollowupBacklog(ctx, Settlement, now.Add(-a.cfg.SettleAfter), 0)
	if serr == nil && uerr == nil {
		st.BacklogRead, st.StuckCompensations, st.Unsettled = true, stuck, unsettled
	}
	errs = append(errs, serr, uerr)
	return st, errors.Join(errs...)
}

// RunRecovery calls RecoverOnce at start, then every interval (at once again while a backlog lasts)
// until ctx ends, then returns nil.
func (a *App) RunRecovery(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	backlog := true // the first pass runs at start: what a dead instance left is due now
	for {
		if !backlog {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
		st, err := a.RecoverOnce(ctx)
		// A full batch that finished orders means a backlog (every order of an outage is due at once):
		// the next pass runs at once instead of one batch per interval (50 per 5 s could not keep up
		// with 30 orders/s). A batch that finished nothing waits: its leases were extended.
		backlog = err == nil && st.Claimed >= a.cfg.RecoveryBatch && st.Finished > 0
		if ctx.Err() != nil {
			return nil
		}
		a.passes(st)
		if err != nil {
			a.log.WarnContext(ctx, "order recovery pass failed", "err", err)
		}
		if st.busy() {
			a.log.InfoContext(ctx, "order recovery pass", "claimed", st.Claimed, "finished", st.Finished,
				"given_up", st.GivenUp, "compensated", st.Compensated, "compensations_failed", st.CompensationsFailed,
				"compensations_refused", st.CompensationsRefused, "settled", st.Settled,
				"settlements_failed", st.SettlementsFailed, "settlements_refused", st.SettlementsRefused)
		}
	}
}
