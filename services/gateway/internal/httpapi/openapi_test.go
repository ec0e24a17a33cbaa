package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// strict asks kin-openapi to also reject unknown schema formats and invalid patterns in the document.
var strict = []openapi3.ValidationOption{openapi3.EnableSchemaFormatValidation(), openapi3.EnableSchemaPatternValidation()}

// spec is the served document as kin-openapi loads it (every $ref resolved) and a router over it.
type spec struct {
	doc    *openapi3.T
	router routers.Router
}

// loadSpec fetches /openapi.json and loads it with kin-openapi; the document must be valid OpenAPI 3.0.
func loadSpec(t *testing.T, h *harness) spec {
	t.Helper()
	r := h.do("GET", "/openapi.json", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("openapi.json: %d", r.status)
	}
	doc, err := openapi3.NewLoader().LoadFromData(r.body)
	if err != nil {
		t.Fatalf("kin-openapi cannot load the document: %v", err)
	}
	if err := doc.Validate(context.Background(), strict...); err != nil {
		t.Fatalf("kin-openapi: the document is not valid OpenAPI: %v", err)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return spec{doc: doc, router: router}
}

// TestOpenAPIDocumentIsValid: kin-openapi loads the served document and validates it as OpenAPI 3.0
// (structure, $refs, parameters, security, schema keywords, formats and patterns).
func TestOpenAPIDocumentIsValid(t *testing.T) {
	t.Parallel()
	s := loadSpec(t, newHarness(t, nil))
	if v := s.doc.OpenAPI; !strings.HasPrefix(v, "3.0.") {
		t.Fatalf("openapi %q, want 3.0.x", v)
	}
	if len(s.doc.Components.Schemas) == 0 {
		t.Fatal("no component schemas")
	}
}

// TestOpenAPIValidationRejectsBrokenDocuments: the served document, broken in one place each time, is
// refused by the same load and validation TestOpenAPIDocumentIsValid passes (so that test is not vacuous).
func TestOpenAPIValidationRejectsBrokenDocuments(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	served := string(h.do("GET", "/openapi.json", "", nil).body)
	breaks := map[string][2]string{
		"dangling $ref":         {`"$ref": "#/components/schemas/Order"`, `"$ref": "#/components/schemas/Nope"`},
		"unknown type":          {`"type": "integer"`, `"type": "int"`},
		"unknown format":        {`"format": "date-time"`, `"format": "datetime"`},
		"undeclared path param": {`"/v1/products/{sku}"`, `"/v1/products/{code}"`},
		"security scheme":       {`"bearerAuth": {`, `"bearer": {`},
		"operationId twice":     {`"operationId": "readyz"`, `"operationId": "healthz"`},
	}
	for name, b := range breaks {
		if !strings.Contains(served, b[0]) {
			t.Fatalf("%s: the document has no %s", name, b[0])
		}
		broken := strings.Replace(served, b[0], b[1], 1)
		doc, err := openapi3.NewLoader().LoadFromData([]byte(broken))
		if err == nil {
			err = doc.Validate(context.Background(), strict...)
		}
		if err == nil {
			t.Errorf("%s: kin-openapi accepts the document", name)
		}
	}
}

// TestOpenAPIDescribesExactlyTheServedRoutes: every route of the table is in the document, nothing else
// is, every documented operation is actually routed (not the JSON 404 of unknown routes), and a request
// to each served path finds its operation through kin-openapi's router.
func TestOpenAPIDescribesExactlyTheServedRoutes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	s := loadSpec(t, h)
	routes := h.api.Routes()
	documented := 0
	for _, item := range s.doc.Paths.Map() {
		documented += len(item.Operations())
	}
	if documented != len(routes) {
		t.Fatalf("document has %d operations, the API serves %d", documented, len(routes))
	}
	want := []string{
		"POST /v1/orders", "GET /v1/orders/{id}", "POST /v1/orders/{id}:cancel", "GET /v1/orders/{id}/events",
		"GET /v1/products", "GET /v1/products/{sku}", "POST /v1/stock:import", "GET /v1/accounts/me",
		"POST /v1/dev/token", "GET /healthz", "GET /readyz", "GET /openapi.json",
	}
	var got []string
	for _, rt := range routes {
		got = append(got, rt.Method+" "+rt.Path)
		item := s.doc.Paths.Value(rt.Path)
		var op *openapi3.Operation
		if item != nil {
			op = item.GetOperation(rt.Method)
		}
		if op == nil {
			t.Errorf("%s %s is served but not documented", rt.Method, rt.Path)
			continue
		}
		if op.Responses.Default() == nil || op.Security == nil || op.OperationID == "" {
			t.Errorf("%s %s: incomplete operation (default response, security, operationId)", rt.Method, rt.Path)
		}
		path := strings.NewReplacer("{id}", "00000000-0000-4000-8000-000000000000", "{sku}", "SKU-1").Replace(rt.Path)
		found, _, err := s.router.FindRoute(httptest.NewRequest(rt.Method, path, nil))
		if err != nil || found.Operation != op {
			t.Errorf("%s %s: kin-openapi routes it to %v (%v), want %s", rt.Method, path, found, err, op.OperationID)
		}
		r := h.do(rt.Method, path, h.token("ops-1", "admin"), strings.NewReader("{}"))
		if r.status == http.StatusNotFound && strings.Contains(string(r.body), "no such route") {
			t.Errorf("%s %s is documented but not routed", rt.Method, rt.Path)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("routes %v, want %v", got, want)
	}
	if s.doc.Components.SecuritySchemes["bearerAuth"] == nil {
		t.Fatal("no bearerAuth security scheme")
	}
}

// bearer is the AuthenticationFunc for request validation: the bearerAuth scheme is met by an
// Authorization: Bearer header (whether the token is good is the server's business, not the document's).
func bearer(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	if in.SecuritySchemeName != "bearerAuth" {
		return fmt.Errorf("unknown security scheme %q", in.SecuritySchemeName)
	}
	if !strings.HasPrefix(in.RequestValidationInput.Request.Header.Get("Authorization"), "Bearer ") {
		return errors.New("no bearer token")
	}
	return nil
}

// exchange is one request and the reply the server gave to it.
type exchange struct {
	method, path, token, contentType string
	body                             []byte
	headers                          []string // more request headers, "Name: value"
	reply                            reply
}

// validate checks the request and the reply against the document with kin-openapi's openapi3filter:
// the request must match its operation (parameters, body, security) and the reply must be a documented
// status of that operation whose body and headers match the schemas. openapi3filter cannot decode
// streams: an application/x-ndjson request body is checked here as the array of its lines' JSON values
// (as the document describes it), and of a text/event-stream reply only the status, headers and
// content type are (TestResponsesMatchTheirSchemas checks its events).
func (s spec) validate(x exchange) (requestErr, responseErr error) {
	req := httptest.NewRequest(x.method, x.path, bytes.NewReader(x.body))
	if x.token != "" {
		req.Header.Set("Authorization", "Bearer "+x.token)
	}
	if len(x.body) > 0 {
		req.Header.Set("Content-Type", x.contentType)
	}
	for _, hv := range x.headers {
		k, v, _ := strings.Cut(hv, ": ")
		req.Header.Set(k, v)
	}
	route, params, err := s.router.FindRoute(req)
	if err != nil {
		return err, err
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:      bearer,
		MultiError:              true,
		IncludeResponseStatus:   true,
		ExcludeRequestBody:      x.contentType == "application/x-ndjson",
		SchemaValidationOptions: []openapi3.SchemaValidationOption{openapi3.EnableFormatValidation()},
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	requestErr = openapi3filter.ValidateRequest(context.Background(), in)
	if requestErr == nil && x.contentType == "application/x-ndjson" {
		requestErr = validateNDJSON(route.Operation, x.body)
	}
	if route.Operation.Responses.Status(x.reply.status) == nil {
		return requestErr, fmt.Errorf("status %d is not documented for %s", x.reply.status, route.Operation.OperationID)
	}
	if ct := x.reply.header.Get("Content-Type"); ct == "text/event-stream" {
		if route.Operation.Responses.Status(x.reply.status).Value.Content.Get(ct) == nil {
			return requestErr, fmt.Errorf("%s: %d is not documented as %s", route.Operation.OperationID, x.reply.status, ct)
		}
		opts.ExcludeResponseBody = true
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: x.reply.status, Header: x.reply.header, Options: opts,
	}
	return requestErr, openapi3filter.ValidateResponse(context.Background(), out.SetBodyBytes(x.reply.body))
}

// TestResponsesMatchTheirSchemas drives the API and checks each real request and response against
// the document with kin-openapi.
func TestResponsesMatchTheirSchemas(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	s := loadSpec(t, h)
	tok, admin := h.token("cust-1"), h.token("ops-1", "admin")
	check := func(method, path, token, contentType, body string, wantStatus int) reply {
		t.Helper()
		x := exchange{method: method, path: path, token: token, contentType: contentType, body: []byte(body)}
		var headers []string
		if body != "" {
			headers = append(headers, "Content-Type: "+contentType)
		}
		x.reply = h.do(method, path, token, bytes.NewReader(x.body), headers...)
		if x.reply.status != wantStatus {
			t.Fatalf("%s %s: status %d, want %d: %s", method, path, x.reply.status, wantStatus, x.reply.body)
		}
		reqErr, respErr := s.validate(x)
		// A request without the token the document demands, and one the server refuses with 400, are
		// requests the document rejects too; every other request here is valid by the document (the
		// server may still refuse it: someone else's order, a missing scope).
		if wantReqErr := wantStatus == http.StatusUnauthorized || wantStatus == http.StatusBadRequest; (reqErr != nil) != wantReqErr {
			t.Fatalf("%s %s: request validation error %v, want one: %v", method, path, reqErr, wantReqErr)
		}
		if respErr != nil {
			t.Fatalf("%s %s %d: the response does not match the document: %v\n%s", method, path, x.reply.status, respErr, x.reply.body)
		}
		return x.reply
	}
	const js, ndjson = "application/json", "application/x-ndjson"
	created := check("POST", "/v1/orders", tok, js, `{"items":[{"sku":"SKU-1","quantity":2}]}`, 201)
	id := created.json(t)["id"].(string)
	check("GET", "/v1/orders/"+id, tok, "", "", 200)
	pending := check("POST", "/v1/orders", tok, js, `{"items":[{"sku":"SLOW-1","quantity":1}]}`, 201).json(t)["id"].(string)
	check("POST", "/v1/orders/"+pending+":cancel", tok, js, `{"reason":"no"}`, 200)
	check("POST", "/v1/orders", tok, js, `{"items":[{"sku":"OOS-1","quantity":1}]}`, 409)
	check("POST", "/v1/orders", h.token("cust-poor"), js, `{"items":[{"sku":"SKU-1","quantity":1}]}`, 402)
	check("POST", "/v1/orders", tok, js, `{"items":[{"sku":"SKU-1","quantity":0}]}`, 400)
	check("POST", "/v1/orders", "", js, `{"items":[]}`, 401)
	check("GET", "/v1/orders/"+id, h.token("cust-2"), "", "", 404)
	check("GET", "/v1/products", "", "", "", 200)
	check("GET", "/v1/products/SKU-3", "", "", "", 200)
	check("GET", "/v1/products/NOPE-1", "", "", "", 404)
	check("POST", "/v1/stock:import", admin, ndjson, `{"sku":"SKU-1","quantity":1}`+"\n"+`{"sku":"SKU-1"}`, 200)
	check("POST", "/v1/stock:import", tok, ndjson, `{"sku":"SKU-1","quantity":1}`, 403)
	check("GET", "/v1/accounts/me", tok, "", "", 200)
	check("POST", "/v1/dev/token", "", js, `{"customer_id":"cust-3"}`, 200)
	check("GET", "/healthz", "", "", "", 200)
	check("GET", "/readyz", "", "", "", 200)

	// The event stream: the reply is documented (status, content type), and each data line is an Order
	// by the schema the document names in x-data-schema.
	events := exchange{method: "GET", path: "/v1/orders/" + id + "/events", token: tok}
	events.reply = h.do(events.method, events.path, tok, nil)
	if _, err := s.validate(events); err != nil {
		t.Fatalf("event stream: %v", err)
	}
	dataSchema := s.eventDataSchema(t, events.path)
	n := 0
	for line := range strings.SplitSeq(string(events.reply.body), "\n") {
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			n++
			var v any
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			if err := dataSchema.VisitJSON(v, openapi3.EnableFormatValidation(), openapi3.MultiErrors()); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d events for a confirmed order, want 1", n)
	}
}

// eventDataSchema resolves the x-data-schema of the event stream's 200 response: a $ref to a component.
func (s spec) eventDataSchema(t *testing.T, path string) *openapi3.Schema {
	t.Helper()
	route, _, err := s.router.FindRoute(httptest.NewRequest(http.MethodGet, path, nil))
	if err != nil {
		t.Fatal(err)
	}
	media := route.Operation.Responses.Status(http.StatusOK).Value.Content.Get("text/event-stream")
	if media == nil {
		t.Fatal("the event stream's 200 has no text/event-stream content")
	}
	raw, err := json.Marshal(media.Extensions["x-data-schema"])
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Ref string `json:"$ref"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	c := s.doc.Components.Schemas[strings.TrimPrefix(ref.Ref, "#/components/schemas/")]
	if c == nil || c.Value == nil {
		t.Fatalf("x-data-schema %s names no component schema", raw)
	}
	return c.Value
}

// TestValidationCatchesDrift: replies that drift from the document (an undocumented enum value, a
// missing required field, an extra field, a wrong type, a bad date-time, a wrong content type, an
// undocumented status, a missing required header) fail the same validation
// TestResponsesMatchTheirSchemas applies.
func TestValidationCatchesDrift(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	s := loadSpec(t, h)
	tok := h.token("cust-1")
	const id = "00000000-0000-4000-8000-000000000001"
	good := `{"id":"x","status":"PENDING","cancel_reason":"","items":[{"sku":"A","quantity":1,"unit_price_cents":1}],"total_cents":1,"currency":"EUR","created_at":"2026-01-01T00:00:00Z"}`
	order := func(status int, contentType, body string) exchange {
		return exchange{method: "GET", path: "/v1/orders/" + id, token: tok,
			reply: reply{status: status, header: http.Header{"Content-Type": {contentType}}, body: []byte(body)}}
	}
	if reqErr, respErr := s.validate(order(200, "application/json", good)); reqErr != nil || respErr != nil {
		t.Fatalf("a good order is refused: %v / %v", reqErr, respErr)
	}
	bad := map[string]exchange{
		"enum":       order(200, "application/json", strings.Replace(good, "PENDING", "SHIPPED", 1)),
		"required":   order(200, "application/json", strings.Replace(good, `,"created_at":"2026-01-01T00:00:00Z"`, "", 1)),
		"extra":      order(200, "application/json", strings.Replace(good, `"id":"x"`, `"id":"x","extra":1`, 1)),
		"type":       order(200, "application/json", strings.Replace(good, `"quantity":1`, `"quantity":"1"`, 1)),
		"date-time":  order(200, "application/json", strings.Replace(good, "2026-01-01T00:00:00Z", "yesterday", 1)),
		"integer":    order(200, "application/json", strings.Replace(good, `"total_cents":1`, `"total_cents":1.5`, 1)),
		"media":      order(200, "text/plain", good),
		"status":     order(418, "application/json", good),
		"error body": order(404, "application/json", `{"code":"NOT_FOUND"}`),
	}
	for name, x := range bad {
		if _, err := s.validate(x); err == nil {
			t.Errorf("%s: accepted %d %s", name, x.reply.status, x.reply.body)
		}
	}

	// A placed order must say which Idempotency-Key it ran under.
	create := exchange{method: "POST", path: "/v1/orders", token: tok, contentType: "application/json",
		body: []byte(`{"items":[{"sku":"SKU-1","quantity":1}]}`),
		reply: reply{status: 201, body: []byte(good),
			header: http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"k-1"}}}}
	if reqErr, respErr := s.validate(create); reqErr != nil || respErr != nil {
		t.Fatalf("a good creation is refused: %v / %v", reqErr, respErr)
	}
	create.reply.header.Del("Idempotency-Key")
	if _, err := s.validate(create); err == nil {
		t.Error("a 201 without the Idempotency-Key header is accepted")
	}
}

// validateNDJSON checks an application/x-ndjson body against the operation's schema for it: the array
// of the values of its non-empty lines (a line that is not JSON counts as a string).
func validateNDJSON(op *openapi3.Operation, body []byte) error {
	media := op.RequestBody.Value.Content.Get("application/x-ndjson")
	if media == nil {
		return errors.New("no application/x-ndjson body documented")
	}
	lines := []any{}
	for line := range strings.SplitSeq(string(body), "\n") {
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		var v any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			v = line
		}
		lines = append(lines, v)
	}
	if len(body) == 0 && op.RequestBody.Value.Required {
		return errors.New("request body required")
	}
	return media.Schema.Value.VisitJSON(lines)
}
