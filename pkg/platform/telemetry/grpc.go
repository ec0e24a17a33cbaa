package telemetry

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// ServerStatsHandler traces every RPC the server handles (unary and
// streaming) with this Telemetry's provider and propagator, and counts and
// times it on the registry: grpc.NewServer(grpc.StatsHandler(t.ServerStatsHandler())).
//
// It is a small handler of its own rather than otelgrpc's: spans carry the
// same names ("pkg.Service/Method") and rpc.* attributes, but an unsampled
// call costs no attribute or event work, metric children are cached, and with
// tracing off only the W3C context is passed along (see the platform benchmark).
//
// On the server the caller's trace context and baggage, and the server span, are read from the request
// headers grpc passes with stats.InHeader, right after TagRPC: interceptors and handlers see them in
// their context, another stats handler's TagRPC does not. Method names, span attributes and metric
// children are computed once per method and kept by the handler.
func (t *Telemetry) ServerStatsHandler() stats.Handler { return t.newRPCHandler(false) }

// ClientStatsHandler is ServerStatsHandler for outgoing calls:
// grpc.NewClient(target, grpc.WithStatsHandler(t.ClientStatsHandler())).
// Client metrics count attempts, so a retried call is counted once per try.
func (t *Telemetry) ClientStatsHandler() stats.Handler { return t.newRPCHandler(true) }

func (t *Telemetry) newRPCHandler(client bool) *rpcStatsHandler {
	h := &rpcStatsHandler{
		client:  client,
		tracing: t.sdk != nil,
		tracer:  t.tp.Tracer("github.com/shopmesh/shopmesh/pkg/platform/telemetry"),
		prop:    t.propagator,
		metrics: t.server,
		kind:    []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)},
	}
	if client {
		h.metrics = t.client
		h.kind = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	}
	return h
}

// rpcMetrics are the Prometheus families for one side of a connection. The
// names follow go-grpc-prometheus so existing dashboards work.
type rpcMetrics struct {
	handled *prometheus.CounterVec
	seconds *prometheus.HistogramVec
	retries *prometheus.CounterVec // client side only

	mu       sync.RWMutex
	children map[childKey]*rpcChild // label lookups are the costly part of a metric update
}

type childKey struct {
	kind            rpcKind
	service, method string
	code            codes.Code
}

type rpcChild struct {
	handled prometheus.Counter
	seconds prometheus.Observer
}

func (m *rpcMetrics) child(kind rpcKind, service, method string, code codes.Code) *rpcChild {
	k := childKey{kind: kind, service: service, method: method, code: code}
	m.mu.RLock()
	c, ok := m.children[k]
	m.mu.RUnlock()
	if ok {
		return c
	}
	labels := []string{kindNames[kind], service, method, code.String()}
	c = &rpcChild{handled: m.handled.WithLabelValues(labels...), seconds: m.seconds.WithLabelValues(labels...)}
	m.mu.Lock()
	m.children[k] = c
	m.mu.Unlock()
	return c
}

var rpcLabels = []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}

func newRPCMetrics(reg prometheus.Registerer, side string) (*rpcMetrics, error) {
	m := &rpcMetrics{
		children: map[childKey]*rpcChild{},
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_" + side + "_handled_total",
			Help: "RPCs completed on the " + side + ", by method and status code.",
		}, rpcLabels),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpc_" + side + "_handling_seconds",
			Help:    "Latency of RPCs completed on the " + side + ", by method and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, rpcLabels),
	}
	cs := []prometheus.Collector{m.handled, m.seconds}
	if side == "client" {
		m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shopmesh_client_retries_total",
			Help: "Client RPC attempts after the first (grpc retries, transparent ones included), by method.",
		}, []string{"grpc_service", "grpc_method"})
		cs = append(cs, m.retries)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("telemetry: register grpc %s metrics: %w", side, err)
		}
	}
	return m, nil
}

// rpcStatsHandler traces and measures one side's RPCs.
type rpcStatsHandler struct {
	client  bool
	tracing bool // an SDK provider: spans may be recorded
	tracer  trace.Tracer
	prop    propagation.TextMapPropagator
	metrics *rpcMetrics
	kind    []trace.SpanStartOption

	// methods caches what TagRPC derives from a full method name; at most maxMethods of them, since on
	// the server the name comes from the caller (unknown ones included).
	methods  sync.Map // full method name -> *methodInfo
	nmethods atomic.Int32
	last     atomic.Pointer[methodInfo] // the latest one cached, checked first: many services call one method
}

// maxMethods bounds the method cache: far above the methods a shopmesh server registers.
const maxMethods = 1024

