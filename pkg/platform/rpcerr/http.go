package rpcerr

import (
	"net/http"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
)

// HTTPDetail is one entry of an HTTP error body's details: a request field and the issue with it.
type HTTPDetail struct {
	Field string `json:"field"`
	Issue string `json:"issue"`
}

// HTTPError is the JSON body the gateway returns for every failed request.
type HTTPError struct {
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Details []HTTPDetail `json:"details,omitempty"`
	Status  int          `json:"status"`
	// RetryAfter is what to send as the Retry-After header (0: none). Every 503 and 429 has one: the
	// RetryInfo delay the status carries (at least a second, the header's unit), else
	// DefaultRetryAfter; other statuses only when they carry a RetryInfo.
	RetryAfter time.Duration `json:"-"`
}

// DefaultRetryAfter is the wait suggested with a 503 or 429 whose status carries no RetryInfo (e.g.
// UNAVAILABLE from the transport: no instance is reachable or healthy).
const DefaultRetryAfter = time.Second

// unavailableMessage replaces the message of an UNAVAILABLE status that no shopmesh code produced (it
// has no ErrorInfo): those come from the transport and name internal addresses.
const unavailableMessage = "service unavailable; retry later"

// internals matches what a client must not read in a message: IPv4 and IPv6 addresses,
// host:port pairs and the wording of Go and gRPC transport errors.
var internals = regexp.MustCompile(`(?:\d{1,3}\.){3}\d{1,3}|\[[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*\]|` +
	`[0-9A-Fa-f]{0,4}::[0-9A-Fa-f]{0,4}|\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){3,7}\b|` +
	`\b[A-Za-z][A-Za-z0-9.-]*:\d{2,5}\b|(?i:dial (?:tcp|udp|unix)|connection refused|connection reset|` +
	`transport: |no such host|i/o timeout|name resolver|last connection error|last resolver error)`)

// namesInternals reports whether msg names an address or quotes a transport error.
func namesInternals(msg string) bool { return internals.MatchString(msg) }

// StatusClientClosedRequest is the non-standard 499 used (as by nginx and grpc-gateway) for CANCELED.
const StatusClientClosedRequest = 499

// genericMessage replaces the message of INTERNAL, UNKNOWN and DATA_LOSS errors so internals never leak.
const genericMessage = "internal error"

// HTTPStatus maps a gRPC code to an HTTP status, following grpc-gateway's HTTPStatusFromCode.
func HTTPStatus(code codes.Code) int {
	switch code {
	case codes.OK:
		return http.StatusOK
	case codes.Canceled:
		return StatusClientClosedRequest
	case codes.Unknown:
		return http.StatusInternalServerError
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.FailedPrecondition:
		// grpc-gateway deliberately maps this to 400, not 412: it is about the system's state, not HTTP preconditions.
		return http.StatusBadRequest
	case codes.Aborted:
		return http.StatusConflict
	case codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Internal:
		return http.StatusInternalServerError
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DataLoss:
		return http.StatusInternalServerError
	}
	return http.StatusInternalServerError
}

// codeName is the body "code" used when the error carries no ErrorInfo reason.
func codeName(code codes.Code) string {
	switch code {
	case codes.Canceled:
		return "CANCELED"
	case codes.InvalidArgument:
		return ReasonValidation
	case codes.DeadlineExceeded:
		return "TIMEOUT"
	case codes.NotFound:
		return "NOT_FOUND"
	case codes.AlreadyExists:
		return "ALREADY_EXISTS"
	case codes.PermissionDenied:
		return "FORBIDDEN"
	case codes.Unauthenticated:
		return "UNAUTHENTICATED"
	case codes.ResourceExhausted:
		return ReasonRateLimited
	case codes.FailedPrecondition:
		return "FAILED_PRECONDITION"
	case codes.Aborted:
		return "CONFLICT"
	case codes.OutOfRange:
		return "OUT_OF_RANGE"
	case codes.Unimplemented:
		return "NOT_IMPLEMENTED"
	case codes.Unavailable:
		return "UNAVAILABLE"
	}
	return "INTERNAL"
}

// ToHTTP maps err to the HTTP error body the gateway returns. The body code is the ErrorInfo reason when
// there is one, else a name derived from the gRPC code. INTERNAL, UNKNOWN and DATA_LOSS (and errors that
// are not gRPC statuses at all) become a generic 500 so that internal details never reach clients;
// UNAVAILABLE without an ErrorInfo (the transport's) keeps its 503 with a generic message. RetryAfter is
// set on every 503 and 429.
func ToHTTP(err error) HTTPError {
	st, ok := fromError(err)
	if !ok {
		code := Code(err) // context errors keep their meaning; anything else is UNKNOWN
		if code == codes.Unknown {
			return HTTPError{Code: "INTERNAL", Message: genericMessage, Status: http.StatusInternalServerError}
		}
		return withRetryAfter(HTTPError{Code: codeName(code), Message: code.String(), Status: HTTPStatus(code)}, err)
	}
	code := st.Code()
	// Codes outside the 17 defined ones (a peer can put any number on the wire) are 500s too.
	if code == codes.Internal || code == codes.Unknown || code == codes.DataLoss || code > codes.Unauthenticated {
		return HTTPError{Code: "INTERNAL", Message: genericMessage, Status: http.StatusInternalServerError}
	}
	out := HTTPError{Code: codeName(code), Message: st.Message(), Status: HTTPStatus(code)}
	if r := Reason(err); r != "" {
		out.Code = r
	} else if code == codes.Unavailable {
		out.Message = unavailableMessage
	}
	if namesInternals(out.Message) {
		// A status message that quotes a transport error (its own, or one a service passed on in its
		// message) names hosts and ports: the code stays, the text becomes generic.
		out.Message = strings.ToLower(http.StatusText(out.Status))
		if code == codes.Unavailable {
			out.Message = unavailableMessage
		}
	}
	for _, v := range Violations(err) {
		out.Details = append(out.Details, HTTPDetail{Field: v.Field, Issue: v.Description})
	}
	return withRetryAfter(out, err)
}

func withRetryAfter(h HTTPError, err error) HTTPError {
	if d, ok := RetryDelay(err); ok {
		h.RetryAfter = max(d, time.Second)
	} else if h.Status == http.StatusServiceUnavailable || h.Status == http.StatusTooManyRequests {
		h.RetryAfter = DefaultRetryAfter
	}
	return h
}
