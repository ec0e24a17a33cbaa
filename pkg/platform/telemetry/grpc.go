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
}

type rpcKey struct{}

// rpcState is one call (one attempt on the client) from TagRPC to End.
type rpcState struct {
	service, method string
	kind            atomic.Uint32 // rpcKind, set on Begin
	span            trace.Span    // nil with tracing off
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
	st := &rpcState{}
	st.service, st.method = splitMethod(info.FullMethodName)
	name := strings.TrimPrefix(info.FullMethodName, "/")
	if !h.client {
		// Continue the caller's trace (also with tracing off, so this process does not cut it).
		ctx = h.prop.Extract(ctx, incomingCarrier{ctx})
	}
	if h.tracing {
		ctx, st.span = h.tracer.Start(ctx, name, h.kind...)
		if st.span.IsRecording() {
			st.span.SetAttributes(attrSystem,
				attribute.String("rpc.service", st.service), attribute.String("rpc.method", st.method))
		}
	}
	if h.client {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			var c outgoingCarrier
			h.prop.Inject(ctx, &c)
			if len(c.kv) > 0 {
				ctx = metadata.AppendToOutgoingContext(ctx, c.kv...)
			}
		}
	}
	return context.WithValue(ctx, rpcKey{}, st)
}

func (h *rpcStatsHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	st, ok := ctx.Value(rpcKey{}).(*rpcState)
	if !ok {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		st.kind.Store(uint32(rpcKindOf(s.IsClientStream, s.IsServerStream)))
		if s.IsClient() && h.metrics.retries != nil {
			// grpc tags every attempt separately; the call's counter (ClientInterceptors) spans them.
			if n, ok := ctx.Value(attemptsKey{}).(*atomic.Int32); ok && n.Add(1) > 1 {
				h.metrics.retries.WithLabelValues(st.service, st.method).Inc()
			}
		}
	case *stats.End:
		code := status.Code(s.Error)
		service, method := st.service, st.method
		if !h.client && code == codes.Unimplemented {
			// Unknown methods come from the caller; don't let them mint label values.
			service, method = "unknown", "unknown"
		}
		m := h.metrics.child(rpcKind(st.kind.Load()), service, method, code)
		m.handled.Inc()
		m.seconds.Observe(s.EndTime.Sub(s.BeginTime).Seconds())
		if st.span == nil {
			return
		}
		if st.span.IsRecording() {
			st.span.SetAttributes(attribute.Int("rpc.grpc.status_code", int(code)))
			if code != codes.OK && (h.client || serverFault(code)) {
				st.span.SetStatus(otelcodes.Error, status.Convert(s.Error).Message())
			}
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

// incomingCarrier reads trace headers from the incoming metadata without copying all of it.
type incomingCarrier struct{ ctx context.Context }

func (c incomingCarrier) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (incomingCarrier) Set(string, string) {}
func (incomingCarrier) Keys() []string     { return nil }

// outgoingCarrier collects what the propagator injects, for AppendToOutgoingContext.
type outgoingCarrier struct{ kv []string }

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
		return invoker(context.WithValue(ctx, attemptsKey{}, new(atomic.Int32)), method, req, reply, cc, opts...)
	}
	stream := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(context.WithValue(ctx, attemptsKey{}, new(atomic.Int32)), desc, cc, method, opts...)
	}
	return unary, stream
}
