// Package httpapi is the gateway's HTTP/JSON API: routes, authentication, rate limiting, strict JSON,
// the mapping of backend gRPC errors to the error body, the order event stream, the stock import and
// the OpenAPI document generated from the same route table and body types the handlers use.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"

	inventoryv1 "github.com/shopmesh/shopmesh/proto/gen/go/inventory/v1"
	orderv1 "github.com/shopmesh/shopmesh/proto/gen/go/order/v1"
	paymentv1 "github.com/shopmesh/shopmesh/proto/gen/go/payment/v1"
	"github.com/shopmesh/shopmesh/services/gateway/internal/auth"
)

// Settings are the limits and timeouts of the API.
type Settings struct {
	// CallTimeout bounds each backend call; CreateTimeout the CreateOrder call (it runs the saga).
	CallTimeout   time.Duration
	CreateTimeout time.Duration
	// StreamMaxDuration bounds an order event stream; ImportTimeout a stock import.
	StreamMaxDuration time.Duration
	ImportTimeout     time.Duration
	// WriteTimeout is the write deadline given to each event of a stream (the server's own WriteTimeout
	// would otherwise cut long streams).
	WriteTimeout time.Duration
	// Body limits.
	MaxBodyBytes       int64
	MaxImportBytes     int64
	MaxImportLineBytes int
	// Per-client token bucket.
	RateLimitRPS   float64
	RateLimitBurst int
	// TokenTTL is the lifetime of dev tokens; DevTokens enables POST /v1/dev/token (dev profile on a
	// loopback listener; even then a request that did not arrive on a loopback address gets 404).
	TokenTTL  time.Duration
	DevTokens bool
}

// Deps are the backends and tools the API uses.
type Deps struct {
	Orders    orderv1.OrderServiceClient
	Inventory inventoryv1.InventoryServiceClient
	Payment   paymentv1.PaymentServiceClient
	// Backends are the connections of "order", "inventory" and "payment" (the *grpc.ClientConns the
	// clients above use): a route whose backend has no healthy instance answers 503 at once, and
	// /readyz and shopmesh_gateway_backend_up show their state.
	Backends map[string]Backend
	Tokens   *auth.Tokens
	Logger   *slog.Logger
	// Metrics receives the API's collectors; nil means a fresh registry (never the global one).
	// The Go runtime and process collectors are added unless it already has them.
	Metrics *prometheus.Registry
	// TracerProvider gives every request a server span, continuing an incoming traceparent and
	// parenting the backend calls; nil means no spans.
	TracerProvider trace.TracerProvider
	// Now is the rate limiter's clock (tests); nil means time.Now.
	Now func() time.Time
	// Stopping is closed when the server drains (platform.Stopping): the open event streams end, as
	// with Close, so the graceful shutdown does not wait for them; nil means only Close ends them.
	Stopping <-chan struct{}
	// Serving reports whether the instance should receive traffic (the platform's health, false from
	// the start of the drain); /readyz answers 503 when it is false. nil means always.
	Serving func(context.Context) bool
}

// access says who may call a route.
type access int

const (
	public   access = iota
	customer        // a valid bearer token
	admin           // a valid bearer token with the admin scope
)

// Server is the HTTP API. It is an http.Handler; Close (or Deps.Stopping) ends the open event streams
// and makes /readyz answer 503.
type Server struct {
	deps     Deps
	set      Settings
	log      *slog.Logger
	mux      *http.ServeMux
	routes   []route
	methods  []pathMethods // the documented methods of each path (methodTable)
	limiter  *clientLimiter
	closing  context.Context
	close    context.CancelFunc
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	streams  prometheus.Gauge
	tracer   trace.Tracer // nil: no spans
	openapi  []byte
	// customerID is the customer id rule of the order and payment contracts (for dev tokens).
	customerID *regexp.Regexp
}

