package app

import (
	"context"
	"fmt"
	"time"

	"github.com/shopmesh/shopmesh/services/order/internal/domain"
)

// WatchOrder sends the order's current state, then every newer version, and returns nil once the order
// is terminal. It subscribes to the status feed before reading the order, so a change committed between
// the read and the subscription cannot be missed; notifications only trigger a re-read, and versions not
// newer than the last one sent are dropped. A slow periodic re-read covers lost notifications.
func (a *App) WatchOrder(ctx context.Context, id string, send func(domain.Order) error) error {
	versions, stop, err := a.feed.Subscribe(ctx, id)
	if err != nil {
		return fmt.Errorf("watch order %s: %w", id, err)
	}
	defer stop()
	poll := time.NewTicker(a.cfg.WatchPoll)
	defer poll.Stop()

	var last int64
	for {
		o, err := a.orders.Get(ctx, id)
		if err != nil {
			return fmt.Errorf("watch order %s: %w", id, err)
		}
		if o.Version > last {
			if err := send(o); err != nil {
				return fmt.Errorf("watch order %s: send: %w", id, err)
			}
			last = o.Version
		}
		if o.Status.Terminal() {
			return nil
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return fmt.Errorf("watch order %s: %w", id, ctx.Err())
			case v := <-versions:
				if v > last {
					break wait
				}
			case <-poll.C:
				break wait
			}
		}
	}
}
