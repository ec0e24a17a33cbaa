package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/shopmesh/shopmesh/pkg/platform/rpcerr"
)

// Gateway-local error codes; errors from the backends keep theirs (rpcerr.ToHTTP).
const (
	codeValidation      = rpcerr.ReasonValidation
	codeInvalidJSON     = "INVALID_JSON"
	codeTooLarge        = "PAYLOAD_TOO_LARGE"
	codeUnauthenticated = "UNAUTHENTICATED"
	codeForbidden       = "FORBIDDEN"
	codeNotFound        = "NOT_FOUND"
	codeMethod          = "METHOD_NOT_ALLOWED"
	codeRateLimited     = rpcerr.ReasonRateLimited
	codeInternal        = "INTERNAL"
	codeNotReady        = "NOT_READY"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own DTOs are marshalled; this cannot happen short of a programming error.
		status, b = http.StatusInternalServerError, []byte(`{"code":"INTERNAL","message":"internal error","status":500}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// writeError writes the error body, with the request's id (set by the route wrapper in the
// X-Request-Id header) so that the client can quote it and an operator find the log lines.
func writeError(w http.ResponseWriter, e Error) {
	if e.RequestID == "" {
		e.RequestID = w.Header().Get(requestIDHeader)
	}
	writeJSON(w, e.Status, e)
}

func newError(status int, code, msg string, details ...ErrorDetail) Error {
	return Error{Code: code, Message: msg, Details: details, Status: status}
}

// rpcError turns a backend error into the error body (rpcerr.ToHTTP decides code, status and what may
// be said) and logs server-side failures.
func (s *Server) rpcError(r *http.Request, err error) Error {
	h := rpcerr.ToHTTP(err)
	out := Error{Code: h.Code, Message: h.Message, Status: h.Status}
	for _, d := range h.Details {
		out.Details = append(out.Details, ErrorDetail{Field: d.Field, Issue: d.Issue})
	}
	// The body says only what rpcerr.ToHTTP lets through; the full error goes to the log under the
	// request id the body carries.
	// A backend's own request id (its ErrorInfo metadata, e.g. a refusal's) links to the backend's log.
	backendID := rpcerr.ErrorInfo(err).GetMetadata()["request_id"]
	if h.Status >= 500 || h.Message != rpcerr.Message(err) || backendID != "" {
		s.log.WarnContext(r.Context(), "backend call failed", "path", r.URL.Path, "request_id", requestID(r.Context()),
			"backend_request_id", backendID, "code", rpcerr.Code(err).String(), "err", err)
	}
	return out
}

// writeRPCError writes a backend error. Every 503 and 429 carries Retry-After (the backend's RetryInfo
// delay, else rpcerr.DefaultRetryAfter), so a client knows a dependency outage is worth waiting out.
func (s *Server) writeRPCError(w http.ResponseWriter, r *http.Request, err error) {
	if wait := rpcerr.ToHTTP(err).RetryAfter; wait > 0 {
		w.Header().Set("Retry-After", retryAfter(wait.Seconds()))
	}
	writeError(w, s.rpcError(r, err))
}

// retryAfter renders a delay in whole seconds, at least 1 (Retry-After has no fractions).
func retryAfter(seconds float64) string {
	return strconv.Itoa(max(1, int(math.Ceil(seconds))))
}

// decodeJSON reads exactly one JSON value into dst from a body of at most limit bytes, as strictly as
// the OpenAPI document describes it: unknown fields (also case variants of known ones) and nulls are
// refused, wrong types name the field. optional allows an empty body. The returned error is the body
// to send.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, dst any, optional bool) *Error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	var raw json.RawMessage
	err := dec.Decode(&raw)
	if errors.Is(err, io.EOF) && optional {
		return nil
	}
	if err == nil {
		// Exactly one value: anything but whitespace after it is refused.
		var extra json.RawMessage
		if err2 := dec.Decode(&extra); !errors.Is(err2, io.EOF) {
			var mbe *http.MaxBytesError
			if errors.As(err2, &mbe) {
				err = err2
			} else {
				e := newError(http.StatusBadRequest, codeInvalidJSON, "the body must hold exactly one JSON value",
					ErrorDetail{Field: "body", Issue: "unexpected data after the JSON value"})
				return &e
			}
		}
	}
	if err == nil {
		if e := strictShape(raw, reflect.TypeOf(dst).Elem()); e != nil {
			return e
		}
		strict := json.NewDecoder(bytes.NewReader(raw))
		strict.DisallowUnknownFields()
		err = strict.Decode(dst)
	}
	if err == nil {
		return nil
	}
	e := jsonError(err, limit)
	return &e
}

func jsonError(err error, limit int64) Error {
	var mbe *http.MaxBytesError
	var ute *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &mbe):
		return newError(http.StatusRequestEntityTooLarge, codeTooLarge, fmt.Sprintf("the body is larger than %d bytes", limit))
	case errors.Is(err, io.EOF):
		return newError(http.StatusBadRequest, codeInvalidJSON, "the body must be a JSON object",
			ErrorDetail{Field: "body", Issue: "empty"})
	case errors.As(err, &ute):
		field := ute.Field
		if field == "" {
			field = "body"
		}
		return newError(http.StatusBadRequest, codeValidation, "invalid "+field,
			ErrorDetail{Field: field, Issue: "must be " + jsonKind(ute.Type.Kind().String())})
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
		return newError(http.StatusBadRequest, codeInvalidJSON, "the body is not valid JSON",
			ErrorDetail{Field: "body", Issue: err.Error()})
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return newError(http.StatusBadRequest, codeValidation, "unknown field "+name,
			ErrorDetail{Field: name, Issue: "unknown field"})
	}
	return newError(http.StatusBadRequest, codeInvalidJSON, "the body is not valid JSON", ErrorDetail{Field: "body", Issue: err.Error()})
}

func jsonKind(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"):
		return "an integer in range"
	case kind == "string":
		return "a string"
	case kind == "slice":
		return "an array"
	case kind == "struct", kind == "map":
		return "an object"
	case kind == "bool":
		return "a boolean"
	}
	return "of type " + kind
}

// logError is used where nothing can be sent any more (a stream already started).
func logError(log *slog.Logger, r *http.Request, msg string, err error) {
	log.WarnContext(r.Context(), msg, "path", r.URL.Path, "request_id", requestID(r.Context()), "err", err)
}