// methodInfo is the per-method part of every call: names, span attributes and metric children.
type methodInfo struct {
	full            string
	service, method string
	name            string               // span name, "pkg.Service/Method"
	attrs           []attribute.KeyValue // span attributes of a recorded span
	// children holds the metric children per call kind and status code, made on first use.
	children [len(kindNames)][maxCode + 1]atomic.Pointer[rpcChild]
}

const maxCode = codes.Unauthenticated // the last code grpc defines; others take the slow path

func newMethodInfo(full string) *methodInfo {
	mi := &methodInfo{full: full, name: strings.TrimPrefix(full, "/")}
	mi.service, mi.method = splitMethod(full)
	mi.attrs = []attribute.KeyValue{attrSystem,
		attribute.String("rpc.service", mi.service), attribute.String("rpc.method", mi.method)}
	return mi
}

func (h *rpcStatsHandler) methodInfo(full string) *methodInfo {
	if mi := h.last.Load(); mi != nil && mi.full == full {
		return mi
	}
	if v, ok := h.methods.Load(full); ok {
		return v.(*methodInfo)
	}
	mi := newMethodInfo(full)
	if h.nmethods.Load() >= maxMethods {
		return mi // not cached: a caller inventing method names must not grow memory
	}
	v, loaded := h.methods.LoadOrStore(full, mi)
	if !loaded {
		h.nmethods.Add(1)
		h.last.Store(mi) // never written on the hot path: no cache-line ping-pong between cores
	}
	return v.(*methodInfo)
}

// child returns the metric child for one finished call of this method.
func (mi *methodInfo) child(m *rpcMetrics, kind rpcKind, service, method string, code codes.Code) *rpcChild {
	if code > maxCode || int(kind) >= len(kindNames) || service != mi.service || method != mi.method {
		return m.child(kind, service, method, code)
	}
	p := &mi.children[kind][code]
	if c := p.Load(); c != nil {
		return c
	}
	c := m.child(kind, service, method, code)
	p.Store(c)
	return c
}

type rpcKey struct{}

// rpcState is one call (one attempt on the client) from TagRPC to End. It is also the context TagRPC
// returns (the parent's values plus itself under rpcKey), which saves a context.WithValue per call.
type rpcState struct {
	context.Context
	info *methodInfo
	kind atomic.Uint32 // rpcKind, set on Begin
	span trace.Span    // nil with tracing off
	// trace holds, on the server, the caller's trace context and baggage and the server span: a context
	// of its own, set from the request headers (stats.InHeader, which grpc delivers after TagRPC and
	// before the handler runs, on the same goroutine) and consulted first by Value. nil when the call
	// carries no trace headers and tracing is off.
	trace context.Context
}

func (s *rpcState) Value(key any) any {
	if _, ok := key.(rpcKey); ok {
		return s
	}
	if s.trace != nil {
		if v := s.trace.Value(key); v != nil {
			return v
		}
	}
	return s.Context.Value(key)
}

func stateOf(ctx context.Context) (*rpcState, bool) {
	if st, ok := ctx.(*rpcState); ok {
		return st, true
	}
	st, ok := ctx.Value(rpcKey{}).(*rpcState)
	return st, ok
}

type rpcKind uint32

const (
	kindUnary rpcKind = iota
	kindClientStream
	kindServerStream
	kindBidi
)

var kindNames = [...]string{"unary", "client_stream", "server_stream", "bidi_stream"}

var (
	attrSystem = attribute.String("rpc.system", "grpc")
)

func (h *rpcStatsHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	mi := h.methodInfo(info.FullMethodName)
	if !h.client {
		// The caller's trace context is read from the headers grpc hands to InHeader (already copied
		// there), rather than looked up again here; see serverHeaders.
		return &rpcState{Context: ctx, info: mi}
	}
	var span trace.Span
	if h.tracing {
		ctx, span = h.tracer.Start(ctx, mi.name, h.kind...)
		if span.IsRecording() {
			span.SetAttributes(mi.attrs...)
		}
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		c := &outgoingCarrier{}
		c.kv = c.buf[:0]
		h.prop.Inject(ctx, c)
		if len(c.kv) > 0 {
			ctx = metadata.AppendToOutgoingContext(ctx, c.kv...)
		}
	}
	return &rpcState{Context: ctx, info: mi, span: span}
}

// serverHeaders continues the caller's trace on the server (also with tracing off, so this process does
// not cut it) and starts the server span. Extract runs only when the caller sent trace headers.
func (h *rpcStatsHandler) serverHeaders(st *rpcState, md metadata.MD) {
	var tc context.Context
	if len(md["traceparent"]) > 0 || len(md["baggage"]) > 0 {
		tc = h.prop.Extract(context.Background(), headerCarrier(md))
	}
	if h.tracing {
		if tc == nil {
			tc = context.Background()
		}
		tc, st.span = h.tracer.Start(tc, st.info.name, h.kind...) //nolint:spancheck // ended by HandleRPC on *stats.End
		if st.span.IsRecording() {
			st.span.SetAttributes(st.info.attrs...)
		}
	}
	st.trace = tc
}

