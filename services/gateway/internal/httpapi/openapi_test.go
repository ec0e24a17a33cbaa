package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

type doc struct {
	Paths      map[string]map[string]map[string]any `json:"paths"`
	Components struct {
		Schemas         map[string]map[string]any `json:"schemas"`
		SecuritySchemes map[string]any            `json:"securitySchemes"`
	} `json:"components"`
}

func loadDoc(t *testing.T, h *harness) doc {
	t.Helper()
	r := h.do("GET", "/openapi.json", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("openapi.json: %d", r.status)
	}
	var d doc
	if err := json.Unmarshal(r.body, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestOpenAPIDescribesExactlyTheServedRoutes: every route of the table is in the document, nothing else
// is, and every documented operation is actually routed (not the JSON 404 of unknown routes).
func TestOpenAPIDescribesExactlyTheServedRoutes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	d := loadDoc(t, h)
	routes := h.api.Routes()
	documented := 0
	for _, ops := range d.Paths {
		documented += len(ops)
	}
	if documented != len(routes) {
		t.Fatalf("document has %d operations, the API serves %d", documented, len(routes))
	}
	want := []string{
		"POST /v1/orders", "GET /v1/orders/{id}", "POST /v1/orders/{id}:cancel", "GET /v1/orders/{id}/events",
		"GET /v1/products", "GET /v1/products/{sku}", "POST /v1/stock:import", "GET /v1/accounts/me",
		"POST /v1/dev/token", "GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json",
	}
	var got []string
	for _, rt := range routes {
		got = append(got, rt.Method+" "+rt.Path)
		op, ok := d.Paths[rt.Path][strings.ToLower(rt.Method)]
		if !ok {
			t.Errorf("%s %s is served but not documented", rt.Method, rt.Path)
			continue
		}
		if op["responses"].(map[string]any)["default"] == nil || op["security"] == nil || op["operationId"] == "" {
			t.Errorf("%s %s: incomplete operation %v", rt.Method, rt.Path, op)
		}
		path := strings.NewReplacer("{id}", "00000000-0000-4000-8000-000000000000", "{sku}", "SKU-1").Replace(rt.Path)
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
	if d.Components.SecuritySchemes["bearerAuth"] == nil {
		t.Fatal("no bearerAuth security scheme")
	}
}

// TestResponsesMatchTheirSchemas drives the API and checks each real response against the schema the
// document gives for its operation and status.
func TestResponsesMatchTheirSchemas(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	d := loadDoc(t, h)
	tok, admin := h.token("cust-1"), h.token("ops-1", "admin")
	check := func(method, tmpl, path, token, body string, wantStatus int) reply {
		t.Helper()
		var r reply
		if body == "" {
			r = h.do(method, path, token, nil)
		} else {
			r = h.do(method, path, token, strings.NewReader(body))
		}
		if r.status != wantStatus {
			t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, wantStatus, r.body)
		}
		schema := responseSchema(t, d, method, tmpl, r.status)
		var v any
		if err := json.Unmarshal(r.body, &v); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if err := validate(d, schema, v, "$"); err != nil {
			t.Fatalf("%s %s %d: %v\n%s", method, path, r.status, err, r.body)
		}
		return r
	}
	created := check("POST", "/v1/orders", "/v1/orders", tok, `{"items":[{"sku":"SKU-1","quantity":2}]}`, 201)
	id := created.json(t)["id"].(string)
	check("GET", "/v1/orders/{id}", "/v1/orders/"+id, tok, "", 200)
	pending := check("POST", "/v1/orders", "/v1/orders", tok, `{"items":[{"sku":"SLOW-1","quantity":1}]}`, 201).json(t)["id"].(string)
	check("POST", "/v1/orders/{id}:cancel", "/v1/orders/"+pending+":cancel", tok, `{"reason":"no"}`, 200)
	check("POST", "/v1/orders", "/v1/orders", tok, `{"items":[{"sku":"OOS-1","quantity":1}]}`, 409)
	check("POST", "/v1/orders", "/v1/orders", h.token("cust-poor"), `{"items":[{"sku":"SKU-1","quantity":1}]}`, 402)
	check("POST", "/v1/orders", "/v1/orders", tok, `{"items":[{"sku":"SKU-1","quantity":0}]}`, 400)
	check("POST", "/v1/orders", "/v1/orders", "", `{"items":[]}`, 401)
	check("GET", "/v1/orders/{id}", "/v1/orders/"+id, h.token("cust-2"), "", 404)
	check("GET", "/v1/products", "/v1/products", "", "", 200)
	check("GET", "/v1/products/{sku}", "/v1/products/SKU-3", "", "", 200)
	check("GET", "/v1/products/{sku}", "/v1/products/NOPE-1", "", "", 404)
	check("POST", "/v1/stock:import", "/v1/stock:import", admin, `{"sku":"SKU-1","quantity":1}`+"\n"+`{"sku":"SKU-1"}`, 200)
	check("POST", "/v1/stock:import", "/v1/stock:import", tok, `{"sku":"SKU-1","quantity":1}`, 403)
	check("GET", "/v1/accounts/me", "/v1/accounts/me", tok, "", 200)
	check("POST", "/v1/dev/token", "/v1/dev/token", "", `{"customer_id":"cust-3"}`, 200)
	check("GET", "/healthz", "/healthz", "", "", 200)
	check("GET", "/readyz", "/readyz", "", "", 200)

	// The event stream: each data line is an Order.
	r := h.do("GET", "/v1/orders/"+id+"/events", tok, nil)
	media := d.Paths["/v1/orders/{id}/events"]["get"]["responses"].(map[string]any)["200"].(map[string]any)["content"].(map[string]any)["text/event-stream"].(map[string]any)
	n := 0
	for line := range strings.SplitSeq(string(r.body), "\n") {
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			n++
			var v any
			_ = json.Unmarshal([]byte(data), &v)
			if err := validate(d, media["x-data-schema"].(map[string]any), v, "$"); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d events for a confirmed order, want 1", n)
	}
}

func responseSchema(t *testing.T, d doc, method, path string, status int) map[string]any {
	t.Helper()
	op, ok := d.Paths[path][strings.ToLower(method)]
	if !ok {
		t.Fatalf("%s %s not documented", method, path)
	}
	responses := op["responses"].(map[string]any)
	resp, ok := responses[strconv.Itoa(status)]
	if !ok {
		t.Fatalf("%s %s: status %d not documented", method, path, status)
	}
	return resp.(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)["schema"].(map[string]any)
}

// validate is a small JSON Schema check: $ref, type, format date-time, enum, properties, required,
// additionalProperties and items — what the generated document uses.
func validate(d doc, s map[string]any, v any, at string) error {
	if ref, ok := s["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/components/schemas/")
		c, ok := d.Components.Schemas[name]
		if !ok {
			return fmt.Errorf("%s: unknown schema %s", at, ref)
		}
		return validate(d, c, v, at)
	}
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, v) {
		return fmt.Errorf("%s: %v is not one of %v", at, v, enum)
	}
	switch s["type"] {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want an object, got %T", at, v)
		}
		props, _ := s["properties"].(map[string]any)
		for _, r := range asSlice(s["required"]) {
			if _, ok := m[r.(string)]; !ok {
				return fmt.Errorf("%s: missing required %s", at, r)
			}
		}
		for k, fv := range m {
			ps, ok := props[k].(map[string]any)
			if !ok {
				switch ap := s["additionalProperties"].(type) {
				case bool:
					if !ap {
						return fmt.Errorf("%s: property %s is not in the schema", at, k)
					}
					continue
				case map[string]any:
					ps = ap
				default:
					continue
				}
			}
			if err := validate(d, ps, fv, at+"."+k); err != nil {
				return err
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: want an array, got %T", at, v)
		}
		for i, e := range a {
			if err := validate(d, s["items"].(map[string]any), e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: want a string, got %T", at, v)
		}
		if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339, str); err != nil {
				return fmt.Errorf("%s: %v", at, err)
			}
		}
	case "integer":
		f, ok := v.(float64)
		if !ok || f != float64(int64(f)) {
			return fmt.Errorf("%s: want an integer, got %v", at, v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%s: want a boolean, got %T", at, v)
		}
	}
	return nil
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func TestValidatorCatchesDrift(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	d := loadDoc(t, h)
	order := map[string]any{"$ref": "#/components/schemas/Order"}
	bad := []string{
		`{"id":"x","status":"SHIPPED","cancel_reason":"","items":[],"total_cents":1,"currency":"EUR","created_at":"2026-01-01T00:00:00Z"}`,
		`{"id":"x","status":"PENDING","cancel_reason":"","items":[],"total_cents":1,"currency":"EUR"}`,
		`{"id":"x","status":"PENDING","cancel_reason":"","items":[],"total_cents":1,"currency":"EUR","created_at":"2026-01-01T00:00:00Z","extra":1}`,
		`{"id":"x","status":"PENDING","cancel_reason":"","items":[{"sku":"A","quantity":"1","unit_price_cents":1}],"total_cents":1,"currency":"EUR","created_at":"2026-01-01T00:00:00Z"}`,
	}
	for _, b := range bad {
		var v any
		_ = json.Unmarshal([]byte(b), &v)
		if validate(d, order, v, "$") == nil {
			t.Errorf("accepted %s", b)
		}
	}
}
