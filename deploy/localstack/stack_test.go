package localstack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
)

const (
	confirmed = orderv1.OrderStatus_ORDER_STATUS_CONFIRMED
	cancelled = orderv1.OrderStatus_ORDER_STATUS_CANCELLED
	pending   = orderv1.OrderStatus_ORDER_STATUS_PENDING
)

// syncBuffer collects the stack's own log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testConfig(t *testing.T) (localstack.Config, *syncBuffer) {
	t.Helper()
	root, err := localstack.FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := localstack.Default(root)
	cfg.DataDir, cfg.RunDir, cfg.BinDir = filepath.Join(dir, "data"), filepath.Join(dir, "run"), filepath.Join(dir, "bin")
	// Every service of the list on free ports, with its dev instance count (order 1, inventory 2,
	// payment 2, gateway 1).
	cfg.FreePorts = true
	cfg.NATSAddr, cfg.KafkaAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Env = []string{"PATH=" + os.Getenv("PATH")}
	cfg.StopTimeout = 20 * time.Second
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	return cfg, logs
}

// TestStack runs the real binaries through Run, the code path of `make run`: 2 inventory, 2 payment,
// 1 order (and the gateway when it builds), then drives the suite over gRPC, kills an inventory
// instance, places 200 concurrent orders, checks the stock and money ledgers through the APIs, and
// stops everything by cancelling the context.
func TestStack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg, logs := testConfig(t)
	defer func() {
		if t.Failed() {
			t.Logf("stack log:\n%s", logs.String())
		}
	}()

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var out syncBuffer
	done := make(chan error, 1)
	go func() { done <- localstack.Run(runCtx, cfg, &out) }()
	info := waitStackFile(t, ctx, filepath.Join(cfg.RunDir, "stack.json"), done)

	// stack.json lists every instance with a live pid.
	count := map[string]int{}
	for _, i := range info.Instances {
		count[i.Service]++
		if i.PID <= 0 || !alive(i.PID) {
			t.Fatalf("%s: pid %d not running", i.Name(), i.PID)
		}
		if i.Service != localstack.Gateway && i.GRPCAddr == "" {
			t.Fatalf("%s: no grpc_addr", i.Name())
		}
	}
	if count[localstack.Inventory] != 2 || count[localstack.Payment] != 2 || count[localstack.Order] != 1 {
		t.Fatalf("instances %v, want 2 inventory, 2 payment, 1 order", count)
	}
	t.Logf("stack.json: %d instances %v (gateway %q)", len(info.Instances), count, info.GatewayURL)
	if !strings.Contains(out.String(), "shopmesh is up") {
		t.Fatalf("no summary printed:\n%s", out.String())
	}

	t.Run("mtls", func(t *testing.T) { mtlsOnly(t, ctx, info) })
	oc := orderv1.NewOrderServiceClient(dial(t, info, localstack.Order))
	ic := inventoryv1.NewInventoryServiceClient(dial(t, info, localstack.Inventory))
	pc := paymentv1.NewPaymentServiceClient(dial(t, info, localstack.Payment))

	l := newLedger(t, ctx, oc, ic, pc)

	t.Run("functional", func(t *testing.T) { functional(t, ctx, oc, ic, l) })
	if t.Failed() {
		return
	}

	t.Run("kill one inventory", func(t *testing.T) {
		victim := instance(t, info, localstack.Inventory, 1)
		if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "inventory-1 reported as exited", func() bool {
			return exitLogged(logs.String(), "inventory-1")
		})
		orders := placeMany(t, ctx, oc, l, 40, func(i int) (string, []*orderv1.OrderItem) {
			return fmt.Sprintf("cust-%04d", 101+i%10), []*orderv1.OrderItem{{Sku: fmt.Sprintf("SKU-%04d", 11+i%4), Quantity: 1}}
		})
		failures := 0
		for _, o := range orders {
			if o.GetStatus() != confirmed {
				failures++
				t.Errorf("order %s: %s %s %s", o.GetId(), o.GetStatus(), o.GetCancelReason(), o.GetCancelDetail())
			}
		}
		t.Logf("after kill -9 of inventory-1: %d orders, %d failures", len(orders), failures)
		select {
		case err := <-done:
			t.Fatalf("the stack stopped after one instance died: %v", err)
		default:
		}
		for _, i := range info.Instances {
			if i.PID != victim.PID && !alive(i.PID) {
				t.Errorf("%s (pid %d) is not running", i.Name(), i.PID)
			}
		}
	})

	t.Run("gateway", func(t *testing.T) {
		if info.GatewayURL == "" {
			t.Skip("the gateway is not in the stack (services/gateway/cmd/gateway missing or not building)")
		}
		gatewayHTTP(t, ctx, info.GatewayURL, l)
	})

	t.Run("200 concurrent orders and the ledgers", func(t *testing.T) {
		orders := placeMany(t, ctx, oc, l, 200, func(i int) (string, []*orderv1.OrderItem) {
			cust := fmt.Sprintf("cust-%04d", 201+i%20)
			if i%25 == 0 {
				cust = "cust-broke"
			}
			items := []*orderv1.OrderItem{{Sku: fmt.Sprintf("SKU-%04d", 15+i%5), Quantity: int32(1 + i%3)}}
			if i%4 == 0 {
				items = append(items, &orderv1.OrderItem{Sku: "SKU-SCARCE", Quantity: 2}) // 30 units: some run out
			}
			return cust, items
		})
		byStatus := map[string]int{}
		for _, o := range orders {
			key := o.GetStatus().String()
			if o.GetStatus() == cancelled {
				key += "/" + o.GetCancelReason().String()
			}
			byStatus[key]++
		}
		t.Logf("200 concurrent orders: %v", byStatus)
		if byStatus[confirmed.String()] == 0 || byStatus["ORDER_STATUS_CANCELLED/CANCEL_REASON_OUT_OF_STOCK"] == 0 ||
			byStatus["ORDER_STATUS_CANCELLED/CANCEL_REASON_PAYMENT_DECLINED"] == 0 {
			t.Errorf("want confirmed, out-of-stock and declined orders, got %v", byStatus)
		}
		if n := byStatus["ORDER_STATUS_CANCELLED/CANCEL_REASON_DEPENDENCY_FAILED"]; n > 0 {
			t.Errorf("%d orders failed on a dependency", n)
		}
		l.check(t, ctx)
	})

	// Every process's /metrics (admin port from stack.json) after the load above.
	t.Run("metrics", func(t *testing.T) { checkMetrics(t, ctx, info) })

	t.Run("cancel a pending order", func(t *testing.T) {
		// With every payment instance gone the saga cannot finish, so the order stays PENDING (the
		// recovery worker retries it) and the customer can cancel it.
		for _, i := range info.Instances {
			if i.Service == localstack.Payment {
				if err := syscall.Kill(i.PID, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
		}
		waitFor(t, ctx, "both payment instances reported as exited", func() bool {
			return exitLogged(logs.String(), "payment-1") && exitLogged(logs.String(), "payment-2")
		})
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		r, err := oc.CreateOrder(cctx, &orderv1.CreateOrderRequest{CustomerId: "cust-0002", IdempotencyKey: "pending-1",
			Items: []*orderv1.OrderItem{{Sku: "SKU-0024", Quantity: 1}}})
		if err != nil {
			t.Fatalf("CreateOrder with payment down: %v", err)
		}
		if r.GetOrder().GetStatus() != pending {
			t.Skipf("order is %s, not PENDING, with payment down; cancel-of-pending not exercised", r.GetOrder().GetStatus())
		}
		c, err := oc.CancelOrder(cctx, &orderv1.CancelOrderRequest{OrderId: r.GetOrder().GetId(), Reason: "changed my mind"})
		if err != nil {
			t.Fatalf("CancelOrder: %v", err)
		}
		if c.GetOrder().GetStatus() != cancelled || c.GetOrder().GetCancelReason() != orderv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUESTED {
			t.Fatalf("cancelled order: %s %s", c.GetOrder().GetStatus(), c.GetOrder().GetCancelReason())
		}
		waitFor(t, ctx, "SKU-0024 reservation released", func() bool { return l.product(t, ctx, ic, "SKU-0024").GetReserved() == 0 })
		if got := l.product(t, ctx, ic, "SKU-0024").GetOnHand(); got != l.final["stock SKU-0024"] {
			t.Fatalf("SKU-0024 on_hand %d after the cancel, want %d", got, l.final["stock SKU-0024"])
		}
		t.Logf("pending order %s cancelled: CUSTOMER_REQUESTED, stock released", c.GetOrder().GetId())
	})

	// Ctrl-C: cancelling the context stops every child and Run returns.
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return after cancel")
	}
	for _, i := range info.Instances {
		if alive(i.PID) || groupAlive(i.PID) {
			t.Errorf("%s (pid %d) or its process group survived the stop", i.Name(), i.PID)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.RunDir, "stack.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stack.json left behind: %v", err)
	}
	if strings.Contains(logs.String(), "killed after the stop timeout") {
		t.Errorf("a child needed SIGKILL:\n%s", logs.String())
	}

	// Data survives a restart: the orders, stock and balances are read back from the same data dir.
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer s.Stop()
	info = s.Info()
	defer func() {
		s.Stop()
		for _, i := range info.Instances {
			if alive(i.PID) || groupAlive(i.PID) {
				t.Errorf("after the second stop, %s (pid %d) survived", i.Name(), i.PID)
			}
		}
	}()
	oc = orderv1.NewOrderServiceClient(dial(t, info, localstack.Order))
	ic = inventoryv1.NewInventoryServiceClient(dial(t, info, localstack.Inventory))
	pc = paymentv1.NewPaymentServiceClient(dial(t, info, localstack.Payment))
	before := l.final
	after := map[string]int64{}
	for _, id := range l.orders {
		r, err := oc.GetOrder(ctx, &orderv1.GetOrderRequest{OrderId: id})
		if err != nil {
			t.Fatalf("after restart, GetOrder %s: %v", id, err)
		}
		after["order "+id+" "+r.GetOrder().GetStatus().String()] = r.GetOrder().GetTotalCents()
	}
	for _, p := range listProducts(t, ctx, ic) {
		after["stock "+p.GetSku()] = p.GetOnHand()
	}
	for c := range l.balance {
		after["balance "+c] = account(t, ctx, pc, c).GetBalanceCents()
	}
	if len(after) != len(before) {
		t.Fatalf("after restart: %d facts, before %d", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("after restart %s = %d, before %d", k, after[k], v)
		}
	}
	if c := s.Crashed(); len(c) > 0 {
		t.Errorf("crashed after restart: %v", c)
	}
	t.Logf("restart on the same data dir: %d orders, %d SKUs and %d balances unchanged", len(l.orders), len(products(after)), len(l.balance))
}

