package httpapi

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// buildOpenAPI generates the OpenAPI 3.0 document from the route table and, by reflection, from the
// body types the handlers decode and encode — the same table the mux is built from, so a route or a
// field cannot exist in one and not in the other.
func buildOpenAPI(routes []route) ([]byte, error) {
	g := &schemaGen{components: map[string]any{}}
	errRef := g.schema(reflect.TypeFor[Error]())
	// OpenAPI links from the responses of createOrder that name an order (the order itself, or the
	// cancelled one of a 402/409 in order_id; a 409 IDEMPOTENCY_KEY_REUSED names none) to the
	// operations on /v1/orders/{id}, so stateful testers (schemathesis) follow them.
	orderLinks := func(expr string) map[string]any {
		links := map[string]any{}
		for _, rt := range routes {
			if strings.HasPrefix(rt.path, "/v1/orders/{id}") {
				links[rt.id] = map[string]any{
					"operationId": rt.id, "parameters": map[string]any{"id": expr},
					"description": "The order this response names.",
				}
			}
		}
		return links
	}
	paths := map[string]map[string]any{}
	for _, rt := range routes {
		op := map[string]any{"operationId": rt.id, "summary": rt.summary}
		var params []any
		for _, p := range rt.params {
			schema := map[string]any{"type": "string"}
			if p.rules != "" {
				rules, err := protoRules(p.rules)
				if err != nil {
					return nil, err
				}
				maps.Copy(schema, rules)
			}
			params = append(params, map[string]any{
				"name": p.name, "in": p.in, "required": p.in == "path", "description": p.desc, "schema": schema,
			})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if rt.body != nil {
			media := map[string]any{"schema": g.schema(rt.body.typ)}
			if rt.body.contentType == ctNDJSON {
				// The body is one JSON value per line: documented as the array of the lines' values
				// (what a client serialises line by line). Each line should be an x-line-schema; a line
				// that is not is rejected in the 200 summary, while a body without any line is a 400.
				media = map[string]any{
					"schema": map[string]any{"type": "array", "minItems": 1, "items": map[string]any{
						"description": "One line: an ImportLine (x-line-schema); anything else is rejected in the summary.",
					}, "description": "The lines, each one JSON value; empty lines are skipped."},
					"x-line-schema": g.schema(rt.body.typ),
				}
			}
			op["requestBody"] = map[string]any{
				"required": !rt.body.optional,
				"content":  map[string]any{rt.body.contentType: media},
			}
		}
		idempotent := slices.ContainsFunc(rt.params, func(p param) bool { return p.in == "header" && p.name == headerIdempotencyKey })
		responses := map[string]any{}
		for _, r := range rt.responses {
			resp := g.response(r)
			if idempotent && r.status < 300 {
				resp["headers"] = map[string]any{headerIdempotencyKey: map[string]any{
					"description": "The key the request ran under: its own, or the one the gateway made up.",
					"required":    true, "schema": map[string]any{"type": "string"},
				}}
			}
			if rt.id == "createOrder" {
				switch r.status {
				case http.StatusCreated, http.StatusOK:
					resp["links"] = orderLinks("$response.body#/id")
				case http.StatusPaymentRequired, http.StatusConflict:
					resp["links"] = orderLinks("$response.body#/order_id")
				}
			}
			responses[strconv.Itoa(r.status)] = resp
		}
		errResp := func(status int, desc string) {
			key := strconv.Itoa(status)
			if _, ok := responses[key]; ok {
				return
			}
			resp := map[string]any{"description": desc, "content": map[string]any{ctJSON: map[string]any{"schema": errRef}}}
			if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
				resp["headers"] = map[string]any{"Retry-After": map[string]any{
					"description": "Seconds to wait before retrying.", "schema": map[string]any{"type": "integer"},
				}}
			}
			responses[key] = resp
		}
		if rt.body != nil || len(rt.params) > 0 {
			errResp(http.StatusBadRequest, "VALIDATION_ERROR or INVALID_JSON; details name the fields.")
		}
		if rt.body != nil {
			errResp(http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE.")
		}
		if rt.access != public {
			errResp(http.StatusUnauthorized, "UNAUTHENTICATED: missing or invalid bearer token.")
			op["security"] = []any{map[string]any{"bearerAuth": []any{}}}
		} else {
			op["security"] = []any{}
		}
		if rt.access == admin {
			errResp(http.StatusForbidden, "FORBIDDEN: the admin scope is required.")
		}
		if len(rt.params) > 0 || rt.id == "devToken" {
			errResp(http.StatusNotFound, "Not found (other customers' orders too).")
		}
		if rt.limited {
			errResp(http.StatusTooManyRequests, "RATE_LIMITED.")
		}
		if rt.backend != "" {
			errResp(http.StatusServiceUnavailable, "BACKEND_UNAVAILABLE (the "+rt.backend+" service has no healthy instance) "+
				"or the service's own UNAVAILABLE reason; retry after Retry-After.")
		}
		responses["default"] = map[string]any{"description": "Any other error.", "content": map[string]any{ctJSON: map[string]any{"schema": errRef}}}
		op["responses"] = responses
		if g.err != nil {
			return nil, g.err
		}
		if paths[rt.path] == nil {
			paths[rt.path] = map[string]any{}
		}
		m := strings.ToLower(rt.method)
		if _, dup := paths[rt.path][m]; dup {
			return nil, fmt.Errorf("openapi: %s %s is in the route table twice", rt.method, rt.path)
		}
		paths[rt.path][m] = op
	}
	doc := map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title": "shopmesh gateway", "version": "v1",
			"description": "HTTP/JSON edge of shopmesh. Every error has the Error body.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas": g.components,
			"securitySchemes": map[string]any{
				"bearerAuth": map[string]any{"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
			},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

func (g *schemaGen) response(r response) map[string]any {
	out := map[string]any{"description": r.desc}
	ct := r.contentType
	if ct == "" {
		ct = ctJSON
	}
	var media map[string]any
	switch {
	case ct == ctSSE:
		// In OpenAPI 3.0 the schema of an event stream describes one event (its fields, as
		// schemathesis reads them); what the data line holds is the x-data-schema.
		media = map[string]any{
			"schema": map[string]any{
				"type": "object", "required": []any{"data"}, "additionalProperties": false,
				"description": "One event: `data: <JSON>` and a blank line; the data is the x-data-schema. " +
					"A failure after the stream started is one `event: error` whose data is an Error; then the stream ends.",
				"properties": map[string]any{
					"event": map[string]any{"type": "string", "enum": []any{"message", "error"}, "description": "Absent (message) or error."},
					"data":  map[string]any{"type": "string", "description": "JSON: the x-data-schema (an Error for event: error)."},
				},
			},
			"x-data-schema": g.schema(r.typ),
		}
	case r.typ == nil && ct == ctJSON:
		media = map[string]any{"schema": map[string]any{"type": "object"}}
	case r.typ == nil:
		media = map[string]any{"schema": map[string]any{"type": "string"}}
	default:
		media = map[string]any{"schema": g.schema(r.typ)}
	}
	out["content"] = map[string]any{ct: media}
	return out
}

// schemaGen turns Go types into JSON schemas; named structs become components referenced by $ref.
type schemaGen struct {
	components map[string]any
	err        error // the first rules tag that could not be read
}

// addRules merges the JSON Schema form of a proto field's protovalidate rules into s.
func (g *schemaGen) addRules(s map[string]any, field string) {
	rules, err := protoRules(field)
	if err != nil {
		g.err = cmp.Or(g.err, err)
		return
	}
	if itemRules, ok := rules["items"].(map[string]any); ok {
		items, _ := s["items"].(map[string]any)
		if _, isRef := items["$ref"]; isRef || items == nil {
			g.err = cmp.Or(g.err, fmt.Errorf("openapi: item rules of %s on items that are not scalars", field))
			return
		}
		maps.Copy(items, itemRules)
		delete(rules, "items")
	}
	maps.Copy(s, rules)
}

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[time.Time]() {
		return map[string]any{"type": "string", "format": "date-time"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int32:
		return map[string]any{"type": "integer", "format": "int32"}
	case reflect.Int64:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Int:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Struct:
		ref := map[string]any{"$ref": "#/components/schemas/" + t.Name()}
		if _, ok := g.components[t.Name()]; ok {
			return ref
		}
		g.components[t.Name()] = nil // placeholder against recursion
		props := map[string]any{}
		var required []string
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			s := g.schema(f.Type)
			if _, isRef := s["$ref"]; !isRef {
				if doc := f.Tag.Get("doc"); doc != "" {
					s["description"] = doc
				}
				if enum, ok := f.Tag.Lookup("enum"); ok {
					var vals []any
					for v := range strings.SplitSeq(enum, ",") {
						vals = append(vals, v)
					}
					if items, isArray := s["items"].(map[string]any); isArray {
						items["enum"] = vals
					} else {
						s["enum"] = vals
					}
				}
				if name := f.Tag.Get("rules"); name != "" {
					g.addRules(s, name)
				}
				if key := f.Tag.Get("uniqueBy"); key != "" {
					// No JSON Schema keyword says "unique by a property"; tools that know it read this.
					s["x-unique-by"] = key
				}
			}
			if optionalField(f) {
				// null is the same as leaving it out (decodeJSON); a $ref cannot carry siblings in 3.0.
				if _, isRef := s["$ref"]; !isRef {
					s["nullable"] = true
				}
			} else {
				required = append(required, name)
			}
			props[name] = s
		}
		obj := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if len(required) > 0 {
			obj["required"] = required
		}
		g.components[t.Name()] = obj
		return ref
	}
	panic(fmt.Sprintf("openapi: no schema for %s", t)) // a new DTO field type needs a case above
}

// pathMethods is one documented path template with the methods the document gives it (GET brings
// HEAD, which ServeMux serves with it), sorted.
type pathMethods struct {
	path    string
	methods []string
}

// methodTable lists every documented path once, in the order of the route table, with its methods:
// built once, so that allowedMethods, which runs on every request, does not allocate.
func methodTable(routes []route) []pathMethods {
	var out []pathMethods
	for _, rt := range routes {
		i := slices.IndexFunc(out, func(p pathMethods) bool { return p.path == rt.path })
		if i < 0 {
			out = append(out, pathMethods{path: rt.path})
			i = len(out) - 1
		}
		if m := &out[i].methods; !slices.Contains(*m, rt.method) {
			*m = append(*m, rt.method)
			if rt.method == http.MethodGet {
				*m = append(*m, http.MethodHead)
			}
		}
	}
	for _, p := range out {
		slices.Sort(p.methods)
	}
	return out
}

// allowedMethods are the methods the document gives the path template a request path matches, sorted
// (shared: callers must not modify them); nil when no documented path matches. When several templates
// match ("/v1/orders/{id}" and "/v1/orders/{id}:cancel" both match ".../x:cancel"), the one with the
// most literal characters wins, as a client reading the document would route it.
func allowedMethods(table []pathMethods, path string) []string {
	var best []string
	bestLit := -1
	for _, p := range table {
		if lit, ok := matchTemplate(p.path, path); ok && lit > bestLit {
			best, bestLit = p.methods, lit
		}
	}
	return best
}

// matchTemplate matches a request path against a documented path template whose parameters each
// fill a segment, with literal text before and after ("{id}:cancel"); it returns the number of
// literal characters of the template.
func matchTemplate(template, path string) (int, bool) {
	lit := 0
	for {
		// One segment of each at a time (no strings.Split: this runs for every route on every request).
		t, tRest, tMore := strings.Cut(template, "/")
		p, pRest, pMore := strings.Cut(path, "/")
		open, end := strings.IndexByte(t, '{'), strings.IndexByte(t, '}')
		if open < 0 || end < open {
			if t != p {
				return 0, false
			}
			lit += len(t)
		} else {
			prefix, suffix := t[:open], t[end+1:]
			if len(p) <= len(prefix)+len(suffix) || !strings.HasPrefix(p, prefix) || !strings.HasSuffix(p, suffix) {
				return 0, false
			}
			lit += len(prefix) + len(suffix)
		}
		if tMore != pMore { // not the same number of segments
			return 0, false
		}
		if !tMore {
			return lit, true
		}
		template, path = tRest, pRest
	}
}
