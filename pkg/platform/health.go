package platform

import (
	"context"
	"sync"

	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
)

// Health is the grpc.health.v1 service of a platform, with a status per service name ("" is the whole
// server). Clients dialed by the platform check it and send no traffic to instances that are not SERVING.
type Health struct {
	srv      *health.Server
	stopOnce sync.Once
	stop     chan struct{}
}

func newHealth() *Health {
	return &Health{srv: health.NewServer(), stop: make(chan struct{})}
}

// SetServing sets the status of service ("" for the whole server). Ignored once shutdown has begun.
func (h *Health) SetServing(service string, serving bool) {
	st := healthgrpc.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthgrpc.HealthCheckResponse_SERVING
	}
	h.srv.SetServingStatus(service, st)
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