// exitLogged reports whether the stack logged that instance exited on its own.
func exitLogged(logs, instance string) bool {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "instance exited") && strings.Contains(line, "instance="+instance+" ") {
			return true
		}
	}
	return false
}

// products counts the stock facts.
func products(facts map[string]int64) []string {
	var out []string
	for k := range facts {
		if strings.HasPrefix(k, "stock ") {
			out = append(out, k)
		}
	}
	return out
}

// TestStartFailsWhenPortTaken: a taken port is reported, naming the instance, before anything starts.
func TestStartFailsWhenPortTaken(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg, _ := testConfig(t)
	cfg.Skip = []string{localstack.Gateway}
	cfg.Instances = map[string][]string{localstack.Payment: {"127.0.0.1:0", busy.Addr().String()}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := localstack.Start(ctx, cfg)
	if err == nil {
		s.Stop()
		t.Fatal("Start succeeded on a taken port")
	}
	if !strings.Contains(err.Error(), "payment-2") || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Fatalf("error does not name payment-2 and its address: %v", err)
	}
	if entries, _ := os.ReadDir(cfg.BinDir); len(entries) > 0 {
		t.Fatalf("built %d binaries before failing", len(entries))
	}
}

func functional(t *testing.T, ctx context.Context, oc orderv1.OrderServiceClient, ic inventoryv1.InventoryServiceClient, l *ledger) {
	// ImportStock: a new scarce SKU for the out-of-stock cases and more of an existing one.
	name, price, eur := "Scarce widget", int64(500), "EUR"
	low, lowName := "SKU-LOW", "Rare widget"
	l.importStock(t, ctx, ic, []*inventoryv1.ImportStockRequest{
		{Sku: "SKU-SCARCE", Quantity: 30, Name: &name, PriceCents: &price, Currency: &eur},
		{Sku: low, Quantity: 3, Name: &lowName, PriceCents: &price, Currency: &eur},
		{Sku: "SKU-0003", Quantity: 5},
	})
	if p := l.product(t, ctx, ic, "SKU-0003"); p.GetOnHand() != l.initial["SKU-0003"]+5 {
		t.Fatalf("SKU-0003 on_hand %d after importing 5 onto %d", p.GetOnHand(), l.initial["SKU-0003"])
	}

	// Checkout (bidirectional): one priced, stock-checked quote per cart edit.
	co, err := oc.Checkout(ctx)
	if err != nil {
		t.Fatal(err)
	}
	edits := []*orderv1.CartSetItem{{Sku: "SKU-0001", Quantity: 2}, {Sku: "SKU-NOPE", Quantity: 1}, {Sku: low, Quantity: 4}}
	var quote *orderv1.Quote
	for _, e := range edits {
		if err := co.Send(&orderv1.CheckoutRequest{Edit: &orderv1.CheckoutRequest_SetItem{SetItem: e}}); err != nil {
			t.Fatalf("checkout send: %v", err)
		}
		r, err := co.Recv()
		if err != nil {
			t.Fatalf("checkout recv: %v", err)
		}
		quote = r.GetQuote()
	}
	if err := co.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := co.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("checkout after CloseSend: %v, want EOF", err)
	}
	statuses := map[string]orderv1.QuoteLineStatus{}
	for _, line := range quote.GetLines() {
		statuses[line.GetSku()] = line.GetStatus()
	}
	if len(quote.GetLines()) != 3 || quote.GetOrderable() || quote.GetRevision() != 3 ||
		statuses["SKU-0001"] != orderv1.QuoteLineStatus_QUOTE_LINE_STATUS_AVAILABLE ||
		statuses["SKU-NOPE"] != orderv1.QuoteLineStatus_QUOTE_LINE_STATUS_UNKNOWN_PRODUCT ||
		statuses[low] != orderv1.QuoteLineStatus_QUOTE_LINE_STATUS_INSUFFICIENT_STOCK {
		t.Fatalf("checkout quote: %v", quote)
	}

	// WatchStock (server streaming): the current level first, then the change the next order makes.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	stock, err := ic.WatchStock(wctx, &inventoryv1.WatchStockRequest{Skus: []string{"SKU-0001"}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stock.Recv()
	if err != nil {
		t.Fatalf("watch stock: %v", err)
	}

	// Happy path, followed with WatchOrder until the stream ends at the terminal state.
	created := l.create(t, ctx, oc, "cust-0001", "happy-1", &orderv1.OrderItem{Sku: "SKU-0001", Quantity: 2})
	next, err := stock.Recv()
	if err != nil {
		t.Fatalf("watch stock after an order: %v", err)
	}
	if next.GetLevel().GetVersion() <= first.GetLevel().GetVersion() ||
		next.GetLevel().GetAvailable() >= first.GetLevel().GetAvailable() {
		t.Fatalf("stock levels %v then %v: want a newer, lower level", first.GetLevel(), next.GetLevel())
	}
	stopWatch()
	watch, err := oc.WatchOrder(ctx, &orderv1.WatchOrderRequest{OrderId: created.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var last *orderv1.Order
	msgs := 0
	for {
		m, err := watch.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		msgs++
		last = m.GetOrder()
	}
	if last.GetStatus() != confirmed || last.GetTotalCents() <= 0 {
		t.Fatalf("happy path ended %s total %d", last.GetStatus(), last.GetTotalCents())
	}
	t.Logf("happy path: %s CONFIRMED, total %d, watch sent %d message(s) then ended", last.GetId(), last.GetTotalCents(), msgs)

	// Idempotent retry: the same key returns the same order.
	again := l.create(t, ctx, oc, "cust-0001", "happy-1", &orderv1.OrderItem{Sku: "SKU-0001", Quantity: 2})
	if again.GetId() != created.GetId() {
		t.Fatalf("retry with the same key made order %s, want %s", again.GetId(), created.GetId())
	}

	cases := []struct {
		name, customer string
		item           *orderv1.OrderItem
		reason         orderv1.CancelReason
	}{
		{"out of stock", "cust-0002", &orderv1.OrderItem{Sku: low, Quantity: 5}, orderv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK},
		{"declined", "cust-broke", &orderv1.OrderItem{Sku: "SKU-0002", Quantity: 1}, orderv1.CancelReason_CANCEL_REASON_PAYMENT_DECLINED},
	}
	for _, c := range cases {
		o := l.waitTerminal(t, ctx, oc, l.create(t, ctx, oc, c.customer, "case-"+c.name, c.item).GetId())
		if o.GetStatus() != cancelled || o.GetCancelReason() != c.reason {
			t.Fatalf("%s: %s %s (%s), want CANCELLED %s", c.name, o.GetStatus(), o.GetCancelReason(), o.GetCancelDetail(), c.reason)
		}
		// Cancelling a cancelled order is a no-op.
		if _, err := oc.CancelOrder(ctx, &orderv1.CancelOrderRequest{OrderId: o.GetId(), Reason: "again"}); err != nil {
			t.Fatalf("%s: cancel of a cancelled order: %v", c.name, err)
		}
	}
	// A confirmed order is final.
	_, err = oc.CancelOrder(ctx, &orderv1.CancelOrderRequest{OrderId: created.GetId(), Reason: "too late"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("cancel of a CONFIRMED order: %v, want FailedPrecondition", err)
	}
}

// ledger tracks everything the test did to stock and money, to check conservation at the end.
type ledger struct {
	oc       orderv1.OrderServiceClient
	ic       inventoryv1.InventoryServiceClient
	pc       paymentv1.PaymentServiceClient
	initial  map[string]int64 // on_hand per SKU before the test
	imported map[string]int64
	balance  map[string]int64 // balance per customer before the test
	mu       sync.Mutex
	orders   []string
	// final holds every fact after settlement ("stock SKU-0001", "balance cust-0001", "order <id>
	// <status>"), to compare after a restart.
	final map[string]int64
}

func newLedger(t *testing.T, ctx context.Context, oc orderv1.OrderServiceClient, ic inventoryv1.InventoryServiceClient,
	pc paymentv1.PaymentServiceClient) *ledger {
	l := &ledger{oc: oc, ic: ic, pc: pc, initial: map[string]int64{}, imported: map[string]int64{}, balance: map[string]int64{}}
	for _, p := range listProducts(t, ctx, ic) {
		l.initial[p.GetSku()] = p.GetOnHand()
	}
	if len(l.initial) == 0 {
		t.Fatal("no seeded products")
	}
	customers := []string{"cust-0001", "cust-0002", "cust-broke"}
	for i := 101; i <= 110; i++ {
		customers = append(customers, fmt.Sprintf("cust-%04d", i))
	}
	for i := 201; i <= 220; i++ {
		customers = append(customers, fmt.Sprintf("cust-%04d", i))
	}
	for _, c := range customers {
		a := account(t, ctx, pc, c)
		if a.GetHeldCents() != 0 {
			t.Fatalf("%s holds %d before the test", c, a.GetHeldCents())
		}
		l.balance[c] = a.GetBalanceCents()
	}
	return l
}

// importStock imports lines under a new import id, then sends the same import again (round robin takes
// it to the other inventory instance, if any): the resend must apply nothing.
func (l *ledger) importStock(t *testing.T, ctx context.Context, ic inventoryv1.InventoryServiceClient, lines []*inventoryv1.ImportStockRequest) {
	t.Helper()
	id := fmt.Sprintf("stack-%d", time.Now().UnixNano())
	for i, line := range lines {
		line.ImportId, line.Seq = id, int64(i+1)
	}
	for attempt := range 2 {
		st, err := ic.ImportStock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range lines {
			if err := st.Send(line); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := st.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		applied, skipped := int64(len(lines)), int64(0)
		if attempt == 1 {
			applied, skipped = 0, int64(len(lines))
		}
		if resp.GetLinesApplied() != applied || resp.GetLinesSkipped() != skipped {
			t.Fatalf("import (attempt %d) applied %d and skipped %d of %d lines: %v", attempt+1,
				resp.GetLinesApplied(), resp.GetLinesSkipped(), len(lines), resp.GetErrors())
		}
	}
	for _, line := range lines {
		l.imported[line.GetSku()] += line.GetQuantity()
	}
}

func (l *ledger) product(t *testing.T, ctx context.Context, ic inventoryv1.InventoryServiceClient, sku string) *inventoryv1.Product {
	t.Helper()
	r, err := ic.GetProduct(ctx, &inventoryv1.GetProductRequest{Sku: sku})
	if err != nil {
		t.Fatalf("GetProduct %s: %v", sku, err)
	}
	return r.GetProduct()
}

func (l *ledger) create(t *testing.T, ctx context.Context, oc orderv1.OrderServiceClient, customer, key string, items ...*orderv1.OrderItem) *orderv1.Order {
	t.Helper()
	o, err := l.place(ctx, oc, customer, key, items)
	if err != nil {
		t.Fatalf("CreateOrder %s %s: %v", customer, key, err)
	}
	return o
}

func (l *ledger) place(ctx context.Context, oc orderv1.OrderServiceClient, customer, key string, items []*orderv1.OrderItem) (*orderv1.Order, error) {
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	r, err := oc.CreateOrder(cctx, &orderv1.CreateOrderRequest{CustomerId: customer, IdempotencyKey: key, Items: items})
	if err != nil {
		return nil, err
	}
	l.track(r.GetOrder().GetId())
	return r.GetOrder(), nil
}

// track adds an order to the ledger once; "" (an order the gateway did not name) is ignored.
func (l *ledger) track(id string) {
	if id == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, known := range l.orders {
		if known == id {
			return
		}
	}
	l.orders = append(l.orders, id)
}

func (l *ledger) waitTerminal(t *testing.T, ctx context.Context, oc orderv1.OrderServiceClient, id string) *orderv1.Order {
	t.Helper()
	for {
		r, err := oc.GetOrder(ctx, &orderv1.GetOrderRequest{OrderId: id})
		if err != nil {
			t.Fatalf("GetOrder %s: %v", id, err)
		}
		if r.GetOrder().GetStatus() != pending {
			return r.GetOrder()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("order %s still PENDING", id)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// check waits until no stock is reserved and no money held for what the test touched, then checks
// every order is in exactly one terminal state, stock is conserved per SKU (initial + imported =
// on_hand + sold) and money per customer (initial = balance + captured, captured = the sum of the
// customer's CONFIRMED totals, so a confirmed order is captured once and a cancelled one never).
func (l *ledger) check(t *testing.T, ctx context.Context) {
	t.Helper()
	sold := map[string]int64{}
	captured := map[string]int64{}
	nConfirmed, nCancelled := 0, 0
	for _, id := range l.orders {
		o := l.waitTerminal(t, ctx, l.oc, id)
		switch {
		case o.GetStatus() == confirmed && o.GetCancelReason() == orderv1.CancelReason_CANCEL_REASON_UNSPECIFIED:
			nConfirmed++
			for _, line := range o.GetItems() {
				sold[line.GetSku()] += int64(line.GetQuantity())
			}
			captured[o.GetCustomerId()] += o.GetTotalCents()
		case o.GetStatus() == cancelled && o.GetCancelReason() != orderv1.CancelReason_CANCEL_REASON_UNSPECIFIED:
			nCancelled++
		default:
			t.Errorf("order %s is in no single terminal state: %s %s", id, o.GetStatus(), o.GetCancelReason())
		}
	}
	if _, ok := captured["cust-broke"]; ok {
		t.Errorf("cust-broke had a CONFIRMED order")
	}

	// Settlement: the events that release or commit stock and void or capture money are consumed.
	var products map[string]*inventoryv1.Product
	accounts := map[string]*paymentv1.Account{}
	waitFor(t, ctx, "reserved stock and held money settle to 0", func() bool {
		products = map[string]*inventoryv1.Product{}
		settled := true
		for _, p := range listProducts(t, ctx, l.ic) {
			products[p.GetSku()] = p
			settled = settled && p.GetReserved() == 0
		}
		for c := range l.balance {
			accounts[c] = account(t, ctx, l.pc, c)
			settled = settled && accounts[c].GetHeldCents() == 0
		}
		return settled
	})

	var units, unitsSold, money, moneyCaptured int64
	for sku, p := range products {
		want := l.initial[sku] + l.imported[sku]
		if got := p.GetOnHand() + sold[sku]; got != want {
			t.Errorf("stock %s: on_hand %d + sold %d = %d, want initial %d + imported %d = %d",
				sku, p.GetOnHand(), sold[sku], got, l.initial[sku], l.imported[sku], want)
		}
		units += want
		unitsSold += sold[sku]
	}
	for c, before := range l.balance {
		a := accounts[c]
		if got := a.GetBalanceCents() + captured[c]; got != before {
			t.Errorf("money %s: balance %d + captured %d = %d, want initial %d", c, a.GetBalanceCents(), captured[c], got, before)
		}
		money += before
		moneyCaptured += captured[c]
	}
	l.final = map[string]int64{}
	for _, id := range l.orders {
		o := l.waitTerminal(t, ctx, l.oc, id)
		l.final["order "+id+" "+o.GetStatus().String()] = o.GetTotalCents()
	}
	for sku, p := range products {
		l.final["stock "+sku] = p.GetOnHand()
	}
	for c, a := range accounts {
		l.final["balance "+c] = a.GetBalanceCents()
	}
	t.Logf("ledgers over %d orders (%d CONFIRMED, %d CANCELLED): stock %d units over %d SKUs, %d sold, reserved 0; "+
		"money %d cents over %d accounts, %d captured, held 0",
		len(l.orders), nConfirmed, nCancelled, units, len(products), unitsSold, money, len(l.balance), moneyCaptured)
}

func listProducts(t *testing.T, ctx context.Context, ic inventoryv1.InventoryServiceClient) []*inventoryv1.Product {
	t.Helper()
	var out []*inventoryv1.Product
	token := ""
	for {
		r, err := ic.ListProducts(ctx, &inventoryv1.ListProductsRequest{PageSize: 100, PageToken: token})
		if err != nil {
			t.Fatalf("ListProducts: %v", err)
		}
		out = append(out, r.GetProducts()...)
		if token = r.GetNextPageToken(); token == "" {
			return out
		}
	}
}

func account(t *testing.T, ctx context.Context, pc paymentv1.PaymentServiceClient, customer string) *paymentv1.Account {
	t.Helper()
	r, err := pc.GetAccount(ctx, &paymentv1.GetAccountRequest{CustomerId: customer})
	if err != nil {
		t.Fatalf("GetAccount %s: %v", customer, err)
	}
	return r.GetAccount()
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting until %s", what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitStackFile waits for Run to write stack.json and decodes it.
func waitStackFile(t *testing.T, ctx context.Context, path string, done <-chan error) localstack.Info {
	t.Helper()
	for {
		if data, err := os.ReadFile(path); err == nil {
			var info localstack.Info
			if err := json.Unmarshal(data, &info); err != nil {
				t.Fatalf("stack.json: %v", err)
			}
			return info
		}
		select {
		case err := <-done:
			t.Fatalf("Run ended before the stack was ready: %v", err)
		case <-ctx.Done():
			t.Fatal("stack.json not written in time")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func addrsOf(info localstack.Info, service string) []string {
	var out []string
	for _, i := range info.Instances {
		if i.Service == service {
			out = append(out, i.GRPCAddr)
		}
	}
	return out
}

func instance(t *testing.T, info localstack.Info, service string, index int) localstack.Instance {
	t.Helper()
	for _, i := range info.Instances {
		if i.Service == service && i.Index == index {
			return i
		}
	}
	t.Fatalf("no %s-%d in stack.json", service, index)
	return localstack.Instance{}
}

// dial connects round-robin to every instance of service, as a client of the suite would: over mTLS
// with the gateway's certificate (the identity the policy lets call every method the test uses).
func dial(t *testing.T, info localstack.Info, service string) *grpc.ClientConn {
	t.Helper()
	r := manual.NewBuilderWithScheme(fmt.Sprintf("stack%d", time.Now().UnixNano()))
	var state resolver.State
	for _, a := range addrsOf(info, service) {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(state)
	creds := insecure.NewCredentials()
	if info.CertsDir != "" {
		src, err := mtls.Load(localstack.CertFiles(info.CertsDir, localstack.Gateway))
		if err != nil {
			t.Fatal(err)
		}
		creds = src.ClientCredentials(service)
	}
	conn, err := grpc.NewClient(r.Scheme()+":///suite", grpc.WithResolvers(r),
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// alive reports whether pid exists (a reaped child no longer does).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// groupAlive reports whether any process is left in the process group pid leads.
func groupAlive(pid int) bool { return syscall.Kill(-pid, 0) == nil }

// placeMany places n orders concurrently (order i from spec(i)) and waits until each is terminal. An
// order whose CreateOrder fails after the platform's retries is reported as an error.
func placeMany(t *testing.T, ctx context.Context, oc orderv1.OrderServiceClient, l *ledger, n int,
	spec func(i int) (string, []*orderv1.OrderItem)) []*orderv1.Order {
	t.Helper()
	out := make([]*orderv1.Order, n)
	errs := make([]error, n)
	prefix := fmt.Sprintf("bulk-%d-", time.Now().UnixNano())
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cust, items := spec(i)
			o, err := l.place(ctx, oc, cust, prefix+fmt.Sprint(i), items)
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = o
		})
	}
	wg.Wait()
	var res []*orderv1.Order
	for i, o := range out {
		if errs[i] != nil {
			t.Errorf("order %d: CreateOrder failed: %v", i, errs[i])
			continue
		}
		res = append(res, l.waitTerminal(t, ctx, oc, o.GetId()))
	}
	return res
}

// gatewayHTTP drives the gateway like the printed curl commands: a dev token, the products, orders
// (confirmed, out of stock, declined); the orders join the ledger.
func gatewayHTTP(t *testing.T, ctx context.Context, base string, l *ledger) {
	call := func(method, path, token, key string, body any, want int, into any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			data, err := json.Marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			rd = bytes.NewReader(data)
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(cctx, method, base+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %s %s, want %d", method, path, resp.Status, data, want)
		}
		if into != nil {
			if err := json.Unmarshal(data, into); err != nil {
				t.Fatalf("%s %s: %v in %s", method, path, err, data)
			}
		}
	}
	token := func(customer string) string {
		var tok struct{ Token string }
		call(http.MethodPost, "/v1/dev/token", "", "", map[string]string{"customer_id": customer}, http.StatusOK, &tok)
		if tok.Token == "" {
			t.Fatal("empty dev token")
		}
		return tok.Token
	}
	type order struct{ ID, Status string }
	type apiError struct {
		Code    string
		OrderID string `json:"order_id"`
	}
	tok := token("cust-0001")
	var products struct {
		Products []struct{ SKU string }
	}
	call(http.MethodGet, "/v1/products", tok, "", nil, http.StatusOK, &products)
	if len(products.Products) < 24 {
		t.Fatalf("GET /v1/products: %d products", len(products.Products))
	}
	item := func(sku string, q int) map[string]any {
		return map[string]any{"items": []map[string]any{{"sku": sku, "quantity": q}}}
	}
	var created order
	call(http.MethodPost, "/v1/orders", tok, "gw-1", item("SKU-0001", 1), http.StatusCreated, &created)
	l.track(created.ID)
	final := l.waitTerminal(t, ctx, l.oc, created.ID)
	if final.GetStatus() != confirmed {
		t.Fatalf("gateway order %s: %s %s", created.ID, final.GetStatus(), final.GetCancelReason())
	}
	var short, declined apiError
	call(http.MethodPost, "/v1/orders", tok, "gw-2", item("SKU-LOW", 5), http.StatusConflict, &short)
	l.track(short.OrderID)
	call(http.MethodPost, "/v1/orders", token("cust-broke"), "gw-3", item("SKU-0002", 1), http.StatusPaymentRequired, &declined)
	l.track(declined.OrderID)
	if short.Code != "OUT_OF_STOCK" || declined.Code != "PAYMENT_DECLINED" || short.OrderID == "" || declined.OrderID == "" {
		t.Fatalf("gateway errors: %+v %+v", short, declined)
	}
	t.Logf("gateway: token, %d products, order %s CONFIRMED, out of stock -> 409 (%s), declined -> 402 (%s)",
		len(products.Products), created.ID, short.OrderID, declined.OrderID)

	// raw sends a request with a non-JSON body or reads a non-JSON answer.
	raw := func(method, path, token, contentType, body string, headers ...string) (int, string) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(cctx, method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for _, h := range headers {
			k, v, _ := strings.Cut(h, ": ")
			req.Header.Set(k, v)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body) // an SSE stream must end by itself for this to return
		if err != nil {
			t.Fatalf("%s %s: read: %v", method, path, err)
		}
		return resp.StatusCode, string(data)
	}

	// Idempotent retry through HTTP: the same key returns the same order.
	var again order
	retry := func() {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		r, _ := http.NewRequestWithContext(cctx, http.MethodPost, base+"/v1/orders", strings.NewReader(`{"items":[{"sku":"SKU-0001","quantity":1}]}`))
		r.Header.Set("Authorization", "Bearer "+tok)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Idempotency-Key", "gw-1")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			t.Fatalf("idempotent retry: %s", resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(&again); err != nil {
			t.Fatal(err)
		}
	}
	retry()
	if again.ID != created.ID {
		t.Fatalf("idempotent retry returned order %s, want %s", again.ID, created.ID)
	}

	// Own order readable, someone else's is 404.
	var got order
	call(http.MethodGet, "/v1/orders/"+created.ID, tok, "", nil, http.StatusOK, &got)
	if got.Status != "CONFIRMED" {
		t.Fatalf("GET own order: %+v", got)
	}
	call(http.MethodGet, "/v1/orders/"+created.ID, token("cust-0002"), "", nil, http.StatusNotFound, nil)

	// SSE on a terminal order: the current status, then the stream ends.
	code, body := raw(http.MethodGet, "/v1/orders/"+created.ID+"/events", tok, "", "")
	if code != http.StatusOK || strings.Count(body, "data:") != 1 || !strings.Contains(body, `"CONFIRMED"`) {
		t.Fatalf("SSE: %d %q", code, body)
	}

	// Cancel through HTTP: a cancelled order stays cancelled (idempotent), a confirmed one is refused.
	var cancelled order
	call(http.MethodPost, "/v1/orders/"+declined.OrderID+":cancel", token("cust-broke"), "", nil, http.StatusOK, &cancelled)
	if cancelled.Status != "CANCELLED" {
		t.Fatalf("cancel of a cancelled order: %+v", cancelled)
	}
	if code, body = raw(http.MethodPost, "/v1/orders/"+created.ID+":cancel", tok, "application/json", ""); code < 400 || code >= 500 {
		t.Fatalf("cancel of a confirmed order: %d %s", code, body)
	}

	// Stock import (NDJSON, client streaming behind it): admin only.
	ndjson := "{\"sku\":\"SKU-0005\",\"quantity\":3}\n{\"sku\":\"SKU-0006\",\"quantity\":4}\n"
	if code, _ = raw(http.MethodPost, "/v1/stock:import", tok, "application/x-ndjson", ndjson); code != http.StatusForbidden {
		t.Fatalf("import without admin scope: %d, want 403", code)
	}
	var admin struct{ Token string }
	call(http.MethodPost, "/v1/dev/token", "", "", map[string]any{"customer_id": "cust-0001", "scopes": []string{"admin"}}, http.StatusOK, &admin)
	key := fmt.Sprintf("Idempotency-Key: stack-ndjson-%d", time.Now().UnixNano())
	code, body = raw(http.MethodPost, "/v1/stock:import", admin.Token, "application/x-ndjson", ndjson, key)
	if code != http.StatusOK || !strings.Contains(body, `"lines_applied":2`) {
		t.Fatalf("import: %d %s", code, body)
	}
	// Retried with the same key (say the answer was lost): nothing is added again; the ledger checks it.
	code, body = raw(http.MethodPost, "/v1/stock:import", admin.Token, "application/x-ndjson", ndjson, key)
	if code != http.StatusOK || !strings.Contains(body, `"lines_applied":0`) || !strings.Contains(body, `"lines_skipped":2`) {
		t.Fatalf("import retried with its Idempotency-Key: %d %s", code, body)
	}
	l.imported["SKU-0005"] += 3
	l.imported["SKU-0006"] += 4

	var me struct {
		CustomerID string `json:"customer_id"`
	}
	call(http.MethodGet, "/v1/accounts/me", tok, "", nil, http.StatusOK, &me)
	if me.CustomerID != "cust-0001" {
		t.Fatalf("accounts/me: %+v", me)
	}
	t.Logf("gateway: idempotent retry, own/foreign order, SSE, cancel, NDJSON import (retried once) and accounts/me behave")
}

// mtlsOnly checks that the services speak mTLS only: a plaintext client, and a client whose certificate
// is not from the stack's CA, are refused by the order service; and the policy refuses the payment
// identity on an order method.
func mtlsOnly(t *testing.T, ctx context.Context, info localstack.Info) {
	if info.CertsDir == "" {
		t.Fatal("the stack runs without mTLS")
	}
	order := addrsOf(info, localstack.Order)[0]
	call := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(order, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = orderv1.NewOrderServiceClient(conn).GetOrder(cctx, &orderv1.GetOrderRequest{OrderId: "00000000-0000-0000-0000-000000000000"})
		return err
	}
	if err := call(insecure.NewCredentials()); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client to the order service: got %v, want UNAVAILABLE", err)
	}
	strangerDir := t.TempDir()
	if _, err := mtls.EnsureDir(mtls.DirOptions{Dir: strangerDir, Services: []string{localstack.Gateway}, TTL: time.Hour, CATTL: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	stranger, err := mtls.Load(localstack.CertFiles(strangerDir, localstack.Gateway))
	if err != nil {
		t.Fatal(err)
	}
	strangerCfg := stranger.ClientConfig(localstack.Order)
	strangerCfg.VerifyConnection = nil // trust the server blindly: it is the server that must refuse us
	if err := call(credentials.NewTLS(strangerCfg)); status.Code(err) != codes.Unavailable {
		t.Errorf("client with a foreign CA: got %v, want UNAVAILABLE", err)
	}
	payment, err := mtls.Load(localstack.CertFiles(info.CertsDir, localstack.Payment))
	if err != nil {
		t.Fatal(err)
	}
	if err := call(payment.ClientCredentials(localstack.Order)); status.Code(err) != codes.PermissionDenied {
		t.Errorf("payment identity calling GetOrder: got %v, want PERMISSION_DENIED", err)
	}
	t.Log("order service: plaintext refused, foreign CA refused, payment identity denied GetOrder")
}
