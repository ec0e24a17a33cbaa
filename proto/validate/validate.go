// Package validate enforces the shopmesh.validate.v1 options
// (proto/shopmesh/validate/v1/validate.proto), shopmesh's small stand-in for
// protovalidate. Validate walks a message with protoreflect, recursing into
// nested, repeated and map-valued messages, and reports every violation with
// a path such as "items[1].quantity". Rules and compiled regexps are cached
// per message type, so steady-state validation parses and compiles nothing.
package validate

import (
	"cmp"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	validatev1 "github.com/shopmesh/shopmesh/proto/gen/go/validate/v1"
)

// FieldViolation describes one field that broke a rule: Field is its path in
// proto field names ("customer_id", "items[1].quantity", "set_item.sku") and
// Description says what the value must be ("must be at least 1").
type FieldViolation struct {
	Field       string
	Description string
}

// Error is returned by Validate when a message breaks one or more rules. Any
// other error from Validate means a rule itself is malformed.
type Error struct {
	Violations []FieldViolation
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	return "invalid message: " + strings.Join(parts, "; ")
}

// Validate checks m against its shopmesh.validate.v1 rules and returns nil
// (valid or nil m), *Error listing every violation, or a malformed-rule error.
func Validate(m proto.Message) error {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil
	}
	w := walker{segs: make([]seg, 0, 8)}
	w.message(m.ProtoReflect())
	switch {
	case w.err != nil:
		return w.err
	case len(w.vs) > 0:
		return &Error{Violations: w.vs}
	}
	return nil
}

type (
	// seg is one path step: a field name or `["key"]` (idx < 0), or a list index.
	seg struct {
		name string
		idx  int
	}
	// walker holds the path as a stack, rendered only when a violation is found.
	walker struct {
		segs []seg
		vs   []FieldViolation
		err  error // first malformed rule met
	}
)

func (w *walker) push(name string, idx int) { w.segs = append(w.segs, seg{name, idx}) }
func (w *walker) pop()                      { w.segs = w.segs[:len(w.segs)-1] }

func (w *walker) violate(desc string) {
	var b strings.Builder
	for i, s := range w.segs {
		switch {
		case s.idx >= 0:
			b.WriteString("[" + strconv.Itoa(s.idx) + "]")
		case i > 0 && !strings.HasPrefix(s.name, "["):
			b.WriteString("." + s.name)
		default:
			b.WriteString(s.name)
		}
	}
	w.vs = append(w.vs, FieldViolation{Field: b.String(), Description: desc})
}

type (
	fieldPlan struct {
		fd    protoreflect.FieldDescriptor
		val   protoreflect.FieldDescriptor // fd, or its map value
		name  string
		rules *validatev1.FieldRules // nil when the field is only recursed into
		re    *regexp.Regexp
	}
	oneofPlan struct {
		od   protoreflect.OneofDescriptor
		desc string // e.g. "must set one of: set_item, clear, refresh"
	}
	msgPlan struct {
		fields []fieldPlan // fields with rules, plus message fields to recurse into
		oneofs []oneofPlan // required oneofs
		err    error       // malformed rule (e.g. invalid pattern)
	}
)

// plans caches a *msgPlan per message full name: each pattern compiles once.
var plans sync.Map

func planFor(md protoreflect.MessageDescriptor) *msgPlan {
	p, ok := plans.Load(md.FullName())
	if !ok {
		p, _ = plans.LoadOrStore(md.FullName(), buildPlan(md))
	}
	return p.(*msgPlan)
}

func buildPlan(md protoreflect.MessageDescriptor) *msgPlan {
	p := &msgPlan{}
	var err error
	for i := 0; i < md.Fields().Len(); i++ {
		fd := md.Fields().Get(i)
		fp := fieldPlan{fd: fd, val: fd, name: string(fd.Name())}
		if fd.IsMap() {
			fp.val = fd.MapValue()
		}
		if r, ok := proto.GetExtension(fd.Options(), validatev1.E_Rules).(*validatev1.FieldRules); ok && r != nil {
			fp.rules = r
			if pat := r.GetString_().GetPattern(); pat != "" {
				if fp.re, err = regexp.Compile(pat); err != nil {
					p.err = fmt.Errorf("validate: field %s: invalid pattern %q: %w", fd.FullName(), pat, err)
					return p
				}
			}
		}
		if fp.rules != nil || fp.val.Message() != nil {
			p.fields = append(p.fields, fp)
		}
	}
	for i := 0; i < md.Oneofs().Len(); i++ {
		od := md.Oneofs().Get(i)
		if r, ok := proto.GetExtension(od.Options(), validatev1.E_Oneof).(*validatev1.OneofRules); ok && r.GetRequired() {
			names := make([]string, od.Fields().Len())
			for j := range names {
				names[j] = string(od.Fields().Get(j).Name())
			}
			p.oneofs = append(p.oneofs, oneofPlan{od: od, desc: "must set one of: " + strings.Join(names, ", ")})
		}
	}
	return p
}

