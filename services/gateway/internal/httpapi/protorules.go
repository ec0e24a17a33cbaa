package httpapi

import (
	"fmt"
	"regexp"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// The OpenAPI document states the constraints of a body field or parameter by naming the proto field
// whose protovalidate rules the backend checks (a `rules:"shopmesh.order.v1.OrderItem.sku"` tag on a
// DTO field, param.rules): the rules are read from the compiled descriptors when the document is built,
// so the document and the server check the same source. A rule with no JSON Schema equivalent fails
// the build of the document (and so the gateway's start and its tests) instead of being left out.

// protoField finds a field of the shopmesh contracts the gateway links by its full name.
func protoField(name string) (protoreflect.FieldDescriptor, error) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, fmt.Errorf("openapi: proto field %s: %w", name, err)
	}
	fd, ok := d.(protoreflect.FieldDescriptor)
	if !ok {
		return nil, fmt.Errorf("openapi: %s is not a proto field", name)
	}
	return fd, nil
}

// protoRules returns the JSON Schema keywords equivalent to the protovalidate rules of a proto field.
func protoRules(name string) (map[string]any, error) {
	fd, err := protoField(name)
	if err != nil {
		return nil, err
	}
	rules, _ := proto.GetExtension(fd.Options(), validate.E_Field).(*validate.FieldRules)
	out := map[string]any{}
	if rules == nil {
		return out, nil
	}
	if err := translateRules(rules, out); err != nil {
		return nil, fmt.Errorf("openapi: rules of %s: %w", name, err)
	}
	return out, nil
}

// protoPattern compiles the pattern rule of a string field (for checks the gateway makes itself).
func protoPattern(name string) (*regexp.Regexp, error) {
	s, err := protoRules(name)
	if err != nil {
		return nil, err
	}
	p, ok := s["pattern"].(string)
	if !ok {
		return nil, fmt.Errorf("openapi: %s has no pattern rule", name)
	}
	return regexp.Compile(p)
}

// translateRules writes the keywords of one FieldRules into out.
func translateRules(rules *validate.FieldRules, out map[string]any) error {
	var err error
	rules.ProtoReflect().Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch f.Name() {
		case "string":
			err = stringRules(v.Message(), out)
		case "int32", "int64", "uint32", "uint64", "sint32", "sint64":
			err = intRules(v.Message(), out)
		case "repeated":
			err = repeatedRules(v.Message(), out)
		default:
			err = fmt.Errorf("rule %q has no JSON Schema equivalent here", f.Name())
		}
		return err == nil
	})
	return err
}

func stringRules(m protoreflect.Message, out map[string]any) error {
	var err error
	m.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch f.Name() {
		case "min_len":
			out["minLength"] = v.Uint()
		case "max_len":
			out["maxLength"] = v.Uint()
		case "len":
			out["minLength"], out["maxLength"] = v.Uint(), v.Uint()
		case "pattern":
			out["pattern"] = v.String()
		case "uuid":
			out["format"] = "uuid"
		case "const":
			out["enum"] = []any{v.String()}
		case "in":
			var vals []any
			for i := range v.List().Len() {
				vals = append(vals, v.List().Get(i).String())
			}
			out["enum"] = vals
		case "example":
		default:
			err = fmt.Errorf("string rule %q has no JSON Schema equivalent here", f.Name())
		}
		return err == nil
	})
	return err
}

func intRules(m protoreflect.Message, out map[string]any) error {
	var err error
	num := func(v protoreflect.Value) any {
		if i, ok := v.Interface().(int32); ok {
			return int64(i)
		}
		return v.Interface()
	}
	m.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch f.Name() {
		case "gte":
			out["minimum"] = num(v)
		case "gt":
			out["minimum"], out["exclusiveMinimum"] = num(v), true
		case "lte":
			out["maximum"] = num(v)
		case "lt":
			out["maximum"], out["exclusiveMaximum"] = num(v), true
		case "const":
			out["enum"] = []any{num(v)}
		case "example":
		default:
			err = fmt.Errorf("integer rule %q has no JSON Schema equivalent here", f.Name())
		}
		return err == nil
	})
	return err
}

func repeatedRules(m protoreflect.Message, out map[string]any) error {
	var err error
	m.Range(func(f protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch f.Name() {
		case "min_items":
			out["minItems"] = v.Uint()
		case "max_items":
			out["maxItems"] = v.Uint()
		case "unique":
			out["uniqueItems"] = v.Bool()
		case "items":
			items := map[string]any{}
			if r, ok := v.Message().Interface().(*validate.FieldRules); ok {
				err = translateRules(r, items)
			}
			out["items"] = items
		default:
			err = fmt.Errorf("repeated rule %q has no JSON Schema equivalent here", f.Name())
		}
		return err == nil
	})
	return err
}
