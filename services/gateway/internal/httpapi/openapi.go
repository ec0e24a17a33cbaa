package httpapi

import (
	"encoding/json"
	"fmt"
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
	paths := map[string]map[string]any{}
	for _, rt := range routes {
		op := map[string]any{"operationId": rt.id, "summary": rt.summary}
		var params []any
		for _, p := range rt.params {
			params = append(params, map[string]any{
				"name": p.name, "in": p.in, "required": p.in == "path", "description": p.desc,
				"schema": map[string]any{"type": "string"},
			})
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if rt.body != nil {
			op["requestBody"] = map[string]any{
				"required": !rt.body.optional,
				"content":  map[string]any{rt.body.contentType: map[string]any{"schema": g.schema(rt.body.typ)}},
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
		media = map[string]any{
			"schema":        map[string]any{"type": "string", "description": "Events, each `data: <JSON>` and a blank line."},
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
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
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
					s["enum"] = vals
				}
			}
			props[name] = s
			if !strings.Contains(opts, "omitempty") && f.Type.Kind() != reflect.Pointer {
				required = append(required, name)
			}
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
