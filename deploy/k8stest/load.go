package k8stest

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shopmesh/shopmesh/deploy/composetest"
)

// ClosedLoop places orders with Workers clients, each sending its next order only when the previous one
// has its final outcome (composetest.API.Place: retries with the same key), and all together at most Rate
// per second, until stop is closed. Bounded both ways: at most Workers orders are in flight, so a stalled
// stack slows the load instead of piling requests up, and at most Rate start per second, so a fast one is
// not flooded on a shared machine. Order n uses key KeyPrefix-n (six digits), customer
// cust-<1+(n-1)%Customers> and SKU SKU-<1+(n-1)%SKUs>.
type ClosedLoop struct {
	API       *composetest.API
	Retry     composetest.Retry
	Workers   int
	Rate      float64
	Customers int
	SKUs      int
	KeyPrefix string
}

// Run returns the outcome of every order started, sorted by key.
func (l *ClosedLoop) Run(ctx context.Context, stop <-chan struct{}) []composetest.Outcome {
	customers, skus, workers := max(l.Customers, 1), max(l.SKUs, 1), max(l.Workers, 1)
	var pace <-chan time.Time
	if l.Rate > 0 {
		tick := time.NewTicker(time.Duration(float64(time.Second) / l.Rate))
		defer tick.Stop()
		pace = tick.C
	}
	var (
		n   atomic.Int64
		mu  sync.Mutex
		out []composetest.Outcome
		wg  sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				if pace != nil {
					select {
					case <-stop:
						return
					case <-ctx.Done():
						return
					case <-pace:
					}
				}
				i := n.Add(1)
				cust := fmt.Sprintf("cust-%04d", 1+(i-1)%int64(customers))
				sku := fmt.Sprintf("SKU-%04d", 1+(i-1)%int64(skus))
				o := l.API.Place(ctx, l.Retry, cust, fmt.Sprintf("%s-%06d", l.KeyPrefix, i), sku, 1)
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Background runs l until the returned function is called; that function stops it and returns the
// outcomes.
func (l *ClosedLoop) Background(ctx context.Context) func() []composetest.Outcome {
	stop := make(chan struct{})
	done := make(chan []composetest.Outcome, 1)
	go func() { done <- l.Run(ctx, stop) }()
	var once sync.Once
	return func() []composetest.Outcome {
		once.Do(func() { close(stop) })
		return <-done
	}
}
