package composetest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Load places orders at Rate per second (open loop: one every 1/Rate whatever the answers) until
// stop is closed, each with its own idempotency key KeyPrefix-000001…, customers cust-0001…cust-<Customers>
// and SKUs SKU-0001…SKU-<SKUs> in turn, and waits for the outstanding ones.
type Load struct {
	API       *API
	Retry     Retry
	Rate      float64
	Customers int
	SKUs      int
	KeyPrefix string
}

// Run returns the outcome of every order sent.
func (l *Load) Run(ctx context.Context, stop <-chan struct{}) []Outcome {
	customers, skus := max(l.Customers, 1), max(l.SKUs, 1)
	every := time.Duration(float64(time.Second) / max(l.Rate, 0.1))
	tick := time.NewTicker(every)
	defer tick.Stop()
	var (
		mu  sync.Mutex
		out []Outcome
		wg  sync.WaitGroup
	)
	for n := 1; ; n++ {
		cust := fmt.Sprintf("cust-%04d", 1+(n-1)%customers)
		sku := fmt.Sprintf("SKU-%04d", 1+(n-1)%skus)
		key := fmt.Sprintf("%s-%06d", l.KeyPrefix, n)
		wg.Go(func() {
			o := l.API.Place(ctx, l.Retry, cust, key, sku, 1)
			mu.Lock()
			out = append(out, o)
			mu.Unlock()
		})
		select {
		case <-stop:
			wg.Wait()
			sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
			return out
		case <-ctx.Done():
			wg.Wait()
			return out
		case <-tick.C:
		}
	}
}

// Tally counts outcomes: sent, accepted, failed (not accepted) and the final statuses of the failed.
type Tally struct {
	Sent, Accepted, Failed, Retried int
	FailedBy                        map[string]int
}

// Count tallies outcomes.
func Count(outs []Outcome) Tally {
	t := Tally{FailedBy: map[string]int{}}
	for _, o := range outs {
		t.Sent++
		if o.Attempts > 1 {
			t.Retried++
		}
		if o.Accepted {
			t.Accepted++
			continue
		}
		t.Failed++
		t.FailedBy[o.Status]++
	}
	return t
}

func (t Tally) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d sent, %d accepted, %d failed, %d retried", t.Sent, t.Accepted, t.Failed, t.Retried)
	if len(t.FailedBy) > 0 {
		keys := make([]string, 0, len(t.FailedBy))
		for k := range t.FailedBy {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s×%d", k, t.FailedBy[k])
		}
		fmt.Fprintf(&b, " (failed: %s)", strings.Join(parts, ", "))
	}
	return b.String()
}
