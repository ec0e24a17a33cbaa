package events

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shopmesh/shopmesh/services/order/internal/app"
)

// flushTimeout bounds the round trip that makes a new subscription effective.
const flushTimeout = 5 * time.Second

// Feed delivers order status notifications from NATS core subscriptions on shopmesh.order.status.<id>;
// JetStream publishes reach core subscribers too, so every instance sees every change.
type Feed struct {
	nc *nats.Conn
}

var _ app.StatusFeed = (*Feed)(nil)

// NewFeed returns a feed on nc.
func NewFeed(nc *nats.Conn) *Feed { return &Feed{nc: nc} }

// Subscribe implements app.StatusFeed. A notification that cannot be decoded is delivered as the
// largest version, which makes the watcher re-read the order.
func (f *Feed) Subscribe(_ context.Context, orderID string) (<-chan int64, func(), error) {
	ch := make(chan int64, 8)
	sub, err := f.nc.Subscribe(Subject(orderID), func(m *nats.Msg) {
		v, err := Version(m.Header.Get(HeaderEventType), m.Data)
		if err != nil {
			v = math.MaxInt64
		}
		select {
		case ch <- v:
		default: // the watcher is behind; its next re-read sees the latest state anyway
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("subscribe %s: %w", Subject(orderID), err)
	}
	// The subscription must be registered on the server before the caller reads the current state.
	if err := f.nc.FlushTimeout(flushTimeout); err != nil {
		_ = sub.Unsubscribe()
		return nil, nil, fmt.Errorf("subscribe %s: flush: %w", Subject(orderID), err)
	}
	return ch, func() { _ = sub.Unsubscribe() }, nil
}
