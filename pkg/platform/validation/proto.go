package validation

import (
	"errors"

	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
	"github.com/shopmesh/shopmesh/proto/validate"
)

// Proto is the shopmesh proto validator (the shopmesh.validate.v1 rules in the contracts).
func Proto(m proto.Message) error { return validate.Validate(m) }

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
