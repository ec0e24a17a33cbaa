package httpapi

import (
	"net/http"
	"reflect"
)

// route is one entry of the route table: what the mux serves and what the OpenAPI document says.
type route struct {
	method, path string
	// muxPath is the ServeMux path when it differs from the documented one (ServeMux cannot match
	// "{id}:cancel", so that route is served by "/v1/orders/{rest}" and split on ':').
	muxPath string
	id      string
	summary string
	access  access
	limited bool
	// backend names the service the route calls (a key of Deps.Backends): while it has no healthy
	// instance the route answers 503 BACKEND_UNAVAILABLE at once.
	backend   string
	params    []param
	body      *body
	responses []response
	handler   http.HandlerFunc
}

type param struct {
	name, in, desc string
	// rules names the proto field whose protovalidate rules the value must pass (stated in the document).
	rules string
}

type body struct {
	contentType string
	typ         reflect.Type
	optional    bool
}

type response struct {
	status      int
	desc        string
	contentType string // "" = application/json
	typ         reflect.Type
}

func (rt route) pattern() string {
	p := rt.path
	if rt.muxPath != "" {
		p = rt.muxPath
	}
	return rt.method + " " + p
}

func typeOf[T any]() reflect.Type { return reflect.TypeFor[T]() }

const (
	ctJSON   = "application/json"
	ctNDJSON = "application/x-ndjson"
	ctSSE    = "text/event-stream"
	ctText   = "text/plain"
)