// New builds the API.
func New(deps Deps, set Settings) (*Server, error) {
	if deps.Orders == nil || deps.Inventory == nil || deps.Payment == nil || deps.Tokens == nil || deps.Logger == nil {
		return nil, errors.New("httpapi: orders, inventory, payment, tokens and logger are required")
	}
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	s := &Server{
		deps: deps, set: set, log: deps.Logger, mux: http.NewServeMux(),
		limiter: newClientLimiter(set.RateLimitRPS, set.RateLimitBurst, deps.Now),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gateway_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_order_event_streams", Help: "Open order event streams.",
		}),
	}
	s.closing, s.close = context.WithCancel(context.Background())
	if deps.Stopping != nil {
		go func() {
			select {
			case <-deps.Stopping:
				s.close()
			case <-s.closing.Done():
			}
		}()
	}
	for _, c := range []prometheus.Collector{
		s.requests, s.duration, s.streams,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := deps.Metrics.Register(c); err != nil {
			// A shared process registry (the platform's) already has the runtime collectors.
			if !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
				return nil, err
			}
		}
	}
	if deps.TracerProvider != nil {
		s.tracer = deps.TracerProvider.Tracer("github.com/shopmesh/shopmesh/services/gateway/internal/httpapi")
	}
	if err := s.registerBackendMetrics(); err != nil {
		return nil, err
	}
	customerID, err := protoPattern(customerIDRule)
	if err != nil {
		return nil, err
	}
	s.customerID = customerID
	s.routes = s.table()
	s.methods = methodTable(s.routes)
	doc, err := buildOpenAPI(s.routes)
	if err != nil {
		return nil, err
	}
	s.openapi = doc
	for _, rt := range s.routes {
		if rt.id == "devToken" && !set.DevTokens {
			continue // not registered outside dev (or off loopback): the mux answers 404
		}
		s.mux.Handle(rt.pattern(), s.wrap(rt))
	}
	return s, nil
}

// Close ends every open event stream and makes /readyz answer 503; it is safe to call more than once.
func (s *Server) Close() { s.close() }

// RouteInfo is one route of the API as documented.
type RouteInfo struct {
	Method, Path string
}

// Routes lists every route the API serves.
func (s *Server) Routes() []RouteInfo {
	out := make([]RouteInfo, len(s.routes))
	for i, rt := range s.routes {
		out[i] = RouteInfo{Method: rt.method, Path: rt.path}
	}
	return out
}

// ServeHTTP routes the request; unknown routes and methods get the JSON error body too.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The document decides which methods a path has (the mux serves "{id}:cancel" under "/v1/orders/{rest}").
	if allow := allowedMethods(s.methods, r.URL.EscapedPath()); allow != nil && !slices.Contains(allow, r.Method) {
		_ = withRequestID(w, r) // the X-Request-Id header of the error
		s.requests.WithLabelValues("unmatched", strconv.Itoa(http.StatusMethodNotAllowed)).Inc()
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, newError(http.StatusMethodNotAllowed, codeMethod, "method not allowed"))
		return
	}
	if h, pattern := s.mux.Handler(r); pattern == "" {
		r = withRequestID(w, r)
		c := &captureWriter{header: http.Header{}}
		h.ServeHTTP(c, r)
		s.requests.WithLabelValues("unmatched", strconv.Itoa(c.status)).Inc()
		if c.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", c.header.Get("Allow"))
			writeError(w, newError(http.StatusMethodNotAllowed, codeMethod, "method not allowed"))
			return
		}
		writeError(w, newError(http.StatusNotFound, codeNotFound, "no such route"))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// captureWriter records what the mux's own 404/405 handlers would have written.
type captureWriter struct {
	header http.Header
	status int
}

func (c *captureWriter) Header() http.Header         { return c.header }
func (c *captureWriter) Write(b []byte) (int, error) { return len(b), nil }
func (c *captureWriter) WriteHeader(code int)        { c.status = code }

// statusWriter records the status for metrics; Unwrap lets http.ResponseController reach the
// connection (flush, deadlines).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type claimsKey struct{}

func claimsFrom(ctx context.Context) (auth.Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(auth.Claims)
	return c, ok
}

