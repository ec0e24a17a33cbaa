package httpapi

import (
	"strings"
	"time"

	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
)

// The request and response bodies of the API. The OpenAPI document is generated from these types by
// reflection (json tags name the properties, omitempty or a pointer makes one optional, an `enum` tag
// lists the allowed values, a `doc` tag describes it, a `rules` tag names the proto field whose
// protovalidate rules — pattern, lengths, ranges, item counts — the backend checks and the document
// states), so the document says what the handlers and the services do.

// CreateOrderRequest is the body of POST /v1/orders.
type CreateOrderRequest struct {
	Items []OrderItem `json:"items" doc:"Lines to order, 1..50; each SKU at most once (x-unique-by), else 400 INVALID_ORDER." rules:"shopmesh.order.v1.CreateOrderRequest.items" uniqueBy:"sku"`
}

// OrderItem is one line the customer asks for.
type OrderItem struct {
	SKU      string `json:"sku" doc:"Product SKU." rules:"shopmesh.order.v1.OrderItem.sku"`
	Quantity int32  `json:"quantity" doc:"Units, 1..1000." rules:"shopmesh.order.v1.OrderItem.quantity"`
}

// CancelOrderRequest is the optional body of POST /v1/orders/{id}:cancel.
type CancelOrderRequest struct {
	Reason string `json:"reason,omitempty" doc:"Free-text note, at most 256 characters." rules:"shopmesh.order.v1.CancelOrderRequest.reason"`
}

// Order is an order as clients see it.
type Order struct {
	ID           string      `json:"id" doc:"Order id (lowercase UUID)."`
	Status       string      `json:"status" enum:"PENDING,CONFIRMED,CANCELLED"`
	CancelReason string      `json:"cancel_reason" enum:",OUT_OF_STOCK,UNKNOWN_PRODUCT,PAYMENT_DECLINED,CUSTOMER_REQUESTED,DEPENDENCY_FAILED" doc:"Why the order was cancelled; empty unless CANCELLED."`
	Items        []OrderLine `json:"items"`
	TotalCents   int64       `json:"total_cents" doc:"Sum of the lines in minor units."`
	Currency     string      `json:"currency" doc:"ISO 4217 code; empty until priced."`
	CreatedAt    time.Time   `json:"created_at"`
}

// OrderLine is one priced line of an order.
type OrderLine struct {
	SKU            string `json:"sku"`
	Quantity       int32  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// Product is one catalogue entry.
type Product struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Currency   string `json:"currency"`
	Available  int64  `json:"available" doc:"Units on hand minus reserved."`
}

// ProductList is the whole catalogue.
type ProductList struct {
	Products []Product `json:"products"`
}

// ImportLine is one line of the NDJSON body of POST /v1/stock:import.
type ImportLine struct {
	SKU        string  `json:"sku" rules:"shopmesh.inventory.v1.ImportStockRequest.sku"`
	Quantity   int64   `json:"quantity" doc:"Units to add, 1..1000000." rules:"shopmesh.inventory.v1.ImportStockRequest.quantity"`
	Name       *string `json:"name,omitempty" doc:"Required for a new SKU." rules:"shopmesh.inventory.v1.ImportStockRequest.name"`
	PriceCents *int64  `json:"price_cents,omitempty" doc:"Required for a new SKU." rules:"shopmesh.inventory.v1.ImportStockRequest.price_cents"`
	Currency   *string `json:"currency,omitempty" rules:"shopmesh.inventory.v1.ImportStockRequest.currency"`
}

// ImportSummary is the result of a stock import.
type ImportSummary struct {
	ImportID      string        `json:"import_id" doc:"The Idempotency-Key the import ran under (made up when the request had none)."`
	LinesReceived int64         `json:"lines_received" doc:"Non-empty lines read."`
	LinesApplied  int64         `json:"lines_applied" doc:"Lines this request applied."`
	LinesSkipped  int64         `json:"lines_skipped" doc:"Lines an earlier request with the same Idempotency-Key had applied; not applied again."`
	LinesRejected int64         `json:"lines_rejected"`
	UnitsAdded    int64         `json:"units_added" doc:"Units this request added."`
	Errors        []ImportError `json:"errors" doc:"The first 100 rejections."`
}

