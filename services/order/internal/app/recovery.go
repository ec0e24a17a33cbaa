package app

import (
	"context"
	"fmt"
	"time"

	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// RecoveryStats counts what one recovery pass did.
type RecoveryStats struct {
	Claimed     int
	Finished    int
	GivenUp     int
	Compensated int
}

// RecoverOnce claims PENDING orders whose lease ran out (their saga was interrupted by an outage or a
// crash, on any instance) and drives each again; orders older than GiveUpAfter are cancelled with
// DEPENDENCY_FAILED and compensated instead. It then retries unfinished compensations. The state lives
// in the store, so a fresh process recovers what a dead one left.
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

	todo, err := a.orders.PendingCompensation(ctx, now.Add(-a.cfg.RecoveryAfter), a.cfg.RecoveryBatch)
	if err != nil {
		return st, fmt.Errorf("recovery compensations: %w", err)
	}
	for _, o := range todo {
		cctx, cancel := context.WithTimeout(ctx, a.cfg.SagaTimeout)
		a.compensate(cctx, o)
		cancel()
		st.Compensated++
	}
	return st, nil
}

// RunRecovery calls RecoverOnce every interval until ctx ends, then returns nil.
func (a *App) RunRecovery(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		st, err := a.RecoverOnce(ctx)
		if err != nil && ctx.Err() == nil {
			a.log.WarnContext(ctx, "order recovery pass failed", "err", err)
		}
		if st.Claimed > 0 || st.Compensated > 0 {
			a.log.InfoContext(ctx, "order recovery pass", "claimed", st.Claimed, "finished", st.Finished,
				"given_up", st.GivenUp, "compensations", st.Compensated)
		}
	}
}
