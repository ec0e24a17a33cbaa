package platform_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/internal/testserver"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb/sqldbtest"
)

// switchable is a dependency check a test turns on and off.
type switchable struct{ err atomic.Pointer[error] }

func (s *switchable) set(err error) {
	if err == nil {
		s.err.Store(nil)
		return
	}
	s.err.Store(&err)
}

func (s *switchable) check(context.Context) error {
	if e := s.err.Load(); e != nil {
		return *e
	}
	return nil
}

func gauge(t *testing.T, reg *prometheus.Registry, name, label, value string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabel(m, label, value) {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// Defect 8: an instance whose database is down must leave the rotation (and come back with it), not
// keep taking 1/N of the calls. Two instances; the first one's required dependency fails.
func TestRequiredDependencyDownTakesInstanceOutOfRotation(t *testing.T) {
	t.Parallel()
	var db, broker switchable
	cfgA := testConfig("echo")
	cfgA.AdminAddr = freeAddr(t)
	pA := newPlatform(t, cfgA)
	for _, d := range []platform.Dependency{
		{Name: "database", Check: db.check, Required: true, Interval: 20 * time.Millisecond},
		{Name: "kafka", Check: broker.check, Interval: 20 * time.Millisecond},
	} {
		if err := pA.AddDependencies(d); err != nil {
			t.Fatal(err)
		}
	}
	echoA, echoB := &testserver.Echo{}, &testserver.Echo{}
	a := serve(t, pA, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, echoA) })
	b := echoServer(t, testConfig("echo"), echoB)
	c, _ := client(t, testConfig("caller"), []string{a.addr, b.addr})
	spread := func(n int) (toA, toB int64) {
		a0, b0 := echoA.Calls.Load(), echoB.Calls.Load()
		for range n {
			if _, err := c.UnaryCall(t.Context(), &testgrpc.SimpleRequest{}); err != nil {
				t.Fatalf("call: %v", err)
			}
		}
		return echoA.Calls.Load() - a0, echoB.Calls.Load() - b0
	}
	status := func(service string) healthgrpc.HealthCheckResponse_ServingStatus {
		st, _ := pA.Health().Check(t.Context(), service)
		return st
	}
	eventually(t, "both instances get calls", func() bool { x, y := spread(20); return x > 0 && y > 0 })
	if code, _ := httpGet(t, "http://"+cfgA.AdminAddr+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz with every dependency up: %d", code)
	}

	// An optional dependency down is reported, and changes nothing else.
	broker.set(errors.New("kafka: dial tcp: connection refused"))
	eventually(t, "kafka reported down", func() bool {
		v, ok := gauge(t, pA.Metrics(), "shopmesh_dependency_up", "dependency", "kafka")
		return ok && v == 0
	})
	if st := status(""); st != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("health with an optional dependency down = %v", st)
	}
	broker.set(nil)

	db.set(errors.New("dial tcp 127.0.0.1:5432: connect: connection refused"))
	eventually(t, "instance A drained", func() bool { x, _ := spread(20); return x == 0 })
	if x, y := spread(40); x != 0 || y != 40 {
		t.Fatalf("with A's database down: A got %d, B %d of 40", x, y)
	}
	for _, service := range []string{"", "grpc.testing.TestService"} {
		if st := status(service); st != healthgrpc.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health %q with the database down = %v", service, st)
		}
	}
	if st := status(platform.LivenessService); st != healthgrpc.HealthCheckResponse_SERVING {
		t.Errorf("liveness with the database down = %v (the process must not be restarted)", st)
	}
	code, body := httpGet(t, "http://"+cfgA.AdminAddr+"/readyz?verbose")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "database required down") {
		t.Errorf("readyz?verbose with the database down: %d %q", code, body)
	}
	if code, _ := httpGet(t, "http://"+cfgA.AdminAddr+"/healthz"); code != http.StatusOK {
		t.Errorf("healthz with the database down: %d", code)
	}
	if v, _ := gauge(t, pA.Metrics(), "shopmesh_dependency_up", "dependency", "database"); v != 0 {
		t.Errorf("shopmesh_dependency_up{database} = %v", v)
	}

	db.set(nil)
	eventually(t, "instance A back in rotation", func() bool { x, _ := spread(20); return x > 0 })
	if st := status(""); st != healthgrpc.HealthCheckResponse_SERVING {
		t.Errorf("health after the database came back = %v", st)
	}
	if code, _ := httpGet(t, "http://"+cfgA.AdminAddr+"/readyz"); code != http.StatusOK {
		t.Errorf("readyz after the database came back: %d", code)
	}
}

// Shutdown wins: a dependency coming back during the drain does not make the instance SERVING again.
func TestDependencyRecoveryDoesNotUndoShutdown(t *testing.T) {
	t.Parallel()
	var db switchable
	cfg := testConfig("echo")
	cfg.Server.DrainDelay = 500 * time.Millisecond
	p := newPlatform(t, cfg)
	if err := p.AddDependencies(platform.Dependency{Name: "database", Check: db.check, Required: true, Interval: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	r := serve(t, p, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, &testserver.Echo{}) })
	db.set(errors.New("down"))
	eventually(t, "NOT_SERVING", func() bool {
		st, _ := p.Health().Check(t.Context(), "")
		return st == healthgrpc.HealthCheckResponse_NOT_SERVING
	})
	r.stop()
	db.set(nil)
	done := make(chan error, 1)
	go func() { done <- r.wait() }()
	for {
		if st, _ := p.Health().Check(context.Background(), ""); st == healthgrpc.HealthCheckResponse_SERVING {
			t.Fatal("SERVING again while shutting down")
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestAddDependenciesRejectsBadOnes(t *testing.T) {
	t.Parallel()
	p := newPlatform(t, testConfig("echo"))
	ok := platform.Dependency{Name: "database", Check: func(context.Context) error { return nil }}
	if err := p.AddDependencies(ok); err != nil {
		t.Fatal(err)
	}
	for _, d := range []platform.Dependency{ok, {Name: "x"}, {Check: ok.Check}} {
		if err := p.AddDependencies(d); err == nil {
			t.Errorf("AddDependencies(%+v) accepted", d)
		}
	}
}

// The database check against a real PostgreSQL behind a proxy the test takes down: the instance turns
// NOT_SERVING with its database gone and SERVING once it is back.
func TestDatabaseDependencyFollowsPostgres(t *testing.T) {
	t.Parallel()
	dsn := sqldbtest.Postgres(t)
	proxy := sqldbtest.NewProxy(t, dsn)
	db, _ := sqldbtest.Open(t, proxy.DSN(dsn))
	p := newPlatform(t, testConfig("echo"))
	if err := p.AddDependencies(platform.Dependency{Name: "database", Check: db.PingContext, Required: true, Interval: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	serve(t, p, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, &testserver.Echo{}) })
	status := func() healthgrpc.HealthCheckResponse_ServingStatus {
		st, _ := p.Health().Check(t.Context(), "")
		return st
	}
	if st := status(); st != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("health with the database up = %v", st)
	}
	proxy.Down()
	eventually(t, "NOT_SERVING with the database gone", func() bool { return status() == healthgrpc.HealthCheckResponse_NOT_SERVING })
	proxy.Up()
	eventually(t, "SERVING with the database back", func() bool { return status() == healthgrpc.HealthCheckResponse_SERVING })
}
