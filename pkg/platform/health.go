package platform

import (
	"context"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
)

// LivenessService is the grpc.health.v1 service name that answers SERVING for as long as the process
// runs and has not begun shutting down, whatever its dependencies: point liveness probes at it (a
// Kubernetes grpc probe with `service: liveness`), so a database outage takes the instance out of
// rotation (service "" turns NOT_SERVING) without getting it restarted.
const LivenessService = "liveness"

// Health is the grpc.health.v1 service of a platform, with a status per service name ("" is the whole
// server). Clients dialed by the platform check it and send no traffic to instances that are not SERVING.
//
// The status a client sees is the one SetServing asked for, turned NOT_SERVING while a required
// Dependency is down (see AddDependencies) and for good once shutdown has begun.
type Health struct {
	srv      *health.Server
	stopOnce sync.Once
	stop     chan struct{}

	mu   sync.Mutex
	want map[string]bool // the status SetServing asked for, per service name
	down []string        // required dependencies that are down, sorted; empty when ready
	deps []*dependency
	up   *prometheus.GaugeVec // shopmesh_dependency_up, registered with the first dependency
}

func newHealth() *Health {
	h := &Health{
		srv:  health.NewServer(),
		stop: make(chan struct{}),
		want: map[string]bool{"": true, LivenessService: true},
	}
	h.srv.SetServingStatus(LivenessService, healthgrpc.HealthCheckResponse_SERVING)
	return h
}

// SetServing sets the status of service ("" for the whole server). While a required dependency is
// down the service still reports NOT_SERVING, and it becomes SERVING again with the dependency.
// Ignored once shutdown has begun.
func (h *Health) SetServing(service string, serving bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.want[service] = serving
	h.applyLocked(service)
}

// track makes service report SERVING (while the dependencies allow it) unless SetServing already
// decided its status. Serve tracks every service registered on its server.
func (h *Health) track(service string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.want[service]; !ok {
		h.want[service] = true
		h.applyLocked(service)
	}
}

func (h *Health) applyLocked(service string) {
	st := healthgrpc.HealthCheckResponse_NOT_SERVING
	if h.want[service] && (service == LivenessService || len(h.down) == 0) {
		st = healthgrpc.HealthCheckResponse_SERVING
	}
	h.srv.SetServingStatus(service, st) // a no-op once shutdown has begun
}

// setDownLocked records which required dependencies are down and applies it to every service.
func (h *Health) setDownLocked(down []string) {
	if slices.Equal(h.down, down) {
		return
	}
	h.down = down
	for service := range h.want {
		h.applyLocked(service)
	}
}

// Check returns the status of service, as a client would see it.
func (h *Health) Check(ctx context.Context, service string) (healthgrpc.HealthCheckResponse_ServingStatus, error) {
	resp, err := h.srv.Check(ctx, &healthgrpc.HealthCheckRequest{Service: service})
	return resp.GetStatus(), err
}

// shutdown reports NOT_SERVING for every service and ignores later changes.
func (h *Health) shutdown() { h.srv.Shutdown() }

// endWatches ends every Watch stream (and refuses new ones): they never end on their own, so without this
// GracefulStop would always wait for its timeout.
func (h *Health) endWatches() { h.stopOnce.Do(func() { close(h.stop) }) }

// service is what gets registered: the grpc health server with Watch made stoppable.
func (h *Health) service() healthgrpc.HealthServer {
	return &stoppableHealth{Server: h.srv, stop: h.stop}
}

type stoppableHealth struct {
	*health.Server
	stop chan struct{}
}

func (s *stoppableHealth) Watch(req *healthgrpc.HealthCheckRequest, stream healthgrpc.Health_WatchServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	select {
	case <-s.stop:
		// Send the final NOT_SERVING so the client stops routing here before the stream ends.
		_ = stream.Send(&healthgrpc.HealthCheckResponse{Status: healthgrpc.HealthCheckResponse_NOT_SERVING})
		return nil
	default:
	}
	return s.Server.Watch(req, &watchStream{Health_WatchServer: stream, ctx: ctx})
}

type watchStream struct {
	healthgrpc.Health_WatchServer
	ctx context.Context
}

func (w *watchStream) Context() context.Context { return w.ctx }