func (h *rpcStatsHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	switch s := s.(type) {
	case *stats.InHeader:
		if h.client {
			return
		}
		if st, ok := stateOf(ctx); ok && st.trace == nil && st.span == nil {
			h.serverHeaders(st, s.Header)
		}
	case *stats.Begin:
		st, ok := stateOf(ctx)
		if !ok {
			return
		}
		st.kind.Store(uint32(rpcKindOf(s.IsClientStream, s.IsServerStream)))
		if s.IsClient() && h.metrics.retries != nil {
			// grpc tags every attempt separately; the call's counter (ClientInterceptors) spans them.
			if n, ok := ctx.Value(attemptsKey{}).(*atomic.Int32); ok && n.Add(1) > 1 {
				h.metrics.retries.WithLabelValues(st.info.service, st.info.method).Inc()
			}
		}
	case *stats.End:
		st, ok := stateOf(ctx)
		if !ok {
			return
		}
		code := status.Code(s.Error)
		service, method := st.info.service, st.info.method
		if !h.client && code == codes.Unimplemented {
			// Unknown methods come from the caller; don't let them mint label values.
			service, method = "unknown", "unknown"
		}
		m := st.info.child(h.metrics, rpcKind(st.kind.Load()), service, method, code)
		m.handled.Inc()
		m.seconds.Observe(s.EndTime.Sub(s.BeginTime).Seconds())
		if st.span == nil {
			return
		}
		if !st.span.IsRecording() {
			st.span.End() // nothing to time: skip building the timestamp option
			return
		}
		st.span.SetAttributes(attribute.Int("rpc.grpc.status_code", int(code)))
		if code != codes.OK && (h.client || serverFault(code)) {
			st.span.SetStatus(otelcodes.Error, status.Convert(s.Error).Message())
		}
		st.span.End(trace.WithTimestamp(s.EndTime))
	}
}

// serverFault reports the codes that mean the server failed (OpenTelemetry's gRPC conventions); the
// others are the caller's problem and leave the server span unset.
func serverFault(c codes.Code) bool {
	switch c {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

func (h *rpcStatsHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (h *rpcStatsHandler) HandleConn(context.Context, stats.ConnStats) {}

// headerCarrier reads trace headers from the request headers grpc passes to InHeader (lower-case keys).
type headerCarrier metadata.MD

func (c headerCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}
func (headerCarrier) Set(string, string) {}
func (headerCarrier) Keys() []string     { return nil }

// outgoingCarrier collects what the propagator injects, for AppendToOutgoingContext; buf holds
// traceparent, tracestate and baggage without growing kv.
type outgoingCarrier struct {
	buf [6]string
	kv  []string
}

func (c *outgoingCarrier) Get(string) string     { return "" }
func (c *outgoingCarrier) Set(key, value string) { c.kv = append(c.kv, key, value) }
func (c *outgoingCarrier) Keys() []string        { return nil }

func rpcKindOf(clientStream, serverStream bool) rpcKind {
	switch {
	case clientStream && serverStream:
		return kindBidi
	case clientStream:
		return kindClientStream
	case serverStream:
		return kindServerStream
	}
	return kindUnary
}

// splitMethod turns "/pkg.Service/Method" into ("pkg.Service", "Method").
func splitMethod(full string) (string, string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndex(full, "/"); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

type attemptsKey struct{}

// ClientInterceptors count the attempts of each call, so the client stats handler can tell retries
// (grpc's retry layer runs below interceptors and above stats handlers). Add them to every client that
// uses ClientStatsHandler; without them retries are not counted.
func (t *Telemetry) ClientInterceptors() (grpc.UnaryClientInterceptor, grpc.StreamClientInterceptor) {
	unary := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(&attemptsCtx{Context: ctx}, method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(&attemptsCtx{Context: ctx}, desc, cc, method, opts...)
	}
	return unary, stream
}

// CountAttempts is what ClientInterceptors' unary interceptor does to a call's context, for a client
// that folds it into an interceptor of its own (one interceptor instead of a chain of two saves grpc's
// closure per chained interceptor per call). Call it once per call, above grpc's retries.
func (t *Telemetry) CountAttempts(ctx context.Context) context.Context {
	return &attemptsCtx{Context: ctx}
}

// attemptsCtx is ctx plus the call's attempt counter under attemptsKey, in one allocation.
type attemptsCtx struct {
	context.Context
	n atomic.Int32
}

func (c *attemptsCtx) Value(key any) any {
	if _, ok := key.(attemptsKey); ok {
		return &c.n
	}
	return c.Context.Value(key)
}
