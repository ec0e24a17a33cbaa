package service_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shopmesh/shopmesh/pkg/platform"
	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
	"github.com/shopmesh/shopmesh/pkg/platform/registry"
	"github.com/shopmesh/shopmesh/pkg/platform/service"
)

// demoConfig is the smallest service config: the platform's, a database and one own setting.
type demoConfig struct {
	config.Config
	config.Database
	Greeting string `help:"what the demo says"`
}

func (c demoConfig) Validate() error {
	if c.Greeting == "" {
		return errors.Join(c.Config.Validate(), errors.New("greeting: must be set"))
	}
	return c.Config.Validate()
}

var demoMigrations = fstest.MapFS{
	"0001_notes.up.sql":   {Data: []byte("CREATE TABLE notes (id TEXT PRIMARY KEY);")},
	"0001_notes.down.sql": {Data: []byte("DROP TABLE notes;")},
}

// freeAddr is a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

func demoSpec(t *testing.T, addr string, wire func(context.Context, *service.Service, demoConfig) error) service.Spec[demoConfig] {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "demo.db")
	return service.Spec[demoConfig]{
		Name: "demo", Summary: "a service for the tests",
		Defaults: func(p config.Profile) demoConfig {
			c := demoConfig{Config: config.Default(p), Database: config.Database{DSN: dsn}, Greeting: "hello"}
			c.Service, c.ListenAddr, c.AdminAddr, c.HealthAddr = "demo", addr, "", ""
			c.Server.DrainDelay, c.Server.ShutdownTimeout = 0, 10*time.Second
			return c
		},
		Migrations: demoMigrations,
		Wire:       wire,
	}
}

// devProfile is a lookup with only DEMO_PROFILE=dev.
func devProfile(k string) (string, bool) { return "dev", k == "DEMO_PROFILE" }

// env is a process environment of vars, with DEMO_PROFILE=dev unless vars sets DEMO_PROFILE (even to "").
func env(vars map[string]string, out *bytes.Buffer) service.Env {
	if _, ok := vars["DEMO_PROFILE"]; !ok {
		vars = maps.Clone(vars)
		if vars == nil {
			vars = map[string]string{}
		}
		vars["DEMO_PROFILE"] = "dev"
	}
	var environ []string
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	return service.Env{
		Lookup:  func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
		Environ: environ, Stdout: out,
	}
}

// syncBuffer is a bytes.Buffer the service's logger and the test may use at once.
type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func healthy(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return errors.New(res.GetStatus().String())
	}
	return nil
}