// ImportError says why one import line was rejected.
type ImportError struct {
	Line   int64  `json:"line" doc:"1-based number among the non-empty lines."`
	SKU    string `json:"sku"`
	Reason string `json:"reason"`
}

// Account is the caller's payment account.
type Account struct {
	CustomerID   string `json:"customer_id"`
	BalanceCents int64  `json:"balance_cents"`
	HeldCents    int64  `json:"held_cents" doc:"Authorized but not yet captured."`
	Currency     string `json:"currency"`
}

// DevTokenRequest is the body of POST /v1/dev/token.
type DevTokenRequest struct {
	CustomerID string   `json:"customer_id" doc:"The token's subject, a customer id of the order and payment contracts." rules:"shopmesh.payment.v1.GetAccountRequest.customer_id"`
	Scopes     []string `json:"scopes,omitempty" doc:"Only \"admin\" exists." enum:"admin"`
}

// customerIDRule is the proto field whose rule dev-token subjects must pass: a token for a customer id
// that the services refuse would be useless.
const customerIDRule = "shopmesh.payment.v1.GetAccountRequest.customer_id"

// Token is a signed bearer token.
type Token struct {
	Token string `json:"token"`
}

// Health is the body of /healthz and a successful /readyz.
type Health struct {
	Status string `json:"status" enum:"ok"`
}

// Error is the body of every failed request.
type Error struct {
	Code    string        `json:"code" doc:"Machine-readable reason, e.g. VALIDATION_ERROR, OUT_OF_STOCK."`
	Message string        `json:"message"`
	Details []ErrorDetail `json:"details,omitempty"`
	Status  int           `json:"status" doc:"The HTTP status, repeated."`
	OrderID string        `json:"order_id,omitempty" doc:"The order concerned, for order outcomes (409, 402)."`
	// RequestID is also the X-Request-Id response header; the server's log has the detail under it.
	RequestID string `json:"request_id,omitempty" doc:"The request's id (also the X-Request-Id header): quote it to operators; the log has the detail under it."`
}

// ErrorDetail names one invalid request field.
type ErrorDetail struct {
	Field string `json:"field"`
	Issue string `json:"issue"`
}

// enumName strips the proto enum prefix: ORDER_STATUS_PENDING → PENDING; the zero value becomes "".
func enumName(name, prefix string) string {
	s := strings.TrimPrefix(name, prefix)
	if s == "UNSPECIFIED" {
		return ""
	}
	return s
}

func orderDTO(o *orderv1.Order) Order {
	out := Order{
		ID:           o.GetId(),
		Status:       enumName(o.GetStatus().String(), "ORDER_STATUS_"),
		CancelReason: enumName(o.GetCancelReason().String(), "CANCEL_REASON_"),
		Items:        make([]OrderLine, 0, len(o.GetItems())),
		TotalCents:   o.GetTotalCents(),
		Currency:     o.GetCurrency(),
		CreatedAt:    o.GetCreatedAt().AsTime().UTC(),
	}
	for _, l := range o.GetItems() {
		out.Items = append(out.Items, OrderLine{SKU: l.GetSku(), Quantity: l.GetQuantity(), UnitPriceCents: l.GetUnitPriceCents()})
	}
	return out
}

func productDTO(p *inventoryv1.Product) Product {
	return Product{SKU: p.GetSku(), Name: p.GetName(), PriceCents: p.GetPriceCents(), Currency: p.GetCurrency(), Available: p.GetAvailable()}
}

func accountDTO(a *paymentv1.Account) Account {
	return Account{CustomerID: a.GetCustomerId(), BalanceCents: a.GetBalanceCents(), HeldCents: a.GetHeldCents(), Currency: a.GetCurrency()}
}

func summaryDTO(s *inventoryv1.ImportStockResponse) ImportSummary {
	out := ImportSummary{
		ImportID: s.GetImportId(), LinesReceived: s.GetLinesReceived(), LinesApplied: s.GetLinesApplied(),
		LinesSkipped: s.GetLinesSkipped(), LinesRejected: s.GetLinesRejected(), UnitsAdded: s.GetUnitsAdded(),
		Errors: make([]ImportError, 0, len(s.GetErrors())),
	}
	for _, e := range s.GetErrors() {
		out.Errors = append(out.Errors, ImportError{Line: e.GetLine(), SKU: e.GetSku(), Reason: e.GetReason()})
	}
	return out
}
