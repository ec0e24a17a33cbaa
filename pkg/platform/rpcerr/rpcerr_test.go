package rpcerr_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

func TestHTTPStatusTable(t *testing.T) {
	t.Parallel()
	want := map[codes.Code]int{
		codes.OK: 200, codes.Canceled: 499, codes.Unknown: 500, codes.InvalidArgument: 400,
		codes.DeadlineExceeded: 504, codes.NotFound: 404, codes.AlreadyExists: 409,
		codes.PermissionDenied: 403, codes.ResourceExhausted: 429, codes.FailedPrecondition: 400,
		codes.Aborted: 409, codes.OutOfRange: 400, codes.Unimplemented: 501, codes.Internal: 500,
		codes.Unavailable: 503, codes.DataLoss: 500, codes.Unauthenticated: 401,
	}
	for code, status := range want {
		if got := rpcerr.HTTPStatus(code); got != status {
			t.Errorf("HTTPStatus(%v) = %d, want %d", code, got, status)
		}
	}
}

func TestToHTTP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want rpcerr.HTTPError
	}{
		{
			name: "validation with violations",
			err:  rpcerr.InvalidArgument(rpcerr.FieldViolation{Field: "items", Description: "must not be empty"}),
			want: rpcerr.HTTPError{Code: "VALIDATION_ERROR", Message: "invalid items: must not be empty",
				Details: []rpcerr.HTTPDetail{{Field: "items", Issue: "must not be empty"}}, Status: 400},
		},
		{
			name: "plain invalid argument",
			err:  status.Error(codes.InvalidArgument, "bad"),
			want: rpcerr.HTTPError{Code: "VALIDATION_ERROR", Message: "bad", Status: 400},
		},
		{
			name: "reason wins over code name",
			err:  rpcerr.WithReason(codes.FailedPrecondition, "OUT_OF_STOCK", "sku-1 is out of stock", map[string]string{"sku": "sku-1"}),
			want: rpcerr.HTTPError{Code: "OUT_OF_STOCK", Message: "sku-1 is out of stock", Status: 400},
		},
		{
			name: "not found",
			err:  status.Error(codes.NotFound, "order o-1 not found"),
			want: rpcerr.HTTPError{Code: "NOT_FOUND", Message: "order o-1 not found", Status: 404},
		},
		{
			name: "rate limited",
			err:  rpcerr.RetryAfter(codes.ResourceExhausted, rpcerr.ReasonRateLimited, "slow down", time.Second),
			want: rpcerr.HTTPError{Code: "RATE_LIMITED", Message: "slow down", Status: 429},
		},
		{
			name: "resource exhausted without reason",
			err:  status.Error(codes.ResourceExhausted, "full"),
			want: rpcerr.HTTPError{Code: "RATE_LIMITED", Message: "full", Status: 429},
		},
		{
			name: "already exists",
			err:  status.Error(codes.AlreadyExists, "dup"),
			want: rpcerr.HTTPError{Code: "ALREADY_EXISTS", Message: "dup", Status: 409},
		},
		{
			name: "unauthenticated",
			err:  status.Error(codes.Unauthenticated, "who"),
			want: rpcerr.HTTPError{Code: "UNAUTHENTICATED", Message: "who", Status: 401},
		},
		{
			name: "permission denied",
			err:  status.Error(codes.PermissionDenied, "no"),
			want: rpcerr.HTTPError{Code: "FORBIDDEN", Message: "no", Status: 403},
		},
		{
			name: "canceled",
			err:  status.Error(codes.Canceled, "gone"),
			want: rpcerr.HTTPError{Code: "CANCELED", Message: "gone", Status: 499},
		},
		{
			name: "deadline",
			err:  status.Error(codes.DeadlineExceeded, "late"),
			want: rpcerr.HTTPError{Code: "TIMEOUT", Message: "late", Status: 504},
		},
		{
			// A service that passed its dependency's transport error on in its own message.
			name: "unavailable naming an address",
			err: rpcerr.WithReason(codes.Unavailable, "DEPENDENCY_UNAVAILABLE",
				"inventory: connection error: dial tcp 10.0.0.7:50051: connect: connection refused", nil),
			want: rpcerr.HTTPError{Code: "DEPENDENCY_UNAVAILABLE", Message: "service unavailable; retry later", Status: 503},
		},
		{
			name: "ipv6 address and host:port in another code",
			err:  status.Error(codes.FailedPrecondition, "peer [fd00::1]:7000 via inventory-1:50051 refused"),
			want: rpcerr.HTTPError{Code: "FAILED_PRECONDITION", Message: "bad request", Status: 400},
		},
		{
			name: "circuit open",
			err:  rpcerr.WithReason(codes.Unavailable, rpcerr.ReasonCircuitOpen, "payment unavailable", nil),
			want: rpcerr.HTTPError{Code: "CIRCUIT_OPEN", Message: "payment unavailable", Status: 503},
		},
		{
			name: "internal never leaks",
			err:  status.Error(codes.Internal, "pq: relation orders does not exist"),
			want: rpcerr.HTTPError{Code: "INTERNAL", Message: "internal error", Status: 500},
		},
		{
			name: "unknown never leaks even with a reason",
			err:  rpcerr.WithReason(codes.Unknown, "DB_DOWN", "dial tcp 10.0.0.1:5432", nil),
			want: rpcerr.HTTPError{Code: "INTERNAL", Message: "internal error", Status: 500},
		},
		{
			name: "plain go error",
			err:  errors.New("secret stack"),
			want: rpcerr.HTTPError{Code: "INTERNAL", Message: "internal error", Status: 500},
		},
		{
			name: "context deadline",
			err:  fmt.Errorf("call inventory: %w", context.DeadlineExceeded),
			want: rpcerr.HTTPError{Code: "TIMEOUT", Message: "DeadlineExceeded", Status: 504},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := rpcerr.ToHTTP(tt.err)
			gotJSON, _ := json.Marshal(got)
			wantJSON, _ := json.Marshal(tt.want)
			if string(gotJSON) != string(wantJSON) {
				t.Errorf("ToHTTP() = %s, want %s", gotJSON, wantJSON)
			}
		})
	}
}