func waitHealthy(t *testing.T, addr string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for healthy(t.Context(), addr) != nil {
		select {
		case err := <-done:
			t.Fatalf("the service stopped before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the service never reported SERVING")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The lifecycle: workers start before the server serves, stop only after its drain (the server
// refuses calls by then), and closers run after the workers, in reverse order.
func TestWorkersOutliveTheDrainAndClosersRunLast(t *testing.T) {
	addr := freeAddr(t)
	var mu sync.Mutex
	var steps []string
	step := func(s string) { mu.Lock(); steps = append(steps, s); mu.Unlock() }
	started := make(chan struct{})
	spec := demoSpec(t, addr, func(ctx context.Context, s *service.Service, cfg demoConfig) error {
		if _, err := s.DB().ExecContext(ctx, `INSERT INTO notes (id) VALUES ('migrated')`); err != nil {
			return err
		}
		s.GRPC()
		s.Go("probe", func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			if healthy(context.Background(), addr) == nil {
				step("worker stopped while the server still served")
			} else {
				step("worker stopped after the server")
			}
			return ctx.Err()
		})
		s.OnStop(func() error { step("closed first registered"); return nil })
		s.OnStop(func() error { step("closed last registered"); return nil })
		return nil
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	out := &syncBuffer{}
	go func() { done <- service.Run(ctx, spec, nil, service.Env{Lookup: devProfile, Stdout: out}) }()
	waitHealthy(t, addr, done)
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after a stop: %v", err)
	}
	want := []string{"worker stopped after the server", "closed last registered", "closed first registered"}
	if !slices.Equal(steps, want) {
		t.Fatalf("steps = %q, want %q", steps, want)
	}
	// `service` is on every line exactly once.
	for line := range strings.Lines(out.String()) {
		if n := strings.Count(line, `"service":"demo"`); n != 1 {
			t.Errorf("log line carries service %d times: %s", n, line)
		}
	}
}

// A worker that fails stops the server and the process with the worker's error.
func TestFailingWorkerStopsTheService(t *testing.T) {
	addr := freeAddr(t)
	spec := demoSpec(t, addr, func(ctx context.Context, s *service.Service, cfg demoConfig) error {
		s.GRPC()
		s.Go("consumer", func(ctx context.Context) error {
			for healthy(ctx, addr) != nil {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(20 * time.Millisecond):
				}
			}
			return errors.New("broker refused the group")
		})
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- service.Run(t.Context(), spec, nil, service.Env{Lookup: devProfile}) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "consumer: broker refused the group") {
			t.Fatalf("Run = %v, want the worker's error", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a failed worker did not stop the service")
	}
	if healthy(t.Context(), addr) == nil {
		t.Fatal("the server still serves after Run returned")
	}
}

func TestWireMustRegisterOneServer(t *testing.T) {
	spec := demoSpec(t, freeAddr(t), func(context.Context, *service.Service, demoConfig) error { return nil })
	err := service.Run(t.Context(), spec, []string{"serve"}, service.Env{Lookup: devProfile})
	if err == nil || !strings.Contains(err.Error(), "exactly one server") {
		t.Fatalf("Run = %v, want a missing-server error", err)
	}
}

func TestHelpListsEveryVariableWithItsDefaultAndMeaning(t *testing.T) {
	spec := demoSpec(t, "127.0.0.1:50999", nil)
	spec.Wire = func(context.Context, *service.Service, demoConfig) error { return nil }
	var out bytes.Buffer
	if err := service.Run(t.Context(), spec, []string{"-h"}, env(nil, &out)); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"demo — a service for the tests", "migrate up", "check-config", "healthcheck",
		"DEMO_GREETING", "hello", "what the demo says", "DEMO_LISTEN_ADDR", "127.0.0.1:50999", "DEMO_DSN"} {
		if !strings.Contains(text, want) {
			t.Errorf("-h does not mention %q:\n%s", want, text)
		}
	}
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "DEMO_") && strings.HasSuffix(strings.TrimSpace(line), "—") {
			t.Errorf("a variable without a meaning: %s", line)
		}
	}
}

func TestCheckConfigAndCommands(t *testing.T) {
	spec := demoSpec(t, freeAddr(t), func(context.Context, *service.Service, demoConfig) error { return nil })
	var out bytes.Buffer
	if err := service.Run(t.Context(), spec, []string{"check-config"}, env(map[string]string{"DEMO_GREETING": "hi"}, &out)); err != nil {
		t.Fatalf("check-config on a good environment: %v", err)
	}
	err := service.Run(t.Context(), spec, []string{"check-config"}, env(map[string]string{"DEMO_GRETING": "hi"}, &out))
	if err == nil || !strings.Contains(err.Error(), "DEMO_GRETING") {
		t.Fatalf("check-config with a typo = %v, want the variable named", err)
	}
	err = service.Run(t.Context(), spec, []string{"check-config"}, env(map[string]string{"DEMO_GREETING": ""}, &out))
	if err == nil || !strings.Contains(err.Error(), "greeting") {
		t.Fatalf("check-config with an invalid value = %v, want the field named", err)
	}
	out.Reset()
	if err := service.Run(t.Context(), spec, []string{"check-config", "-keys"}, env(nil, &out)); err != nil || !strings.Contains(out.String(), "DEMO_GREETING\n") {
		t.Fatalf("check-config -keys = %v:\n%s", err, out.String())
	}
	if err := service.Run(t.Context(), spec, []string{"serv"}, env(nil, &out)); err == nil || !strings.Contains(err.Error(), `"serv"`) {
		t.Fatalf("an unknown command = %v", err)
	}
}

// TestNoProfileRefusesToStart: without DEMO_PROFILE (unset or empty) serve, migrate, check-config and
// healthcheck refuse with the variable and the choices named, and nothing is served or migrated; -h and
// check-config -keys still list the variables.
func TestNoProfileRefusesToStart(t *testing.T) {
	addr := freeAddr(t)
	wired := false
	spec := demoSpec(t, addr, func(_ context.Context, s *service.Service, _ demoConfig) error {
		wired = true
		s.GRPC()
		return nil
	})
	for _, vars := range []map[string]string{{"DEMO_GREETING": "hi"}, {"DEMO_PROFILE": "", "DEMO_GREETING": "hi"}, {"DEMO_PROFILE": " "}} {
		for _, args := range [][]string{nil, {"serve"}, {"migrate", "up"}, {"check-config"}, {"healthcheck"}} {
			var out bytes.Buffer
			e := env(vars, &out)
			if _, set := vars["DEMO_PROFILE"]; !set {
				e.Lookup = func(k string) (string, bool) { v, ok := vars[k]; return v, ok } // really unset
			}
			err := service.Run(t.Context(), spec, args, e)
			want := "DEMO_PROFILE is not set: choose dev (what make run uses), test, compose, k8s or prod"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%q with %v = %v, want %q", args, vars, err, want)
			}
			var np *config.NoProfileError
			if !errors.As(err, &np) || np.Variable != "DEMO_PROFILE" {
				t.Errorf("%q: %v is not a *config.NoProfileError naming DEMO_PROFILE", args, err)
			}
		}
	}
	if wired {
		t.Error("Wire ran without a profile")
	}
	if healthy(t.Context(), addr) == nil {
		t.Error("something serves on the service's address")
	}
	var out bytes.Buffer
	bare := service.Env{Stdout: &out}
	if err := service.Run(t.Context(), spec, []string{"-h"}, bare); err != nil || !strings.Contains(out.String(), "DEMO_PROFILE must be set") {
		t.Fatalf("-h without a profile = %v:\n%s", err, out.String())
	}
	out.Reset()
	if err := service.Run(t.Context(), spec, []string{"check-config", "-keys"}, bare); err != nil || !strings.Contains(out.String(), "DEMO_PROFILE\n") {
		t.Fatalf("check-config -keys without a profile = %v:\n%s", err, out.String())
	}
}

// TestBackendsAreOptIn: a binary whose Spec does not link the Nacos backend refuses
// DEMO_REGISTRY_BACKEND=nacos in check-config and serve (it would otherwise run without discovery);
// once Backends lists one by that name both accept it.
func TestBackendsAreOptIn(t *testing.T) {
	spec := demoSpec(t, freeAddr(t), func(_ context.Context, s *service.Service, _ demoConfig) error {
		s.GRPC()
		return nil
	})
	vars := map[string]string{
		"DEMO_REGISTRY_BACKEND": "nacos", "DEMO_REGISTRY_NACOS_ADDRS": "127.0.0.1:8848",
		"DEMO_REGISTRY_NACOS_CACHE_DIR": t.TempDir(), "DEMO_REGISTRY_NACOS_LOG_DIR": t.TempDir(),
	}
	var out bytes.Buffer
	for _, cmd := range []string{"check-config", "serve"} {
		if err := service.Run(t.Context(), spec, []string{cmd}, env(vars, &out)); !errors.Is(err, registry.ErrNotLinked) {
			t.Fatalf("%s without the backend = %v, want ErrNotLinked", cmd, err)
		}
	}
	reg := &chanRegistry{registered: make(chan discovery.Instance, 1)}
	spec.Backends = []platform.Backend{{
		Name: registry.Nacos,
		Registry: func(registry.Config, *slog.Logger, prometheus.Registerer) (registry.Backend, error) {
			return registry.Backend{Registry: reg}, nil
		},
	}}
	if err := service.Run(t.Context(), spec, []string{"check-config"}, env(vars, &out)); err != nil {
		t.Fatalf("check-config with the backend linked: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- service.Run(ctx, spec, nil, env(vars, &out)) }()
	select {
	case in := <-reg.registered:
		if in.Service != "demo" {
			t.Errorf("registered %+v", in)
		}
	case err := <-served:
		t.Fatalf("serve with the backend linked: %v", err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// chanRegistry stands for a contrib registry: it reports what Serve registers.
type chanRegistry struct{ registered chan discovery.Instance }

func (r *chanRegistry) Register(_ context.Context, in discovery.Instance) error {
	r.registered <- in
	return nil
}
func (r *chanRegistry) Deregister(context.Context, discovery.Instance) error { return nil }

func TestMigrateAppliesThePlatformAndServiceSchemas(t *testing.T) {
	spec := demoSpec(t, freeAddr(t), func(context.Context, *service.Service, demoConfig) error { return nil })
	var out bytes.Buffer
	if err := service.Run(t.Context(), spec, []string{"migrate", "up"}, env(nil, &out)); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := service.Run(t.Context(), spec, []string{"migrate", "version"}, env(nil, &out)); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "1") {
		t.Fatalf("migrate version printed %q, want version 1", out.String())
	}
	spec.Migrations = nil
	if err := service.Run(t.Context(), spec, []string{"migrate", "up"}, env(nil, &out)); err == nil || !strings.Contains(err.Error(), "no database") {
		t.Fatalf("migrate without a database = %v", err)
	}
}
