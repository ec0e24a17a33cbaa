package validation

import (
	"errors"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	validatev1 "github.com/shopmesh/shopmesh/proto/gen/go/validate/v1"
	"github.com/shopmesh/shopmesh/proto/validate"
)

// Proto is the shopmesh proto validator (the shopmesh.validate.v1 rules in the contracts).
func Proto(m proto.Message) error { return validate.Validate(m) }

// NewProto returns Proto with a per-message-type shortcut: a type that carries no shopmesh.validate.v1
// rule, in itself or in any message it can contain, is never walked (most responses' and many requests'
// types). The answer is computed once per descriptor and kept by the returned Func, so every server
// builds its own.
func NewProto() Func {
	var plain sync.Map // protoreflect.MessageDescriptor -> bool (true: no rules anywhere)
	return func(m proto.Message) error {
		if m == nil {
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
		return validate.Validate(m)
	}
}

// hasRules reports whether md, or a message type reachable through its fields (lists and map values
// included), has a field rule or a oneof rule: the only things the proto validator checks.
func hasRules(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]bool) bool {
	if seen[md.FullName()] {
		return false // already being looked at higher up the recursion
	}
	seen[md.FullName()] = true
	oneofs := md.Oneofs()
	for i := range oneofs.Len() {
		if proto.HasExtension(oneofs.Get(i).Options(), validatev1.E_Oneof) {
			return true
		}
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if proto.HasExtension(fd.Options(), validatev1.E_Rules) {
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

// protoViolations understands the error type of the shopmesh proto validator.
func protoViolations(err error) ([]rpcerr.FieldViolation, bool) {
	var verr *validate.Error
	if !errors.As(err, &verr) {
		return nil, false
	}
	out := make([]rpcerr.FieldViolation, len(verr.Violations))
	for i, v := range verr.Violations {
		out[i] = rpcerr.FieldViolation{Field: v.Field, Description: v.Description}
	}
	return out, true
}