func TestBodyShape(t *testing.T) {
	t.Parallel()
	body, err := json.Marshal(rpcerr.ToHTTP(rpcerr.InvalidArgument(rpcerr.FieldViolation{Field: "customer_id", Description: "required"})))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"code":"VALIDATION_ERROR","message":"invalid customer_id: required","details":[{"field":"customer_id","issue":"required"}],"status":400}`
	if string(body) != want {
		t.Errorf("body = %s\nwant  %s", body, want)
	}
}

func TestReadersSurviveWrapping(t *testing.T) {
	t.Parallel()
	base := rpcerr.RetryAfter(codes.ResourceExhausted, rpcerr.ReasonOverloaded, "busy", 250*time.Millisecond)
	err := fmt.Errorf("reserve stock: %w", base)
	if got := rpcerr.Code(err); got != codes.ResourceExhausted {
		t.Errorf("Code = %v", got)
	}
	if got := rpcerr.Reason(err); got != rpcerr.ReasonOverloaded {
		t.Errorf("Reason = %q", got)
	}
	if d, ok := rpcerr.RetryDelay(err); !ok || d != 250*time.Millisecond {
		t.Errorf("RetryDelay = %v, %v", d, ok)
	}
	if info := rpcerr.ErrorInfo(err); info.GetDomain() != rpcerr.Domain {
		t.Errorf("Domain = %q", info.GetDomain())
	}
	if rpcerr.Reason(errors.New("x")) != "" || rpcerr.Violations(nil) != nil {
		t.Error("non-status errors carry no details")
	}
}

func TestIsCallerError(t *testing.T) {
	t.Parallel()
	caller := []codes.Code{codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition,
		codes.PermissionDenied, codes.Unauthenticated, codes.Canceled, codes.OutOfRange}
	for _, c := range caller {
		if !rpcerr.IsCallerError(status.Error(c, "x")) {
			t.Errorf("%v should be a caller error", c)
		}
	}
	for _, c := range []codes.Code{codes.Unavailable, codes.Internal, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Unknown} {
		if rpcerr.IsCallerError(status.Error(c, "x")) {
			t.Errorf("%v should not be a caller error", c)
		}
	}
	if !rpcerr.IsCallerError(context.Canceled) {
		t.Error("context.Canceled is the caller's doing")
	}
}

// Every 503 and 429 tells the client when to come back: a client seeing a dependency down must get
// 503 + Retry-After, never a bare 503 (or a 500).
func TestToHTTPRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		status int
		want   time.Duration
	}{
		{"transport unavailable", status.Error(codes.Unavailable, "connection error: dial tcp 10.0.0.7:50051: connect: connection refused"), 503, rpcerr.DefaultRetryAfter},
		{"unavailable with RetryInfo", rpcerr.RetryAfter(codes.Unavailable, "PAYMENT_STORE_UNAVAILABLE", "store down", 3*time.Second), 503, 3 * time.Second},
		{"sub-second RetryInfo", rpcerr.RetryAfter(codes.Unavailable, "X", "x", 200*time.Millisecond), 503, time.Second},
		{"circuit open without RetryInfo", rpcerr.WithReason(codes.Unavailable, rpcerr.ReasonCircuitOpen, "payment unavailable", nil), 503, rpcerr.DefaultRetryAfter},
		{"rate limited", rpcerr.RetryAfter(codes.ResourceExhausted, rpcerr.ReasonRateLimited, "slow down", 2500*time.Millisecond), 429, 2500 * time.Millisecond},
		{"exhausted without RetryInfo", status.Error(codes.ResourceExhausted, "grpc: received message larger than max"), 429, rpcerr.DefaultRetryAfter},
		{"aborted with RetryInfo", rpcerr.RetryAfter(codes.Aborted, "CONCURRENT_UPDATE", "retry", 2*time.Second), 409, 2 * time.Second},
		{"not found", status.Error(codes.NotFound, "nope"), 404, 0},
		{"internal", status.Error(codes.Internal, "boom"), 500, 0},
		{"deadline", context.DeadlineExceeded, 504, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := rpcerr.ToHTTP(tt.err)
			if got.Status != tt.status || got.RetryAfter != tt.want {
				t.Fatalf("ToHTTP(%v) = status %d, RetryAfter %v; want %d, %v", tt.err, got.Status, got.RetryAfter, tt.status, tt.want)
			}
		})
	}
	// The transport's UNAVAILABLE names internal addresses: the body must not.
	if got := rpcerr.ToHTTP(tests[0].err); got.Code != "UNAVAILABLE" || got.Message != "service unavailable; retry later" {
		t.Fatalf("transport UNAVAILABLE body = %+v", got)
	}
}

func TestFromContextSaysNothingOfTheCause(t *testing.T) {
	t.Parallel()
	cause := "failed to connect to `user=shopmesh database=payment`: 10.0.0.9:5432"
	for _, tt := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("begin: %s: %w", cause, context.DeadlineExceeded), codes.DeadlineExceeded},
		{fmt.Errorf("begin: %s: %w", cause, context.Canceled), codes.Canceled},
	} {
		got := rpcerr.FromContext(tt.err)
		if rpcerr.Code(got) != tt.code || strings.Contains(status.Convert(got).Message(), "shopmesh") {
			t.Errorf("FromContext(%v) = %v", tt.err, got)
		}
	}
}
