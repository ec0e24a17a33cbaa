package rpc_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/rpc"
)

// importLines is an import of n lines over the first three seeded SKUs, line i adding 1+i%5 units.
func importLines(id string, n int) []*inventoryv1.ImportStockRequest {
	out := make([]*inventoryv1.ImportStockRequest, n)
	for i := range out {
		out[i] = &inventoryv1.ImportStockRequest{ImportId: id, Seq: int64(i + 1), Sku: fmt.Sprintf("SKU-%04d", 1+i%3), Quantity: int64(1 + i%5)}
	}
	return out
}

// received adds the lines' units to f.received: what the ledger must show if each is applied once.
func (f *fixture) receive(lines []*inventoryv1.ImportStockRequest) (units int64) {
	for _, l := range lines {
		f.received[l.GetSku()] += l.GetQuantity()
		units += l.GetQuantity()
	}
	return units
}

func sendImport(ctx context.Context, c inventoryv1.InventoryServiceClient, lines []*inventoryv1.ImportStockRequest) (*inventoryv1.ImportStockResponse, error) {
	stream, err := c.ImportStock(ctx)
	if err != nil {
		return nil, err
	}
	for _, l := range lines {
		if err := stream.Send(l); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	return stream.CloseAndRecv()
}

func wantSummary(t *testing.T, sum *inventoryv1.ImportStockResponse, err error, received, applied, skipped, units int64) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if sum.GetLinesReceived() != received || sum.GetLinesApplied() != applied || sum.GetLinesSkipped() != skipped ||
		sum.GetLinesRejected() != 0 || sum.GetUnitsAdded() != units {
		t.Fatalf("summary = %v; want %d received, %d applied, %d skipped, 0 rejected, %d units", sum, received, applied, skipped, units)
	}
}

func onHand(t *testing.T, c inventoryv1.InventoryServiceClient) int64 {
	t.Helper()
	resp, err := c.ListProducts(callCtx(t), &inventoryv1.ListProductsRequest{PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range resp.GetProducts() {
		n += p.GetOnHand()
	}
	return n
}

// TestImportStockResentAppliesOnce: an import sent twice, and an import cut after k lines then sent again
// in full, add their stock once; the second summaries count the lines applied before as skipped.
func TestImportStockResentAppliesOnce(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			f := start(t, b.DSN(t), 3, 10)
			ctx := callCtx(t)

			lines := importLines("delivery-1", 30)
			units := f.receive(lines)
			sum, err := sendImport(ctx, f.client, lines)
			wantSummary(t, sum, err, 30, 30, 0, units)
			if sum.GetImportId() != "delivery-1" {
				t.Fatalf("import_id = %q", sum.GetImportId())
			}
			sum, err = sendImport(ctx, f.client, lines)
			wantSummary(t, sum, err, 30, 0, 30, 0)
			f.check(t)

			// Cut after k lines: the client goes away once they are applied, then sends everything again.
			const k = 12
			lines = importLines("delivery-2", 30)
			before := onHand(t, f.client)
			var firstK int64
			for _, l := range lines[:k] {
				firstK += l.GetQuantity()
			}
			cutCtx, cut := context.WithCancel(ctx)
			stream, err := f.client.ImportStock(cutCtx)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range lines[:k] {
				if err := stream.Send(l); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, fmt.Sprintf("the first %d lines to be applied", k), func() bool { return onHand(t, f.client) == before+firstK })
			cut()
			if _, err := stream.CloseAndRecv(); status.Code(err) != codes.Canceled {
				t.Fatalf("cut stream ended with %v, want CANCELED", err)
			}
			units = f.receive(lines)
			sum, err = sendImport(ctx, f.client, lines)
			wantSummary(t, sum, err, 30, 30-k, k, units-firstK)
			f.check(t)
		})
	}
}

// TestImportStockRetriedByGRPCAppliesOnce: the instance fails the stream with UNAVAILABLE after k
// lines (as one going away would), grpc-go's retry policy replays the buffered stream, and the replayed
// lines are skipped, not added again.
func TestImportStockRetriedByGRPCAppliesOnce(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			const k = 7
			cutter := &cutFirstImport{after: k}
			retry := grpc.WithDefaultServiceConfig(`{"methodConfig": [{
				"name": [{"service": "shopmesh.inventory.v1.InventoryService", "method": "ImportStock"}],
				"retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
					"backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}`)
			f := startWith(t, b.DSN(t), 3, 10, func(s *rpc.Server) inventoryv1.InventoryServiceServer {
				cutter.Server = s
				return cutter
			}, retry)
			ctx := callCtx(t)

			lines := importLines("delivery-retried", 20)
			var firstK int64
			for _, l := range lines[:k] {
				firstK += l.GetQuantity()
			}
			units := f.receive(lines)
			sum, err := sendImport(ctx, f.client, lines)
			wantSummary(t, sum, err, 20, 20-k, k, units-firstK)
			if n := cutter.attempts.Load(); n != 2 {
				t.Fatalf("%d attempts reached the server, want 2 (one cut, one replayed)", n)
			}
			f.check(t)
		})
	}
}

// cutFirstImport fails the first ImportStock stream with UNAVAILABLE after its first `after` lines.
type cutFirstImport struct {
	*rpc.Server
	after    int
	attempts atomic.Int32
}

func (c *cutFirstImport) ImportStock(stream grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]) error {
	if c.attempts.Add(1) == 1 {
		return c.Server.ImportStock(&cutStream{ClientStreamingServer: stream, left: c.after})
	}
	return c.Server.ImportStock(stream)
}

