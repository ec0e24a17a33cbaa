package validation

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"sync"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

// Error is what the proto validator returns for a message that breaks its rules: one violation per
// offending field, with its path in proto field names ("customer_id", "items[1].quantity",
// `kids["a"].n`) and what the value must be ("must be at least 1"). Any other error from the validator
// means a rule itself is malformed.
type Error struct {
	Violations []rpcerr.FieldViolation
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	return "invalid message: " + strings.Join(parts, "; ")
}

// FieldViolations implements Violator.
func (e *Error) FieldViolations() []rpcerr.FieldViolation { return e.Violations }

// Proto checks m against the protovalidate rules (buf.validate) declared in its .proto file, with
// protovalidate's shared validator: nil when valid (or nil), *Error listing the violations, or a
// malformed-rule error. Servers use NewProto; Proto is for code that checks a message outside a server
// chain (test doubles, batch input).
func Proto(m proto.Message) error {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil
	}
	return fromProtovalidate(m, protovalidate.Validate(m))
}

// NewProto returns the server chain's validator: a protovalidate.Validator built once for the server,
// which compiles the rules of each message type on first use and keeps them; violations come back as
// *Error. A message type that carries no buf.validate rule, in itself or in any message it can contain
// (most responses' and many requests' types), is not handed to protovalidate at all: that is decided
// once per descriptor and kept by the returned Func, and saves ~0.7 µs and an allocation per message
// (docs/BENCHMARKS.md).
func NewProto() Func {
	v, err := protovalidate.New()
	if err != nil { // only bad options make New fail; there are none
		return func(proto.Message) error { return fmt.Errorf("protovalidate: %w", err) }
	}
	var plain sync.Map // protoreflect.MessageDescriptor -> bool (true: no rules anywhere)
	return func(m proto.Message) error {
		if m == nil || !m.ProtoReflect().IsValid() {
			return nil
		}
		md := m.ProtoReflect().Descriptor()
		free, ok := plain.Load(md)
		if !ok {
			free, _ = plain.LoadOrStore(md, !hasRules(md, map[protoreflect.FullName]bool{}))
		}
		if free.(bool) {
			return nil
		}
		return fromProtovalidate(m, v.Validate(m))
	}
}

// hasRules reports whether md, or a message type reachable through its fields (lists and map values
// included), declares a buf.validate rule: on the message, a oneof or a field.
func hasRules(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if seen[md.FullName()] {
		return false // already being looked at higher up the recursion
	}
	seen[md.FullName()] = true
	if proto.HasExtension(md.Options(), validate.E_Message) {
		return true
	}
	oneofs := md.Oneofs()
	for i := range oneofs.Len() {
		if proto.HasExtension(oneofs.Get(i).Options(), validate.E_Oneof) {
			return true
		}
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if proto.HasExtension(fd.Options(), validate.E_Field) {
			return true
		}
		val := fd
		if fd.IsMap() {
			val = fd.MapValue()
		}
		if sub := val.Message(); sub != nil && hasRules(sub, seen) {
			return true
		}
	}
	return false
}

// fromProtovalidate turns protovalidate's violations into shopmesh's: the same field paths, one
// violation per field (the first rule it breaks, in the order of ruleRank), and shopmesh's short
// descriptions, which the gateway returns to HTTP clients as they are. A rule shopmesh has no
// description for keeps protovalidate's message.
func fromProtovalidate(root proto.Message, err error) error {
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		return err // nil, or a compilation/runtime error: a malformed rule
	}
	md := root.ProtoReflect().Descriptor()
	out := &Error{}
	ranks := make([]int, 0, len(verr.Violations))
	at := map[string]int{} // field path -> index in out.Violations
	for _, pv := range verr.Violations {
		path := protovalidate.FieldPathString(pv.Proto.GetField())
		desc, rank := describe(md, pv)
		v := rpcerr.FieldViolation{Field: path, Description: desc}
		if i, ok := at[path]; ok {
			if rank < ranks[i] {
				out.Violations[i], ranks[i] = v, rank
			}
			continue
		}
		at[path] = len(out.Violations)
		out.Violations, ranks = append(out.Violations, v), append(ranks, rank)
	}
	return out
}

// otherRank ranks a rule shopmesh has no description for: after every rule it describes.
const otherRank = 9

