package rpc_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/rpc"
)

// stockPlan is what the order saga wanted for one order's stock; its calls are then duplicated and
// delivered in random order.
type stockPlan int

const (
	planCommit   stockPlan = iota // reserve (retried), commit (retried)
	planRelease                   // reserve (retried, maybe landing after the release), release (retried)
	planConflict                  // a commit and a release both sent
)

func (p stockPlan) String() string { return [...]string{"commit", "release", "conflict"}[p] }

type stockCall int

const (
	callReserve stockCall = iota
	callCommit
	callRelease
)

// TestSagaDisorder is RELIABILITY.md R13 for inventory: over real loopback gRPC, 200 orders get their
// reserve / commit / release calls duplicated and shuffled (release before reserve included),
// sequentially for half the orders and all at once for the other half. Only the commit plan gets one
// more commit afterwards (the saga retries it until answered); a release sent once, in whatever order,
// must be enough. Then: stock conserved, nothing reserved, 0 double commits, every order committed
// once or released.
func TestSagaDisorder(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			sagaDisorder(t, b.DSN(t))
		})
	}
}

func sagaDisorder(t *testing.T, dsn string) {
	const (
		orders = 200
		skus   = 4
	)
	f := start(t, dsn, skus, 10_000)
	ctx := callCtx(t)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 13))
	type script struct {
		id         string
		plan       stockPlan
		req        *inventoryv1.ReserveStockRequest
		calls      []stockCall
		concurrent bool
	}
	scripts := make([]script, orders)
	for i := range scripts {
		s := script{id: orderID(13_000 + i), plan: stockPlan(rng.IntN(3)), concurrent: i%2 == 1}
		first := rng.IntN(skus)
		s.req = reserve(s.id, item(fmt.Sprintf("SKU-%04d", 1+first), int32(1+rng.IntN(5))))
		if rng.IntN(2) == 0 {
			s.req.Items = append(s.req.Items, item(fmt.Sprintf("SKU-%04d", 1+(first+1)%skus), int32(1+rng.IntN(5))))
		}
		for range 1 + rng.IntN(3) {
			s.calls = append(s.calls, callReserve)
		}
		switch s.plan {
		case planCommit:
			for range 1 + rng.IntN(2) {
				s.calls = append(s.calls, callCommit)
			}
		case planRelease:
			for range 1 + rng.IntN(2) {
				s.calls = append(s.calls, callRelease)
			}
		case planConflict:
			s.calls = append(s.calls, callCommit, callRelease)
		}
		rng.Shuffle(len(s.calls), func(a, b int) { s.calls[a], s.calls[b] = s.calls[b], s.calls[a] })
		scripts[i] = s
	}

	var (
		calls, reserveRefused, commitNotFound, commitRefused, releaseRefused, releaseBeforeReserve atomic.Int64
		mu                                                                                         sync.Mutex
		committedAck                                                                               = map[string]bool{}
		failures                                                                                   []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	do := func(s script, c stockCall) {
		calls.Add(1)
		switch c {
		case callReserve:
			_, err := f.client.ReserveStock(ctx, s.req)
			switch {
			case rpcerr.Code(err) == codes.FailedPrecondition && rpcerr.Reason(err) == rpc.ReasonReservationReleased:
				reserveRefused.Add(1)
			case err != nil:
				fail("reserve %s: %v", s.id, err)
			}
		case callCommit:
			resp, err := f.client.CommitStock(ctx, &inventoryv1.CommitStockRequest{OrderId: s.id})
			switch {
			case rpcerr.Code(err) == codes.NotFound: // arrived before any reserve
				commitNotFound.Add(1)
			case rpcerr.Code(err) == codes.FailedPrecondition: // released first
				commitRefused.Add(1)
			case err != nil:
				fail("commit %s: %v", s.id, err)
			case resp.GetReservation().GetStatus() == inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED:
				mu.Lock()
				committedAck[s.id] = true
				mu.Unlock()
			}
		case callRelease:
			resp, err := f.client.ReleaseStock(ctx, &inventoryv1.ReleaseStockRequest{OrderId: s.id})
			switch {
			case rpcerr.Code(err) == codes.FailedPrecondition: // committed first
				releaseRefused.Add(1)
			case err != nil:
				fail("release %s: %v", s.id, err)
			case resp.GetReservation() == nil:
				releaseBeforeReserve.Add(1)
			}
		}
	}
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, s := range scripts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if !s.concurrent {
				for _, c := range s.calls {
					do(s, c)
				}
				return
			}
			var inner sync.WaitGroup
			for _, c := range s.calls {
				inner.Go(func() { do(s, c) })
			}
			inner.Wait()
		})
	}
	wg.Wait()
	for _, s := range scripts {
		if s.plan != planCommit {
			continue
		}
		resp, err := f.client.CommitStock(ctx, &inventoryv1.CommitStockRequest{OrderId: s.id})
		if err != nil || resp.GetReservation().GetStatus() != inventoryv1.ReservationStatus_RESERVATION_STATUS_COMMITTED {
			fail("final commit %s = %v, %v", s.id, resp, err)
			continue
		}
		mu.Lock()
		committedAck[s.id] = true
		mu.Unlock()
	}
	for _, m := range failures {
		t.Error(m)
	}

	perPlan := map[string]map[string]int{}
	for _, s := range scripts {
		r, err := f.db.Reservation(ctx, s.id)
		if err != nil {
			t.Fatalf("reservation %s: %v", s.id, err)
		}
		st := string(r.Status)
		if r.Tombstone() {
			st = "TOMBSTONE"
		}
		if perPlan[s.plan.String()] == nil {
			perPlan[s.plan.String()] = map[string]int{}
		}
		perPlan[s.plan.String()][st]++
		switch {
		case s.plan == planCommit && st != string(domain.StatusCommitted):
			t.Errorf("%s (commit plan) ended %s", s.id, st)
		case s.plan != planCommit && st == string(domain.StatusHeld):
			t.Errorf("%s (%s plan) still holds stock", s.id, s.plan)
		}
		if committedAck[s.id] && st != string(domain.StatusCommitted) {
			t.Errorf("%s: commit acknowledged, ended %s", s.id, st)
		}
	}
	var onHand, reserved int64
	for i := range skus {
		p, err := f.client.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: fmt.Sprintf("SKU-%04d", i+1)})
		if err != nil {
			t.Fatal(err)
		}
		onHand += p.GetProduct().GetOnHand()
		reserved += p.GetProduct().GetReserved()
	}
	if reserved != 0 {
		t.Errorf("%d units still reserved after the saga", reserved)
	}
	// received = on_hand + sold (COMMITTED lines), reserved = HELD lines: a double commit or a hold
	// nobody releases breaks one of them.
	f.check(t)
	t.Logf("R13 inventory %s: seed %d, %d orders, %d calls; RESERVATION_RELEASED refusals %d, releases before reserve %d, "+
		"commits before reserve %d, commits refused %d, releases refused (committed) %d; final by plan %v; "+
		"on hand %d of %d, reserved %d",
		t.Name(), seed, orders, calls.Load(), reserveRefused.Load(), releaseBeforeReserve.Load(), commitNotFound.Load(),
		commitRefused.Load(), releaseRefused.Load(), perPlan, onHand, int64(skus)*10_000, reserved)
	if reserveRefused.Load() == 0 || releaseBeforeReserve.Load() == 0 {
		t.Errorf("the run never put a release before its reserve; the disorder was not exercised")
	}
}