func (w *walker) message(m protoreflect.Message) {
	p := planFor(m.Descriptor())
	if p.err != nil {
		w.err = cmp.Or(w.err, p.err)
		return
	}
	for _, op := range p.oneofs {
		if m.WhichOneof(op.od) == nil {
			w.push(string(op.od.Name()), -1)
			w.violate(op.desc)
			w.pop()
		}
	}
	for i := range p.fields {
		fp := &p.fields[i]
		w.push(fp.name, -1)
		w.field(m, fp)
		w.pop()
	}
}

func (w *walker) field(m protoreflect.Message, fp *fieldPlan) {
	fd := fp.fd
	switch {
	case fd.IsList():
		list := m.Get(fd).List()
		if d := checkLen(fp.rules.GetRepeated(), list.Len()); d != "" {
			w.violate(d)
		}
		for j := 0; j < list.Len(); j++ {
			w.push("", j)
			w.value(fp, list.Get(j))
			w.pop()
		}
	case fd.IsMap():
		w.mapValues(fp, m.Get(fd).Map())
	case fd.Message() != nil && !m.Has(fd):
		if fp.rules.GetRequired() {
			w.violate("is required")
		}
	case fd.HasPresence() && !m.Has(fd): // unset optional or oneof member: rules apply only when set
	default:
		w.value(fp, m.Get(fd))
	}
}

// mapValues uses a separate walker so the Range closure cannot heap-allocate w.
func (w *walker) mapValues(fp *fieldPlan, mp protoreflect.Map) {
	sub := &walker{segs: append([]seg(nil), w.segs...)}
	mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		sub.push("["+strconv.Quote(k.String())+"]", -1)
		sub.value(fp, v)
		sub.pop()
		return true
	})
	w.vs, w.err = append(w.vs, sub.vs...), cmp.Or(w.err, sub.err)
}

// value validates one singular value (a field, list element or map value).
func (w *walker) value(fp *fieldPlan, v protoreflect.Value) {
	fd := fp.val
	var d string
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		w.message(v.Message())
	case protoreflect.StringKind:
		d = checkString(fp.rules.GetString_(), fp.re, v.String())
	case protoreflect.EnumKind:
		d = checkEnum(fp.rules.GetEnum(), fd.Enum(), v.Enum())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		d = checkInt(fp.rules.GetInt(), v.Int())
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		d = checkInt(fp.rules.GetInt(), int64(min(v.Uint(), math.MaxInt64)))
	}
	if d != "" {
		w.violate(d)
	}
}

func checkString(r *validatev1.StringRules, re *regexp.Regexp, s string) string {
	switch n := utf8.RuneCountInString(s); {
	case r == nil:
		return ""
	case r.MinLen == 1 && n == 0:
		return "must not be empty"
	case n < int(r.MinLen):
		return fmt.Sprintf("must be at least %d characters", r.MinLen)
	case r.MaxLen > 0 && n > int(r.MaxLen):
		return fmt.Sprintf("must be at most %d characters", r.MaxLen)
	case re != nil && !re.MatchString(s):
		return "must match " + r.Pattern
	}
	return ""
}

func checkInt(r *validatev1.IntRules, n int64) string {
	switch {
	case r == nil:
		return ""
	case r.Gt != nil && n <= *r.Gt:
		return fmt.Sprintf("must be greater than %d", *r.Gt)
	case r.Gte != nil && n < *r.Gte:
		return fmt.Sprintf("must be at least %d", *r.Gte)
	case r.Lte != nil && n > *r.Lte:
		return fmt.Sprintf("must be at most %d", *r.Lte)
	}
	return ""
}

func checkEnum(r *validatev1.EnumRules, ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	v := ed.Values().ByNumber(n)
	switch {
	case r == nil:
		return ""
	case slices.Contains(r.NotIn, int32(n)) && v != nil:
		return "must not be " + string(v.Name())
	case slices.Contains(r.NotIn, int32(n)):
		return fmt.Sprintf("must not be %d", n)
	case r.DefinedOnly && v == nil:
		return "must be a defined " + string(ed.Name()) + " value"
	}
	return ""
}

func checkLen(r *validatev1.RepeatedRules, n int) string {
	switch {
	case r == nil:
		return ""
	case r.MinItems == 1 && n == 0:
		return "must not be empty"
	case n < int(r.MinItems):
		return fmt.Sprintf("must contain at least %d items", r.MinItems)
	case r.MaxItems > 0 && n > int(r.MaxItems):
		return fmt.Sprintf("must contain at most %d items", r.MaxItems)
	}
	return ""
}
