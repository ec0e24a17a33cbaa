package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

// clientCodes are the gRPC codes a caller causes; the gateway must answer them with a 4xx.
var clientCodes = map[codes.Code]bool{
	codes.Canceled: true, codes.InvalidArgument: true, codes.NotFound: true, codes.AlreadyExists: true,
	codes.PermissionDenied: true, codes.ResourceExhausted: true, codes.FailedPrecondition: true,
	codes.Aborted: true, codes.OutOfRange: true, codes.Unauthenticated: true,
}

// S4 for the gRPC → HTTP error mapping: any status a backend may send (any code, message, ErrorInfo
// reason, BadRequest violations, RetryInfo) becomes a well-formed JSON error: no panic; a caller's
// error is a 4xx, never a 500; a server error never leaks its message.
func FuzzErrorMapping(f *testing.F) {
	f.Add(uint32(codes.InvalidArgument), "bad", "VALIDATION_ERROR", "items[0].sku", "must match", int64(0), false)
	f.Add(uint32(codes.Internal), "pq: password=hunter2", "", "", "", int64(0), false)
	f.Add(uint32(codes.NotFound), "order not found", "ORDER_NOT_FOUND", "", "", int64(0), false)
	f.Add(uint32(codes.Unavailable), "down", "DEPENDENCY_UNAVAILABLE", "", "", int64(1500), false)
	f.Add(uint32(codes.ResourceExhausted), "slow down", "RATE_LIMITED", "", "", int64(-5), false)
	f.Add(uint32(codes.Unavailable), "connection error: dial tcp 10.0.0.7:50051: connect: connection refused", "", "", "", int64(0), false)
	f.Add(uint32(codes.Unavailable), "inventory: dial tcp 10.0.0.7:50051: connection refused", "DEPENDENCY_UNAVAILABLE", "", "", int64(0), false)
	f.Add(uint32(codes.PermissionDenied), "peer at [fd00::7]:50051 refused", "", "", "", int64(0), false)
	f.Add(uint32(99), "\xff\xfe", "\x00", "\xff", "", int64(1<<62), false)
	f.Add(uint32(codes.Unknown), "", "", "", "", int64(0), true)
	s := &Server{log: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, code uint32, msg, reason, field, issue string, retryMillis int64, plain bool) {
		c := codes.Code(code % 20) // the 17 codes and a few unknown ones
		var err error
		switch {
		case plain:
			err, c = errors.New(msg), codes.Unknown // not a status at all
		case field != "" || issue != "":
			err, c = rpcerr.InvalidArgument(rpcerr.FieldViolation{Field: field, Description: issue}), codes.InvalidArgument
		case retryMillis != 0:
			err = rpcerr.RetryAfter(c, reason, msg, time.Duration(retryMillis)*time.Millisecond)
		case reason != "":
			err = rpcerr.WithReason(c, reason, msg, map[string]string{"k": msg})
		default:
			err = status.Error(c, msg)
		}
		if c == codes.OK {
			return // not an error
		}
		w := httptest.NewRecorder()
		s.writeRPCError(w, httptest.NewRequest(http.MethodGet, "/v1/orders/x", nil), err)
		var body rpcerr.HTTPError
		if jerr := json.Unmarshal(w.Body.Bytes(), &body); jerr != nil {
			t.Fatalf("%v: body is not JSON: %q", err, w.Body.Bytes())
		}
		if body.Code == "" || body.Status != w.Code || w.Code < 400 || w.Code > 599 {
			t.Fatalf("%v: status %d, body %+v", err, w.Code, body)
		}
		if w.Code != rpcerr.HTTPStatus(c) {
			t.Fatalf("%v: status %d, want %d", err, w.Code, rpcerr.HTTPStatus(c))
		}
		if clientCodes[c] && w.Code >= 500 {
			t.Fatalf("caller error %v became %d", c, w.Code)
		}
		if w.Code == http.StatusInternalServerError && body.Message != "internal error" {
			t.Fatalf("%v: a 500 says %q", err, body.Message)
		}
		for _, addr := range []string{"10.0.0.7", "fd00::7"} {
			if strings.Contains(msg, addr) && strings.Contains(body.Message, addr) {
				t.Fatalf("%v: the body names the address %s: %q", err, addr, body.Message)
			}
		}
		ra := w.Header().Get("Retry-After")
		if (w.Code == http.StatusServiceUnavailable || w.Code == http.StatusTooManyRequests) && ra == "" {
			t.Fatalf("%v: %d without Retry-After", err, w.Code)
		}
		if ra != "" {
			if n, serr := strconv.Atoi(ra); serr != nil || n < 1 {
				t.Fatalf("Retry-After %q", ra)
			}
		}
	})
}
