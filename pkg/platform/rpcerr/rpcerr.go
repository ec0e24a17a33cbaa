// Package rpcerr builds and reads the google.rpc.Status errors shopmesh services return, and maps them
// once more to the HTTP error body the gateway sends, so that every layer agrees on codes and reasons.
package rpcerr

import (
	"context"
	"errors"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the ErrorInfo domain of every error shopmesh produces.
const Domain = "shopmesh"

// Machine-readable reasons produced by the platform itself. Services add their own (e.g. OUT_OF_STOCK).
const (
	ReasonValidation  = "VALIDATION_ERROR"
	ReasonRateLimited = "RATE_LIMITED"
	ReasonOverloaded  = "OVERLOADED"
	ReasonCircuitOpen = "CIRCUIT_OPEN"
	ReasonFault       = "FAULT_INJECTED"
)

// FieldViolation names one invalid request field and says what is wrong with it.
type FieldViolation struct {
	Field       string
	Description string
}

// InvalidArgument returns an INVALID_ARGUMENT error carrying a google.rpc.BadRequest with the violations
// and an ErrorInfo with reason VALIDATION_ERROR.
func InvalidArgument(violations ...FieldViolation) error {
	br := &errdetails.BadRequest{}
	for _, v := range violations {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       v.Field,
			Description: v.Description,
		})
	}
	msg := "request is invalid"
	if len(violations) == 1 {
		msg = "invalid " + violations[0].Field + ": " + violations[0].Description
	}
	return build(codes.InvalidArgument, msg, &errdetails.ErrorInfo{Reason: ReasonValidation, Domain: Domain}, br)
}

// WithReason returns an error with the code and message and an ErrorInfo carrying the reason and metadata.
func WithReason(code codes.Code, reason, msg string, metadata map[string]string) error {
	return build(code, msg, &errdetails.ErrorInfo{Reason: reason, Domain: Domain, Metadata: metadata})
}

// RetryAfter returns an error with the code, message, reason and a google.rpc.RetryInfo telling the
// caller how long to wait before trying again.
func RetryAfter(code codes.Code, reason, msg string, delay time.Duration) error {
	return build(code, msg,
		&errdetails.ErrorInfo{Reason: reason, Domain: Domain},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)})
}

func build(code codes.Code, msg string, details ...protoadapt.MessageV1) error {
	st := status.New(code, msg)
	withDetails, err := st.WithDetails(details...)
	if err != nil {
		// Only fails for code OK or unmarshalable details, neither of which is possible here.
		return st.Err()
	}
	return withDetails.Err()
}

// FromContext returns the status for an error caused by a context ending: CANCELED or
// DEADLINE_EXCEEDED with a fixed message, not err's text (which may name hosts, users and databases).
func FromContext(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	return status.Error(codes.Canceled, "canceled")
}

// Code returns the gRPC code of err: OK for nil, the status code for status errors (also wrapped),
// CANCELED / DEADLINE_EXCEEDED for context errors and UNKNOWN otherwise.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if st, ok := fromError(err); ok {
		return st.Code()
	}
	return status.FromContextError(err).Code()
}

func fromError(err error) (*status.Status, bool) {
	if err == nil {
		return nil, false
	}
	// status.FromError unwraps, so a status wrapped with %w is still found.
	st, ok := status.FromError(err)
	if !ok {
		return nil, false
	}
	return st, true
}

// Message returns the status message of err, or "" when err is no gRPC status.
func Message(err error) string {
	if st, ok := fromError(err); ok {
		return st.Message()
	}
	return ""
}

// Reason returns the ErrorInfo reason carried by err, or "" if there is none.
func Reason(err error) string {
	if info := ErrorInfo(err); info != nil {
		return info.GetReason()
	}
	return ""
}

// ErrorInfo returns the first google.rpc.ErrorInfo carried by err, or nil.
func ErrorInfo(err error) *errdetails.ErrorInfo {
	st, ok := fromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// Violations returns the field violations of the google.rpc.BadRequest carried by err.
func Violations(err error) []FieldViolation {
	st, ok := fromError(err)
	if !ok {
		return nil
	}
	var out []FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				out = append(out, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	return out
}

// RetryDelay returns the google.rpc.RetryInfo delay carried by err and whether there was one.
func RetryDelay(err error) (time.Duration, bool) {
	st, ok := fromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// IsCallerError reports whether err is the caller's fault (a bad, unauthorized or abandoned request),
// which says nothing about the health of the server: circuit breakers and alerts ignore these.
func IsCallerError(err error) bool {
	switch Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition,
		codes.PermissionDenied, codes.Unauthenticated, codes.Canceled, codes.OutOfRange:
		return true
	}
	return false
}

// IsStatus reports whether err is (or wraps) a gRPC status error.
func IsStatus(err error) bool {
	var s interface{ GRPCStatus() *status.Status }
	return errors.As(err, &s)
}