type cutStream struct {
	grpc.ClientStreamingServer[inventoryv1.ImportStockRequest, inventoryv1.ImportStockResponse]
	left int
}

func (s *cutStream) RecvMsg(m any) error {
	if s.left == 0 {
		return status.Error(codes.Unavailable, "instance going away")
	}
	s.left--
	return s.ClientStreamingServer.RecvMsg(m)
}

// TestImportStockTwoInstancesApplyOnce: two instances on one database receive overlapping parts of an
// import, then both the whole of another, concurrently; every line is applied by exactly one of them.
func TestImportStockTwoInstancesApplyOnce(t *testing.T) {
	t.Parallel()
	for _, b := range sqldbtest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			f := start(t, dsn, 3, 10)
			other := serve(t, dsn, nil)
			ctx := callCtx(t)
			both := func(a, b []*inventoryv1.ImportStockRequest) [2]*inventoryv1.ImportStockResponse {
				var (
					wg   sync.WaitGroup
					sums [2]*inventoryv1.ImportStockResponse
				)
				for i, c := range []inventoryv1.InventoryServiceClient{f.client, other.client} {
					part := [][]*inventoryv1.ImportStockRequest{a, b}[i]
					wg.Add(1)
					go func() {
						defer wg.Done()
						sum, err := sendImport(ctx, c, part)
						if err != nil {
							t.Errorf("instance %d: %v", i, err)
							return
						}
						sums[i] = sum
					}()
				}
				wg.Wait()
				if t.Failed() {
					t.FailNow()
				}
				return sums
			}
			halves, twins := importLines("halves", 90), importLines("twins", 60)
			for _, tc := range []struct {
				name      string
				lines     []*inventoryv1.ImportStockRequest
				a, b      []*inventoryv1.ImportStockRequest // what each instance receives
				duplicate int64                             // lines both receive
			}{
				{"overlapping halves", halves, halves[:60], halves[30:], 30},
				{"the whole import on both", twins, twins, twins, 60},
			} {
				units := f.receive(tc.lines)
				sums := both(tc.a, tc.b)
				applied := sums[0].GetLinesApplied() + sums[1].GetLinesApplied()
				skipped := sums[0].GetLinesSkipped() + sums[1].GetLinesSkipped()
				added := sums[0].GetUnitsAdded() + sums[1].GetUnitsAdded()
				t.Logf("%s: instance A applied %d skipped %d, instance B applied %d skipped %d", tc.name,
					sums[0].GetLinesApplied(), sums[0].GetLinesSkipped(), sums[1].GetLinesApplied(), sums[1].GetLinesSkipped())
				if applied != int64(len(tc.lines)) || skipped != tc.duplicate || added != units ||
					sums[0].GetLinesRejected()+sums[1].GetLinesRejected() != 0 {
					t.Fatalf("%s: %d applied, %d skipped, %d units; want %d, %d, %d (summaries %v / %v)", tc.name,
						applied, skipped, added, len(tc.lines), tc.duplicate, units, sums[0], sums[1])
				}
			}
			f.check(t)
		})
	}
}

// TestImportStockRefusesBadIdentity: a line without a usable import_id or seq ends the stream with
// INVALID_ARGUMENT naming the field; the lines before it stay applied.
func TestImportStockRefusesBadIdentity(t *testing.T) {
	t.Parallel()
	f := start(t, sqldbtest.SQLite(t), 3, 10)
	ctx := callCtx(t)
	line := func(id string, seq int64) *inventoryv1.ImportStockRequest {
		return &inventoryv1.ImportStockRequest{ImportId: id, Seq: seq, Sku: "SKU-0001", Quantity: 1}
	}
	tests := []struct {
		name  string
		lines []*inventoryv1.ImportStockRequest
		field string
		kept  int // lines applied before the refusal
	}{
		{"no import id", []*inventoryv1.ImportStockRequest{line("", 1)}, "import_id", 0},
		{"malformed import id", []*inventoryv1.ImportStockRequest{line("a b", 1)}, "import_id", 0},
		{"no seq", []*inventoryv1.ImportStockRequest{line("imp-a", 0)}, "seq", 0},
		{"seq going back", []*inventoryv1.ImportStockRequest{line("imp-b", 1), line("imp-b", 2), line("imp-b", 2)}, "seq", 2},
		{"import id changing", []*inventoryv1.ImportStockRequest{line("imp-c", 1), line("imp-d", 2)}, "import_id", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := onHand(t, f.client)
			_, err := sendImport(ctx, f.client, tt.lines)
			vs := rpcerr.Violations(err)
			if rpcerr.Code(err) != codes.InvalidArgument || len(vs) != 1 || vs[0].Field != tt.field {
				t.Fatalf("err = %v (violations %v), want INVALID_ARGUMENT on %s", err, vs, tt.field)
			}
			if got := onHand(t, f.client) - before; got != int64(tt.kept) {
				t.Fatalf("%d units added, want %d (the lines before the refusal)", got, tt.kept)
			}
			f.received["SKU-0001"] += int64(tt.kept)
		})
	}
	// A gap in seq is fine (a resumed import starts past 1).
	sum, err := sendImport(ctx, f.client, []*inventoryv1.ImportStockRequest{line("imp-e", 5), line("imp-e", 9)})
	wantSummary(t, sum, err, 2, 2, 0, 2)
	f.received["SKU-0001"] += 2
	f.check(t)
}

// eventually polls cond until it holds, failing the test if it does not within 20 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