// describe returns shopmesh's description of one violation and its rank among the field's rules: the
// lowest is reported, so that an empty string reads "must not be empty" and not also "must match ...".
func describe(root protoreflect.MessageDescriptor, pv *protovalidate.Violation) (string, int) {
	fallback := pv.Proto.GetMessage()
	field := pv.Proto.GetField().GetElements()
	rd := pv.RuleDescriptor // the broken rule, e.g. buf.validate.StringRules.min_len
	if rd == nil {          // a oneof's required rule has no rule field
		if od := oneofAt(root, field); od != nil && pv.Proto.GetRuleId() == "required" {
			names := make([]string, od.Fields().Len())
			for i := range names {
				names[i] = string(od.Fields().Get(i).Name())
			}
			return "must set one of: " + strings.Join(names, ", "), 0
		}
		return fallback, otherRank
	}
	name, value := rd.Name(), fmt.Sprint(pv.RuleValue.Interface())
	switch rd.ContainingMessage().Name() {
	case "FieldRules":
		if name == "required" {
			return "is required", 0
		}
	case "StringRules":
		switch {
		case name == "min_len" && value == "1":
			return "must not be empty", 1
		case name == "min_len":
			return "must be at least " + value + " characters", 1
		case name == "max_len":
			return "must be at most " + value + " characters", 2
		case name == "pattern":
			return "must match " + value, 3
		}
	case "RepeatedRules":
		switch {
		case name == "min_items" && value == "1":
			return "must not be empty", 1
		case name == "min_items":
			return "must contain at least " + value + " items", 1
		case name == "max_items":
			return "must contain at most " + value + " items", 2
		}
	case "EnumRules":
		fd := fieldAt(root, field) // not pv.FieldDescriptor: it is nil for list elements
		if fd == nil {
			break
		}
		if fd.IsMap() {
			fd = fd.MapValue()
		}
		n := pv.FieldValue.Enum()
		ev := fd.Enum().Values().ByNumber(n)
		switch {
		case name == "not_in" && ev != nil:
			return "must not be " + string(ev.Name()), 1
		case name == "not_in":
			return fmt.Sprintf("must not be %d", n), 1
		case name == "defined_only":
			return "must be a defined " + string(fd.Enum().Name()) + " value", 2
		}
	default: // integer bounds: a range's violation names one bound, the others are its siblings
		rule := pv.Proto.GetRule().GetElements()
		if rules := rulesOf(fieldAt(root, field), rule[:len(rule)-1]); rules != nil {
			if d, r := describeBound(rules, pv.FieldValue); d != "" {
				return d, r
			}
		}
	}
	return fallback, otherRank
}

// describeBound describes a broken bound of an integer field. protovalidate reports a range (gte with
// lte, ...) as one violation of its lower bound, so the value decides which bound it broke.
func describeBound(rules protoreflect.Message, value protoreflect.Value) (string, int) {
	bound := func(n protoreflect.Name) (protoreflect.Value, bool) {
		f := rules.Descriptor().Fields().ByName(n)
		if f == nil || !rules.Has(f) {
			return protoreflect.Value{}, false
		}
		return rules.Get(f), true
	}
	for _, b := range []struct {
		name   protoreflect.Name
		broken func(c int) bool // c compares the value with the bound
		text   string
		rank   int
	}{
		{"gt", func(c int) bool { return c <= 0 }, "must be greater than ", 1},
		{"gte", func(c int) bool { return c < 0 }, "must be at least ", 2},
		{"lte", func(c int) bool { return c > 0 }, "must be at most ", 3},
		{"lt", func(c int) bool { return c >= 0 }, "must be less than ", 3},
	} {
		if v, ok := bound(b.name); ok {
			if c, ok := compareInts(value, v); ok && b.broken(c) {
				return b.text + fmt.Sprint(v.Interface()), b.rank
			}
		}
	}
	return "", otherRank
}

// rulesOf follows a rule path (without its last element, the rule itself) from the field's FieldRules
// to the rules message holding the broken rule, e.g. FieldRules.repeated.items.string → StringRules.
func rulesOf(fd protoreflect.FieldDescriptor, path []*validate.FieldPathElement) protoreflect.Message {
	if fd == nil {
		return nil
	}
	fr, _ := proto.GetExtension(fd.Options(), validate.E_Field).(*validate.FieldRules)
	if fr == nil {
		return nil
	}
	m := fr.ProtoReflect()
	for _, el := range path {
		f := m.Descriptor().Fields().ByNumber(protoreflect.FieldNumber(el.GetFieldNumber()))
		if f == nil || f.Message() == nil || f.IsList() || f.IsMap() {
			return nil
		}
		m = m.Get(f).Message()
	}
	return m
}

// fieldAt resolves a field path to the descriptor of its last field.
func fieldAt(root protoreflect.MessageDescriptor, path []*validate.FieldPathElement) protoreflect.FieldDescriptor {
	md := parentAt(root, path)
	if md == nil {
		return nil
	}
	return md.Fields().ByNumber(protoreflect.FieldNumber(path[len(path)-1].GetFieldNumber()))
}

// oneofAt resolves a field path whose last element names a oneof.
func oneofAt(root protoreflect.MessageDescriptor, path []*validate.FieldPathElement) protoreflect.OneofDescriptor {
	md := parentAt(root, path)
	if md == nil {
		return nil
	}
	return md.Oneofs().ByName(protoreflect.Name(path[len(path)-1].GetFieldName()))
}

// parentAt returns the message type holding the last element of a field path.
func parentAt(root protoreflect.MessageDescriptor, path []*validate.FieldPathElement) protoreflect.MessageDescriptor {
	if len(path) == 0 {
		return nil
	}
	md := root
	for _, el := range path[:len(path)-1] {
		f := md.Fields().ByNumber(protoreflect.FieldNumber(el.GetFieldNumber()))
		if f == nil {
			return nil
		}
		if f.IsMap() {
			f = f.MapValue()
		}
		if md = f.Message(); md == nil {
			return nil
		}
	}
	return md
}

// compareInts orders two integer values of one field type (signed or unsigned); ok is false for any
// other kind (floats, durations, timestamps keep protovalidate's message).
func compareInts(a, b protoreflect.Value) (int, bool) {
	switch x := a.Interface().(type) {
	case int32:
		y, ok := b.Interface().(int32)
		return cmp.Compare(x, y), ok
	case int64:
		y, ok := b.Interface().(int64)
		return cmp.Compare(x, y), ok
	case uint32:
		y, ok := b.Interface().(uint32)
		return cmp.Compare(x, y), ok
	case uint64:
		y, ok := b.Interface().(uint64)
		return cmp.Compare(x, y), ok
	}
	return 0, false
}