// wrap adds, outside in: the request id, metrics, panic recovery, authentication (behind the client
// IP's bucket: see authenticate), the rate limit, the backend check.
func (s *Server) wrap(rt route) http.Handler {
	name := rt.method + " " + rt.path
	h := http.Handler(rt.handler)
	if rt.backend != "" {
		h = s.requireBackend(rt.backend, h)
	}
	if rt.limited {
		h = s.rateLimit(h)
	}
	if rt.access != public {
		h = s.authenticate(rt.access, h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		if s.tracer != nil {
			var span trace.Span
			ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			ctx, span = s.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(
					attribute.String("http.request.method", r.Method),
					attribute.String("http.route", rt.path),
					attribute.String("url.path", r.URL.Path),
				))
			defer func() {
				span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
				if sw.status >= 500 {
					span.SetStatus(codes.Error, http.StatusText(sw.status))
				}
				span.End()
			}()
			r = r.WithContext(ctx)
		}
		r = withRequestID(w, r)
		defer func() {
			if v := recover(); v != nil {
				if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(v)
				}
				s.log.ErrorContext(r.Context(), "handler panicked", "route", name, "request_id", requestID(r.Context()), "panic", v)
				if sw.status == 0 {
					writeError(sw, newError(http.StatusInternalServerError, codeInternal, "internal error"))
				}
			}
			s.requests.WithLabelValues(name, strconv.Itoa(sw.status)).Inc()
			s.duration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(sw, r)
	})
}

// authenticate verifies the bearer token. The rate limit runs before it, so a flood of bad tokens is
// throttled too: every failed authentication takes a token from the client IP's bucket (the one
// unauthenticated requests use), and while that bucket is empty the IP's requests on authenticated
// routes get 429 without their token being looked at. Authenticated requests are then limited per
// customer (rateLimit). The 401 body does not say why a token failed; the log does, under the request id.
func (s *Server) authenticate(level access, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ipKey := "ip:" + remoteIP(r)
		if wait, blocked := s.limiter.exhausted(ipKey); blocked {
			w.Header().Set("Retry-After", retryAfter(wait.Seconds()))
			writeError(w, newError(http.StatusTooManyRequests, codeRateLimited, "too many requests; retry later"))
			return
		}
		fail := func(challenge, reason string, err error) {
			s.limiter.allow(ipKey)
			s.log.InfoContext(r.Context(), "authentication failed", "path", r.URL.Path,
				"request_id", requestID(r.Context()), "reason", reason, "err", err)
			w.Header().Set("WWW-Authenticate", challenge)
			writeError(w, newError(http.StatusUnauthorized, codeUnauthenticated, "a valid bearer token is required"))
		}
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || token == "" {
			fail(`Bearer realm="shopmesh"`, "no bearer token", nil)
			return
		}
		claims, err := s.deps.Tokens.Verify(strings.TrimSpace(token))
		if err != nil {
			fail(`Bearer realm="shopmesh", error="invalid_token"`, "invalid token", err)
			return
		}
		if level == admin && !claims.HasScope(auth.ScopeAdmin) {
			writeError(w, newError(http.StatusForbidden, codeForbidden, "the admin scope is required"))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
	})
}

// rateLimit keys the bucket by customer id when authenticated, else by remote IP.
func (s *Server) rateLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := "ip:" + remoteIP(r)
		if c, ok := claimsFrom(r.Context()); ok {
			key = "customer:" + c.Subject
		}
		if wait, ok := s.limiter.allow(key); !ok {
			w.Header().Set("Retry-After", retryAfter(wait.Seconds()))
			writeError(w, newError(http.StatusTooManyRequests, codeRateLimited, "too many requests; retry later"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// outgoing derives a backend call's context from the request: the deadline and the customer id in
// metadata (x-customer-id) for the services' own authorization.
func (s *Server) outgoing(r *http.Request, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx := r.Context()
	if c, ok := claimsFrom(ctx); ok {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-customer-id", c.Subject)
	}
	return context.WithTimeout(ctx, timeout)
}

// requestIDHeader carries the request id in every response; error bodies repeat it (request_id).
const requestIDHeader = "X-Request-Id"

type requestIDKey struct{}

// newRequestID is the trace id when the request has a span (so the id finds the trace too), else 16
// random bytes. An incoming X-Request-Id is not trusted: the id names our own log lines.
func newRequestID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// withRequestID gives the request its id: in the response header and in the context (requestID).
func withRequestID(w http.ResponseWriter, r *http.Request) *http.Request {
	id := newRequestID(r.Context())
	w.Header().Set(requestIDHeader, id)
	return r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
}

// requestID is the id withRequestID gave the request ("" outside a request).
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}
