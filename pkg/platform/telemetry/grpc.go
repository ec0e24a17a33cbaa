package telemetry

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// ServerStatsHandler traces every RPC the server handles (unary and
// streaming) with this Telemetry's provider and propagator, and counts and
// times it on the registry: grpc.NewServer(grpc.StatsHandler(t.ServerStatsHandler())).
func (t *Telemetry) ServerStatsHandler() stats.Handler {
	return &rpcStatsHandler{next: otelgrpc.NewServerHandler(t.otelgrpcOptions()...), metrics: t.server}
}

// ClientStatsHandler is ServerStatsHandler for outgoing calls:
// grpc.NewClient(target, grpc.WithStatsHandler(t.ClientStatsHandler())).
// Client metrics count attempts, so a retried call is counted once per try.
func (t *Telemetry) ClientStatsHandler() stats.Handler {
	return &rpcStatsHandler{next: otelgrpc.NewClientHandler(t.otelgrpcOptions()...), metrics: t.client}
}

func (t *Telemetry) otelgrpcOptions() []otelgrpc.Option {
	return []otelgrpc.Option{
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithPropagators(t.propagator),
		// RPC metrics live on the Prometheus registry; the noop provider keeps
		// otelgrpc from reaching for the global meter provider.
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
	}
}

// rpcMetrics are the Prometheus families for one side of a connection. The
// names follow go-grpc-prometheus so existing dashboards work.
type rpcMetrics struct {
	handled *prometheus.CounterVec
	seconds *prometheus.HistogramVec
}

var rpcLabels = []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}

func newRPCMetrics(reg prometheus.Registerer, side string) (*rpcMetrics, error) {
	m := &rpcMetrics{
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
	for _, c := range []prometheus.Collector{m.handled, m.seconds} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("telemetry: register grpc %s metrics: %w", side, err)
		}
	}
	return m, nil
}

// rpcStatsHandler adds Prometheus metrics to the otelgrpc handler, so one
// StatsHandler option instruments a server or client completely.
type rpcStatsHandler struct {
	next    stats.Handler
	metrics *rpcMetrics
}

type rpcKey struct{}

type rpcState struct {
	method string
	kind   atomic.Value // string, set on Begin
}

func (h *rpcStatsHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	ctx = h.next.TagRPC(ctx, info)
	return context.WithValue(ctx, rpcKey{}, &rpcState{method: info.FullMethodName})
}

func (h *rpcStatsHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	h.next.HandleRPC(ctx, s)
	st, ok := ctx.Value(rpcKey{}).(*rpcState)
	if !ok {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		st.kind.Store(rpcType(s.IsClientStream, s.IsServerStream))
	case *stats.End:
		kind, _ := st.kind.Load().(string)
		if kind == "" {
			kind = "unary"
		}
		code := status.Code(s.Error)
		service, method := splitMethod(st.method)
		if !s.IsClient() && code == codes.Unimplemented {
			// Unknown methods come from the caller; don't let them mint label values.
			service, method = "unknown", "unknown"
		}
		labels := prometheus.Labels{
			"grpc_type": kind, "grpc_service": service, "grpc_method": method, "grpc_code": code.String(),
		}
		h.metrics.handled.With(labels).Inc()
		h.metrics.seconds.With(labels).Observe(s.EndTime.Sub(s.BeginTime).Seconds())
	}
}

func (h *rpcStatsHandler) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	return h.next.TagConn(ctx, info)
}

func (h *rpcStatsHandler) HandleConn(ctx context.Context, s stats.ConnStats) {
	h.next.HandleConn(ctx, s)
}

func rpcType(clientStream, serverStream bool) string {
	switch {
	case clientStream && serverStream:
		return "bidi_stream"
	case clientStream:
		return "client_stream"
	case serverStream:
		return "server_stream"
	}
	return "unary"
}

// splitMethod turns "/pkg.Service/Method" into ("pkg.Service", "Method").
func splitMethod(full string) (string, string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndex(full, "/"); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}