// table is the whole API. Every route also documents the error body for every status it may return
// (see buildOpenAPI, which adds the shared error responses).
func (s *Server) table() []route {
	orderID := param{name: "id", in: "path", desc: "Order id (lowercase UUID).", rules: "shopmesh.order.v1.GetOrderRequest.order_id"}
	return []route{
		{
			method: http.MethodPost, path: "/v1/orders", id: "createOrder", access: customer, limited: true, backend: "order",
			summary: "Place an order for the token's customer (idempotent with Idempotency-Key).",
			params: []param{{name: "Idempotency-Key", in: "header", rules: "shopmesh.order.v1.CreateOrderRequest.idempotency_key",
				desc: "Repeating a request with the same key returns the original order. Without it the gateway generates a UUID; the key used is returned in the Idempotency-Key response header."}},
			body: &body{contentType: ctJSON, typ: typeOf[CreateOrderRequest]()},
			responses: []response{
				{status: http.StatusCreated, desc: "The order (CONFIRMED, or PENDING while the saga still runs).", typ: typeOf[Order]()},
				{status: http.StatusOK, desc: "The order, on a retry after it was cancelled by the customer.", typ: typeOf[Order]()},
				{status: http.StatusPaymentRequired, desc: "PAYMENT_DECLINED; order_id names the cancelled order.", typ: typeOf[Error]()},
				{status: http.StatusConflict, desc: "OUT_OF_STOCK (also for unknown products) or IDEMPOTENCY_KEY_REUSED.", typ: typeOf[Error]()},
			},
			handler: s.createOrder,
		},
		{
			method: http.MethodGet, path: "/v1/orders/{id}", id: "getOrder", access: customer, limited: true, backend: "order",
			summary: "Read one of the caller's orders.", params: []param{orderID},
			responses: []response{{status: http.StatusOK, desc: "The order.", typ: typeOf[Order]()}},
			handler:   s.getOrder,
		},
		{
			method: http.MethodPost, path: "/v1/orders/{id}:cancel", muxPath: "/v1/orders/{rest}", id: "cancelOrder",
			access: customer, limited: true, backend: "order", summary: "Cancel a PENDING order of the caller (idempotent).",
			params: []param{orderID},
			body:   &body{contentType: ctJSON, typ: typeOf[CancelOrderRequest](), optional: true},
			responses: []response{
				{status: http.StatusOK, desc: "The order, now CANCELLED.", typ: typeOf[Order]()},
			},
			handler: s.orderAction,
		},
		{
			method: http.MethodGet, path: "/v1/orders/{id}/events", id: "watchOrder", access: customer, limited: true, backend: "order",
			summary: "Server-sent events: one `data:` line with the Order JSON per status change, the current " +
				"status first; the stream ends after CONFIRMED or CANCELLED.",
			params: []param{orderID},
			responses: []response{
				{status: http.StatusOK, desc: "The event stream; each data line is an Order.", contentType: ctSSE, typ: typeOf[Order]()},
			},
			handler: s.watchOrder,
		},
		{
			method: http.MethodGet, path: "/v1/products", id: "listProducts", access: public, limited: true, backend: "inventory",
			summary:   "The whole catalogue.",
			responses: []response{{status: http.StatusOK, desc: "Every product, in SKU order.", typ: typeOf[ProductList]()}},
			handler:   s.listProducts,
		},
		{
			method: http.MethodGet, path: "/v1/products/{sku}", id: "getProduct", access: public, limited: true, backend: "inventory",
			summary:   "One product.",
			params:    []param{{name: "sku", in: "path", desc: "Product SKU.", rules: "shopmesh.inventory.v1.GetProductRequest.sku"}},
			responses: []response{{status: http.StatusOK, desc: "The product.", typ: typeOf[Product]()}},
			handler:   s.getProduct,
		},
		{
			method: http.MethodPost, path: "/v1/stock:import", id: "importStock", access: admin, limited: true, backend: "inventory",
			summary: "Bulk-add stock: one ImportLine JSON object per line, streamed to inventory as it is read (idempotent with Idempotency-Key).",
			params: []param{{name: "Idempotency-Key", in: "header", rules: "shopmesh.inventory.v1.ImportStockRequest.import_id", desc: "Id of the import (1 to 128 letters, digits or ._:-); " +
				"repeating the upload with the same key applies only the lines not applied yet. Made up when absent; " +
				"returned in the Idempotency-Key response header and as import_id."}},
			body: &body{contentType: ctNDJSON, typ: typeOf[ImportLine]()},
			responses: []response{
				{status: http.StatusOK, desc: "What was applied and what was rejected.", typ: typeOf[ImportSummary]()},
			},
			handler: s.importStock,
		},
		{
			method: http.MethodGet, path: "/v1/accounts/me", id: "getMyAccount", access: customer, limited: true, backend: "payment",
			summary:   "The caller's payment account.",
			responses: []response{{status: http.StatusOK, desc: "The account.", typ: typeOf[Account]()}},
			handler:   s.myAccount,
		},
		{
			method: http.MethodPost, path: "/v1/dev/token", id: "devToken", access: public, limited: true,
			summary: "Mint a bearer token (dev profile only, on a loopback address: 404 elsewhere and to a request that did not arrive on loopback).",
			body:    &body{contentType: ctJSON, typ: typeOf[DevTokenRequest]()},
			responses: []response{
				{status: http.StatusOK, desc: "The token.", typ: typeOf[Token]()},
			},
			handler: s.devToken,
		},
		{
			method: http.MethodGet, path: "/healthz", id: "healthz", summary: "The process is alive.",
			responses: []response{{status: http.StatusOK, desc: "Alive.", typ: typeOf[Health]()}},
			handler:   s.healthz,
		},
		{
			method: http.MethodGet, path: "/readyz", id: "readyz",
			summary: "The gateway can serve (whatever its backends: a backend without a healthy instance makes its own routes answer 503). Backend detail is on the admin port only.",
			responses: []response{
				{status: http.StatusOK, desc: "Ready.", typ: typeOf[Health]()},
				{status: http.StatusServiceUnavailable, desc: "NOT_READY: shutting down.", typ: typeOf[Error]()},
			},
			handler: s.readyz,
		},
		{
			method: http.MethodGet, path: "/openapi.json", id: "openapi", summary: "This document.",
			responses: []response{{status: http.StatusOK, desc: "OpenAPI 3.0 document."}},
			handler:   s.serveOpenAPI,
		},
	}
}

func (s *Server) serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", ctJSON)
	_, _ = w.Write(s.openapi)
}
