package store_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store/storetest"
)

// BenchmarkReserveCommit reserves one unit of one of a few hot SKUs and commits it, from many
// goroutines at once, on PostgreSQL: the store's share of an order (its reserve, and the commit its
// OrderConfirmed causes) with the contention of the order benchmark's 24 SKUs and 32 clients. Compare
// trees side by side (go test -run '^$' -bench ReserveCommit -cpu 32 ./internal/store/).
func BenchmarkReserveCommit(b *testing.B) {
	for _, skus := range []int{4, 24} {
		b.Run(fmt.Sprintf("skus=%d", skus), func(b *testing.B) {
			db, d := storetest.Open(b, sqldbtest.Postgres(b))
			s := store.New(db, d, events.NewOutbox(outbox.New(d, nil)))
			var ps []domain.Product
			for i := range skus {
				ps = append(ps, domain.Product{SKU: fmt.Sprintf("SKU-%04d", i), Name: "P", PriceCents: 100, Currency: "EUR", OnHand: 1 << 40})
			}
			if _, err := s.Seed(b.Context(), ps); err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
					if _, err := s.Reserve(b.Context(), id, []domain.Item{{SKU: ps[int(i)%skus].SKU, Quantity: 1}}); err != nil {
						b.Error(err)
						return
					}
					if err := s.CommitOnce(b.Context(), "inventory", "ev-"+id, id); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
