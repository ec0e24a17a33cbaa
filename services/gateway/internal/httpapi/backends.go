package httpapi

import (
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/connectivity"
)

// Backend is a backend's client connection as the gateway watches it (a *grpc.ClientConn dialed by the
// platform: health-checked round_robin). Its state tells whether any instance can take a call:
// TRANSIENT_FAILURE means every instance is unreachable or not SERVING.
type Backend interface {
	GetState() connectivity.State
}

// codeBackendUnavailable is the error code of a route whose backend has no healthy instance.
const codeBackendUnavailable = "BACKEND_UNAVAILABLE"

// backendRetryAfter is the Retry-After sent while a backend has no healthy instance: about the time a
// recovered instance takes to be seen (health watch, reconnect backoff).
const backendRetryAfter = time.Second

// backendDown reports whether a channel has no instance to send a call to.
func backendDown(st connectivity.State) bool {
	return st == connectivity.TransientFailure || st == connectivity.Shutdown
}

// requireBackend answers 503 BACKEND_UNAVAILABLE with Retry-After at once, without calling, while the
// route's backend has no healthy instance, so one backend down degrades its own routes only. An idle or
// connecting channel gets the call (it may well succeed).
func (s *Server) requireBackend(name string, next http.Handler) http.Handler {
	b, ok := s.deps.Backends[name]
	if !ok {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if backendDown(b.GetState()) {
			w.Header().Set("Retry-After", retryAfter(backendRetryAfter.Seconds()))
			writeError(w, newError(http.StatusServiceUnavailable, codeBackendUnavailable,
				"the "+name+" service is unavailable; retry later"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// registerBackendMetrics exports shopmesh_gateway_backend_up{backend}: 1 while the backend's channel
// can take calls, 0 while it has no healthy instance.
func (s *Server) registerBackendMetrics() error {
	for _, name := range slices.Sorted(maps.Keys(s.deps.Backends)) {
		b := s.deps.Backends[name]
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "shopmesh_gateway_backend_up",
			Help:        "1 while the backend has an instance to call, 0 while every instance is unreachable or not SERVING (its routes answer 503).",
			ConstLabels: prometheus.Labels{"backend": name},
		}, func() float64 {
			if backendDown(b.GetState()) {
				return 0
			}
			return 1
		})
		if err := s.deps.Metrics.Register(g); err != nil {
			return err
		}
	}
	return nil
}

// readyz is the gateway's own readiness: it can serve until it starts shutting down (Deps.Serving
// false from the start of the drain, or Close), whatever the backends (a backend down makes its routes
// answer 503, not the gateway leave the load balancer). It says ready or not and nothing else: the API
// port does not describe the backends (their state is shopmesh_gateway_backend_up and the admin port's
// /readyz?verbose).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.closing.Err() != nil || (s.deps.Serving != nil && !s.deps.Serving(r.Context())) {
		writeError(w, newError(http.StatusServiceUnavailable, codeNotReady, "not ready"))
		return
	}
	writeJSON(w, http.StatusOK, Health{Status: "ok"})
}
