// Package validation rejects malformed requests before they reach a handler: every request message (each
// received message, for client streams) goes through the proto validator (protovalidate, with the
// buf.validate rules of the contracts), and a failure becomes INVALID_ARGUMENT carrying a
// google.rpc.BadRequest that names the offending fields.
package validation

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

// Func validates one message; nil means valid.
type Func func(proto.Message) error

// Violator is implemented by validation errors that can list their field violations.
type Violator interface {
	FieldViolations() []rpcerr.FieldViolation
}

// ToStatus converts a validator error to the status the caller receives: INVALID_ARGUMENT with a
// BadRequest for violations (a Violator, such as the proto validator's *Error), the error itself if it
// already is a gRPC status, INTERNAL for anything else.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if rpcerr.IsStatus(err) {
		return err
	}
	var v Violator
	if errors.As(err, &v) {
		return rpcerr.InvalidArgument(v.FieldViolations()...)
	}
	// Anything else means the validator itself failed (e.g. a malformed rule): a server bug, not the
	// caller's, and its text stays inside.
	return status.Error(codes.Internal, "request validation failed")
}

// UnaryServerInterceptor validates the request of every unary call.
func UnaryServerInterceptor(validate Func) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := Check(validate, req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// Check is what the interceptors do with one received message: validate it if it is a proto message and
// return the status the caller gets (nil when valid). For chains that fold validation into another stage.
func Check(validate Func, req any) error {
	if m, ok := req.(proto.Message); ok {
		if err := validate(m); err != nil {
			return ToStatus(err)
		}
	}
	return nil
}

// StreamServerInterceptor validates every message the handler receives on a stream; an invalid message
// makes RecvMsg return the INVALID_ARGUMENT status, which the handler then returns.
func StreamServerInterceptor(validate Func) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &validatingStream{ServerStream: ss, validate: validate})
	}
}

type validatingStream struct {
	grpc.ServerStream
	validate Func
}

func (s *validatingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return Check(s.validate, m)
}
