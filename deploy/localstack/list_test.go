package localstack_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/deploy/localstack"
)

// fakeRoot writes a repository root whose list holds three services no code in localstack names:
// alpha (gRPC, 2 instances, a database, Kafka), beta (gRPC, calls alpha, NATS) and edge (HTTP, calls
// beta and alpha).
func fakeRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for name, yaml := range map[string]string{
		"alpha": "name: alpha\nkind: grpc\ndev_port: 41001\ndev_instances: 2\ndatabase: true\nkafka: true\n",
		"beta":  "name: beta\nkind: grpc\ndev_port: 41011\ncalls: [alpha]\nnats: true\nnats_subjects: beta.events\nnats_stream: BETA_EVENTS\n",
		"edge":  "name: edge\nkind: http\ndev_port: 41021\ncalls: [beta, alpha]\n",
	} {
		dir := filepath.Join(root, "services", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "service.yaml"), []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestStackRunsTheList starts a stack from a list of services localstack has never heard of (one
// fake binary, internal/fakesvc, installed under each name): every service starts ready, callees
// before callers, each child gets its environment from its service.yaml entry alone, and Stop ends the
// callers first.
func TestStackRunsTheList(t *testing.T) {
	t.Parallel()
	root := fakeRoot(t)
	bin, out := filepath.Join(root, "bin"), filepath.Join(root, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "alpha"), "./internal/fakesvc")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fakesvc: %v\n%s", err, b)
	}
	for _, n := range []string{"beta", "edge"} {
		if err := os.Link(filepath.Join(bin, "alpha"), filepath.Join(bin, n)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := localstack.Default(root)
	cfg.BinDir, cfg.SkipBuild, cfg.Plaintext, cfg.FreePorts = bin, true, true, true
	cfg.NATSAddr, cfg.KafkaAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Env = []string{"FAKESVC_OUT=" + out}
	cfg.ReadyTimeout, cfg.StopTimeout = 30*time.Second, 10*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			s.Stop()
		}
	}()

	info := s.Info()
	var names []string
	addrs := map[string][]string{}
	for _, i := range info.Instances {
		names = append(names, i.Name())
		addrs[i.Service] = append(addrs[i.Service], i.GRPCAddr+i.HTTPAddr)
		if i.AdminAddr == "" {
			t.Errorf("%s: no admin address", i.Name())
		}
	}
	if want := []string{"alpha-1", "alpha-2", "beta-1", "edge-1"}; !slices.Equal(names, want) {
		t.Fatalf("instances %v, want %v (start order)", names, want)
	}
	if info.GatewayURL != "http://"+addrs["edge"][0] {
		t.Errorf("gateway_url %q, want edge's address %s", info.GatewayURL, addrs["edge"][0])
	}
	resp, err := http.Get(info.GatewayURL + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("edge /readyz: %v %v", resp, err)
	}
	_ = resp.Body.Close()

	envOf := func(svc, addr string) map[string]string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(out, svc+"@"+strings.ReplaceAll(addr, ":", "_")+".env"))
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			k, v, _ := strings.Cut(l, "=")
			m[k] = v
		}
		return m
	}
	alphas := strings.Join(addrs["alpha"], ",")
	for _, c := range []struct {
		svc, addr string
		want      map[string]string // "" = must be absent
	}{
		{"alpha", addrs["alpha"][1], map[string]string{
			"ALPHA_PROFILE": "dev", "ALPHA_LISTEN_ADDR": addrs["alpha"][1], "ALPHA_HTTP_ADDR": "",
			"ALPHA_DSN": "sqlite:" + filepath.Join(root, ".data", "alpha.db"), "KAFKA_BROKERS": strings.Join(info.KafkaBrokers, ","),
			"NATS_URL": "",
		}},
		{"beta", addrs["beta"][0], map[string]string{
			"BETA_LISTEN_ADDR": addrs["beta"][0], "BETA_TARGETS_ALPHA_ADDRESSES": alphas, "NATS_URL": info.NATSURL,
			"BETA_DSN": "", "KAFKA_BROKERS": "",
		}},
		{"edge", addrs["edge"][0], map[string]string{
			"EDGE_PROFILE": "dev", "EDGE_HTTP_ADDR": addrs["edge"][0], "EDGE_LISTEN_ADDR": "",
			"EDGE_TARGETS_BETA_ADDRESSES": addrs["beta"][0], "EDGE_TARGETS_ALPHA_ADDRESSES": alphas,
		}},
	} {
		got := envOf(c.svc, c.addr)
		for k, v := range c.want {
			if g, ok := got[k]; (v == "" && ok) || (v != "" && g != v) {
				t.Errorf("%s@%s: %s=%q (set %v), want %q", c.svc, c.addr, k, g, ok, v)
			}
		}
		if got[strings.ToUpper(c.svc)+"_ADMIN_ADDR"] == "" {
			t.Errorf("%s: no admin address in its environment", c.svc)
		}
	}

	s.Stop()
	stopped = true
	data, err := os.ReadFile(filepath.Join(out, "events.log"))
	if err != nil {
		t.Fatal(err)
	}
	var stops []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if n, ok := strings.CutPrefix(l, "stop "); ok {
			stops = append(stops, n)
		}
	}
	if want := []string{"edge", "beta", "alpha", "alpha"}; !slices.Equal(stops, want) {
		t.Fatalf("stop order %v, want %v", stops, want)
	}
}

// TestStartRejectsServiceSettings: service names the list does not hold, an empty instance list and a
// left-out callee are refused before anything is built or started.
func TestStartRejectsServiceSettings(t *testing.T) {
	t.Parallel()
	root := fakeRoot(t)
	for _, c := range []struct {
		name string
		set  func(*localstack.Config)
		want string
	}{
		{"unknown instances", func(c *localstack.Config) { c.Instances = map[string][]string{"gamma": {"127.0.0.1:0"}} }, `instances: unknown service "gamma"`},
		{"no address", func(c *localstack.Config) { c.Instances = map[string][]string{"beta": {}} }, "instances: beta: no address"},
		{"unknown skip", func(c *localstack.Config) { c.Skip = []string{"gamma"} }, `skip: unknown service "gamma"`},
		{"unknown service env", func(c *localstack.Config) { c.ServiceEnv = map[string][]string{"gamma": {"X=1"}} }, `service_env: unknown service "gamma"`},
		{"callee left out", func(c *localstack.Config) { c.Skip = []string{"alpha"} }, "alpha is left out, but beta calls it"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := localstack.Default(root)
			cfg.FreePorts, cfg.NATSAddr, cfg.KafkaAddr = true, "127.0.0.1:0", "127.0.0.1:0"
			c.set(&cfg)
			s, err := localstack.Start(context.Background(), cfg)
			if err == nil {
				s.Stop()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
			if _, err := os.Stat(filepath.Join(root, "bin")); !os.IsNotExist(err) {
				t.Fatalf("bin/ exists after a refused start: %v", err)
			}
		})
	}
}
