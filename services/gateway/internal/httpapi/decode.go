package httpapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
)

// strictShape checks a decoded JSON value against the body type before encoding/json fills it, for
// what encoding/json lets through but the document forbids: a null where the document does not allow
// one (only optional properties are nullable, null meaning absent; encoding/json would read any null
// as the zero value) and a property whose name matches a field only case-insensitively (encoding/json
// would take "ITEMS" for "items"). It returns the error to send, or nil.
func strictShape(raw []byte, t reflect.Type) *Error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil // a syntax error: left to the decoding into the body type, which names it
	}
	return shapeOf(v, t, "", false)
}

// optionalField says whether a body field may be left out (omitempty or a pointer): the generator
// makes it optional and nullable in the document.
func optionalField(f reflect.StructField) bool {
	_, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
	return strings.Contains(opts, "omitempty") || f.Type.Kind() == reflect.Pointer
}

func shapeOf(v any, t reflect.Type, path string, nullable bool) *Error {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	field := path
	if field == "" {
		field = "body"
	}
	if v == nil && nullable {
		return nil
	}
	if v == nil {
		e := newError(400, codeValidation, "invalid "+field, ErrorDetail{Field: field, Issue: "must not be null"})
		return &e
	}
	switch val := v.(type) {
	case []any:
		if t.Kind() != reflect.Slice {
			return nil // a type error, named by encoding/json
		}
		for _, item := range val {
			if e := shapeOf(item, t.Elem(), path, false); e != nil {
				return e
			}
		}
	case map[string]any:
		if t.Kind() != reflect.Struct {
			return nil
		}
		fields := map[string]reflect.StructField{}
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if f.IsExported() && name != "-" && name != "" {
				fields[name] = f
			}
		}
		for k, item := range val {
			f, ok := fields[k]
			if !ok {
				e := newError(400, codeValidation, "unknown field "+k, ErrorDetail{Field: k, Issue: "unknown field"})
				return &e
			}
			sub := k
			if path != "" {
				sub = path + "." + k
			}
			if e := shapeOf(item, f.Type, sub, optionalField(f)); e != nil {
				return e
			}
		}
	}
	return nil
}
