package loadtest

import (
	"slices"
	"time"
)

// Kind says which generator drives a scenario.
type Kind string

// The generators.
const (
	// GRPC scenarios run a ghz config from ghz/<name>.json through ghz's runner package.
	GRPC Kind = "grpc"
	// HTTP scenarios run against the gateway with an open-loop (constant arrival rate) generator.
	HTTP Kind = "http"
)

// Scenario is one bounded load run.
type Scenario struct {
	Name string
	Kind Kind
	// Rate is the arrival rate in requests (journeys) per second; for gRPC scenarios 0 keeps the rate
	// of the ghz config.
	Rate float64
	// Duration is the default length of the run.
	Duration time.Duration
	// Summary is the one-line description printed by -list and in the README.
	Summary string
	// OKCodes are gRPC codes that end a call normally besides OK (a watch held until its deadline).
	OKCodes []string
}

// HTTP scenario names; the k6 scripts use the same names for their scenarios.
const (
	OrderPlacement = "order_placement"
	ReadMix        = "read_mix"
	StockImport    = "stock_import"
)

// Scenarios returns every scenario in the order the default run executes them. The gRPC ones match the
// files in ghz/ (a test checks it).
func Scenarios() []Scenario {
	g := func(name, summary string) Scenario {
		return Scenario{Name: name, Kind: GRPC, Duration: 3 * time.Second, Summary: summary}
	}
	return []Scenario{
		g("inventory-get-product", "InventoryService.GetProduct, random SKU (unary read)"),
		g("inventory-list-products", "InventoryService.ListProducts (unary read, whole catalogue)"),
		g("inventory-reserve", "InventoryService.ReserveStock, 1 unit of a random SKU, fresh order id (unary write)"),
		{Name: "inventory-watch-stock", Kind: GRPC, Duration: 3 * time.Second, OKCodes: []string{"DeadlineExceeded"},
			Summary: "InventoryService.WatchStock on 2 SKUs, each stream held until its 1 s deadline (server streaming)"},
		g("inventory-import-stock", "InventoryService.ImportStock, 3 lines per stream (client streaming)"),
		g("payment-get-account", "PaymentService.GetAccount, random customer (unary read)"),
		g("payment-authorize", "PaymentService.AuthorizePayment, 1.00 EUR, fresh order id (unary write)"),
		g("order-create", "OrderService.CreateOrder, 1 unit, random customer and SKU (the whole saga)"),
		g("order-get", "OrderService.GetOrder of one existing order (the harness creates it)"),
		g("order-watch", "OrderService.WatchOrder of one existing order, stream held 1 s (server streaming)"),
		g("order-checkout", "OrderService.Checkout: set item, set item, refresh (bidi streaming)"),
		{Name: ReadMix, Kind: HTTP, Rate: 200, Duration: 5 * time.Second,
			Summary: "HTTP reads: 60% GET /v1/products/{sku}, 25% GET /v1/products, 15% GET /v1/accounts/me"},
		{Name: OrderPlacement, Kind: HTTP, Rate: 20, Duration: 8 * time.Second,
			Summary: "HTTP journey: token → GET /v1/products → POST /v1/orders → SSE /v1/orders/{id}/events until terminal"},
		{Name: StockImport, Kind: HTTP, Rate: 5, Duration: 4 * time.Second,
			Summary: "HTTP POST /v1/stock:import, 50 NDJSON lines per request (admin token)"},
	}
}

// ScenarioNames returns the names of Scenarios.
func ScenarioNames() []string {
	var out []string
	for _, s := range Scenarios() {
		out = append(out, s.Name)
	}
	return out
}

// Select returns the named scenarios ("" or "all" = every one), in the order of Scenarios.
func Select(names []string) ([]Scenario, []string) {
	if len(names) == 0 || (len(names) == 1 && (names[0] == "" || names[0] == "all")) {
		return Scenarios(), nil
	}
	var out []Scenario
	var unknown []string
	for _, n := range names {
		if !slices.Contains(ScenarioNames(), n) {
			unknown = append(unknown, n)
		}
	}
	for _, s := range Scenarios() {
		if slices.Contains(names, s.Name) {
			out = append(out, s)
		}
	}
	return out, unknown
}
