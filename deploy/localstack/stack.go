package localstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/shopmesh/shopmesh/deploy/servicelist"
	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// Info is the content of stack.json.
type Info struct {
	NATSURL      string   `json:"nats_url"`
	KafkaBrokers []string `json:"kafka_brokers"`
	// KafkaInMemory is true when the broker keeps its data in memory (lost on restart).
	KafkaInMemory bool `json:"kafka_in_memory"`
	// GatewayURL is the first instance of the edge (the kind http service: the gateway), "" without one.
	GatewayURL string `json:"gateway_url,omitempty"`
	// Infra is set when the stack runs on the real servers (`make run INFRA=1`).
	Infra *InfraInfo `json:"infra,omitempty"`
	// OTLPEndpoint receives every process's spans ("" = tracing off).
	OTLPEndpoint string `json:"otlp_endpoint,omitempty"`
	// CertsDir holds ca.pem and <service>.pem/<service>-key.pem; "" when the stack runs without mTLS.
	CertsDir string `json:"certs_dir,omitempty"`
	DataDir  string `json:"data_dir"`
	// Instances lists every process in start order.
	Instances []Instance `json:"instances"`
}

// Stack is a running suite. Stop it exactly once (Stop is safe to call again).
type Stack struct {
	cfg     Config
	plan    *plan
	brokers *brokers
	// tiers in start order (plan.tiers: the services that call nobody first); Stop walks them backwards.
	tiers    [][]*child
	info     Info
	stopOnce sync.Once
	monitors sync.WaitGroup
	mu       sync.Mutex
	crashed  []string
	admin    map[string]string // instance name → admin (metrics) address
	// children maps an instance name to its current process; extraEnv holds SetEnv's additions. Both
	// under mu, like the tiers once Start has returned.
	children map[string]*child
	extraEnv map[string][]string
	stopped  bool
}

// Start reads the list of services (services/*/service.yaml under Root), builds their binaries, starts
// the brokers and every instance, waits until all are ready and writes RunDir/stack.json. Services
// start in tiers, callees before their callers; in each service the first instance starts (and
// migrates and seeds the shared database) alone, the others together once it is ready. On failure
// everything started so far is stopped again.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	list, err := servicelist.Load(cfg.Root)
	if err != nil {
		return nil, err
	}
	pl, err := newPlan(cfg, list)
	if err != nil {
		return nil, err
	}

	// Ports first: a taken port is reported before a minute of building.
	var names []string
	var addrs []*string
	admin := map[string]*string{}
	for _, g := range pl.groups() {
		for i := range g.addrs {
			n := fmt.Sprintf("%s-%d", g.svc.Name, i+1)
			names = append(names, n)
			addrs = append(addrs, &g.addrs[i])
			// Every instance serves /metrics on an admin port of its own (free, in stack.json).
			a := "127.0.0.1:0"
			admin[n] = &a
		}
	}
	if cfg.Infra == nil {
		names = append(names, "nats", "kafka")
		addrs = append(addrs, &cfg.NATSAddr, &cfg.KafkaAddr)
	}
	for n, a := range admin {
		names = append(names, n+"-admin")
		addrs = append(addrs, a)
	}
	if err := resolvePorts(names, addrs); err != nil {
		return nil, err
	}

	if cfg.SkipBuild {
		for _, g := range pl.groups() {
			if _, err := os.Stat(filepath.Join(cfg.BinDir, g.svc.Name)); err != nil {
				return nil, fmt.Errorf("skip build: %w", err)
			}
		}
	} else {
		log.Info("building the service binaries", "bin", cfg.BinDir)
		if err := buildAll(ctx, cfg, pl.groups()); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{cfg.DataDir, cfg.RunDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if !cfg.Plaintext {
		res, err := mtls.EnsureDir(mtls.DirOptions{
			Dir: cfg.CertsDir, Services: servicelist.Names(list), TTL: certTTL, CATTL: caTTL,
		})
		if err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		log.Info("mtls certificates", "dir", cfg.CertsDir, "issued", strings.Join(res.Issued, ","), "kept", strings.Join(res.Kept, ","))
	}
	if cfg.Console != nil {
		cfg.Console = &lockedWriter{w: cfg.Console}
	}
	s := &Stack{cfg: cfg, plan: pl, admin: map[string]string{}, children: map[string]*child{}, extraEnv: map[string][]string{},
		info: Info{DataDir: cfg.DataDir, OTLPEndpoint: cfg.OTLPEndpoint}}
	if inf := cfg.Infra; inf != nil {
		dbs := pl.withDatabase()
		if err := inf.prepareDatabases(ctx, dbs); err != nil {
			return nil, err
		}
		s.info.NATSURL, s.info.KafkaBrokers = inf.NATSURL, inf.KafkaBrokers
		s.info.Infra = &InfraInfo{NacosAddr: inf.NacosAddr, NacosNamespace: inf.NacosNamespace, Databases: map[string]string{}}
		for _, svc := range dbs {
			s.info.Infra.Databases[svc] = inf.DSN(svc)
		}
		log.Info("real servers", "postgres", redact(inf.DatabaseURL), "kafka", strings.Join(inf.KafkaBrokers, ","),
			"nats", inf.NATSURL, "nacos", inf.NacosAddr, "namespace", inf.NacosNamespace, "otlp", cfg.OTLPEndpoint)
	} else {
		b, err := startBrokers(cfg.NATSAddr, cfg.KafkaAddr, cfg.DataDir, cfg.KafkaPersist)
		if err != nil {
			return nil, err
		}
		log.Info("brokers up", "nats", b.natsURL(), "kafka", strings.Join(b.kafkaAddrs(), ","), "kafka_in_memory", !cfg.KafkaPersist)
		s.brokers = b
		s.info.NATSURL, s.info.KafkaBrokers, s.info.KafkaInMemory = b.natsURL(), b.kafkaAddrs(), !cfg.KafkaPersist
	}
	if !cfg.Plaintext {
		s.info.CertsDir = cfg.CertsDir
	}

	for n, a := range admin {
		s.admin[n] = *a
	}
	fail := func(err error) (*Stack, error) {
		s.Stop()
		return nil, err
	}
	for _, tier := range pl.tiers {
		startedBy := make([][]*child, len(tier))
		errs := make([]error, len(tier))
		var wg sync.WaitGroup
		for k, g := range tier {
			wg.Go(func() { startedBy[k], errs[k] = s.startGroup(ctx, g) })
		}
		wg.Wait()
		s.tiers = append(s.tiers, slices.Concat(startedBy...))
		if err := errors.Join(errs...); err != nil {
			return fail(err)
		}
	}
	for _, t := range s.tiers {
		for _, c := range t {
			s.info.Instances = append(s.info.Instances, c.inst)
			s.monitor(c)
			if s.info.GatewayURL == "" && c.inst.GRPCAddr == "" {
				s.info.GatewayURL = "http://" + c.inst.HTTPAddr
			}
		}
	}
	if err := writeJSON(s.StackFile(), s.info); err != nil {
		return fail(err)
	}
	log.Info("stack ready", "instances", len(s.info.Instances), "stack_file", s.StackFile())
	return s, nil
}

// Info returns what stack.json holds.
func (s *Stack) Info() Info { return s.info }

// Instances returns every instance in start order.
func (s *Stack) Instances() []Instance { return append([]Instance{}, s.info.Instances...) }

// StackFile is the path of stack.json.
func (s *Stack) StackFile() string { return filepath.Join(s.cfg.RunDir, "stack.json") }

// Crashed names the instances that exited on their own (they are not restarted).
func (s *Stack) Crashed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string{}, s.crashed...)
}

// Stop ends the services tier by tier in reverse start order (callers before the services they call;
// today the gateway, then order, then inventory and payment), then the brokers: each child gets
// SIGTERM and StopTimeout to exit, then SIGKILL. It removes stack.json.
func (s *Stack) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopped = true
		s.mu.Unlock()
		for i := len(s.tiers) - 1; i >= 0; i-- {
			if len(s.tiers[i]) == 0 {
				continue
			}
			var names []string
			for _, c := range s.tiers[i] {
				names = append(names, c.inst.Name())
			}
			s.cfg.Logger.Info("stopping", "instances", strings.Join(names, ","))
			if killed := stopChildren(s.tiers[i], s.cfg.StopTimeout); len(killed) > 0 {
				s.cfg.Logger.Warn("killed after the stop timeout", "instances", strings.Join(killed, ","), "timeout", s.cfg.StopTimeout)
			}
		}
		s.monitors.Wait()
		if s.brokers != nil {
			s.brokers.close()
		}
		if s.cfg.Infra != nil {
			if err := s.cfg.Infra.dropDatabases(s.plan.withDatabase()); err != nil {
				s.cfg.Logger.Warn("dropping the stack's databases", "err", err)
			}
		}
		_ = os.Remove(s.StackFile())
		s.cfg.Logger.Info("stack stopped")
	})
}

// monitor logs a child that exits while the stack runs; the others keep serving and it stays down.
func (s *Stack) monitor(c *child) {
	s.monitors.Go(func() {
		<-c.done
		if c.isStopping() {
			return
		}
		s.mu.Lock()
		s.crashed = append(s.crashed, c.inst.Name())
		s.mu.Unlock()
		s.cfg.Logger.Error("instance exited; the other instances keep serving, it is not restarted",
			"instance", c.inst.Name(), "pid", c.inst.PID, "err", exitError(c), "log", c.inst.Log)
	})
}

// startGroup starts a service's instances: the first alone, the rest together once it is ready.
func (s *Stack) startGroup(ctx context.Context, g *group) ([]*child, error) {
	var started []*child
	first, err := s.startInstance(g.svc.Name, 1)
	if err != nil {
		return nil, err
	}
	started = append(started, first)
	if err := s.waitReady(ctx, first); err != nil {
		return started, err
	}
	var rest []*child
	for i := 2; i <= len(g.addrs); i++ {
		c, err := s.startInstance(g.svc.Name, i)
		if err != nil {
			return started, err
		}
		started = append(started, c)
		rest = append(rest, c)
	}
	errs := make([]error, len(rest))
	var wg sync.WaitGroup
	for i, c := range rest {
		wg.Go(func() { errs[i] = s.waitReady(ctx, c) })
	}
	wg.Wait()
	return started, errors.Join(errs...)
}

// startInstance starts instance index (1-based) of service svc on its planned address.
func (s *Stack) startInstance(svc string, index int) (*child, error) {
	g := s.plan.byName[svc]
	addr := g.addrs[index-1]
	inst := Instance{Service: svc, Index: index}
	if g.svc.Kind == servicelist.KindHTTP {
		inst.HTTPAddr = addr
	} else {
		inst.GRPCAddr = addr
	}
	inst.AdminAddr = s.admin[inst.Name()]
	c, err := startChild(inst, filepath.Join(s.cfg.BinDir, svc), s.env(g.svc, inst),
		filepath.Join(s.cfg.RunDir, "logs"), s.cfg.Console)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.children[inst.Name()] = c
	s.mu.Unlock()
	s.cfg.Logger.Info("started", "instance", inst.Name(), "pid", c.inst.PID, "grpc", inst.GRPCAddr, "http", inst.HTTPAddr, "log", c.inst.Log)
	return c, nil
}

// env is a child's environment, built from the service's entry in the list alone: the base; the
// shared broker variables the service reads; <P>_PROFILE=dev; mTLS files; tracing; its listen and
// admin addresses; its database; the addresses of every service it calls; Nacos with Infra; then
// ServiceEnv and SetEnv's entries, which win.
func (s *Stack) env(svc servicelist.Service, inst Instance) []string {
	p := svc.Prefix()
	env := append([]string{}, s.cfg.Env...)
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") }) {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(s.gomaxprocs()))
	}
	if svc.Kafka {
		env = append(env, "KAFKA_BROKERS="+strings.Join(s.info.KafkaBrokers, ","))
	}
	if svc.NATS {
		env = append(env, "NATS_URL="+s.info.NATSURL)
	}
	env = append(env, p+"_PROFILE=dev")
	if !s.cfg.Plaintext {
		f := CertFiles(s.cfg.CertsDir, svc.Name)
		env = append(env, p+"_TLS_CA_FILE="+f.CAFile, p+"_TLS_CERT_FILE="+f.CertFile, p+"_TLS_KEY_FILE="+f.KeyFile)
	}
	if s.cfg.OTLPEndpoint != "" {
		env = append(env, p+"_TELEMETRY_OTLP_ENDPOINT="+s.cfg.OTLPEndpoint, p+"_TELEMETRY_SAMPLE_RATIO=1")
	}
	if inst.HTTPAddr != "" {
		env = append(env, p+"_HTTP_ADDR="+inst.HTTPAddr)
	} else {
		env = append(env, p+"_LISTEN_ADDR="+inst.GRPCAddr)
	}
	if inst.AdminAddr != "" {
		// The admin port is on loopback: serve /debug/pprof/ too, so benchmarks can profile each process.
		env = append(env, p+"_ADMIN_ADDR="+inst.AdminAddr, p+"_ADMIN_PPROF=true")
	}
	if svc.Database {
		dsn := "sqlite:" + filepath.Join(s.cfg.DataDir, svc.Name+".db")
		if s.cfg.Infra != nil {
			dsn = s.cfg.Infra.DSN(svc.Name)
		}
		env = append(env, p+"_DSN="+dsn)
	}
	for _, c := range svc.Calls {
		env = append(env, p+"_TARGETS_"+targetKey(c)+"_ADDRESSES="+strings.Join(s.plan.byName[c].addrs, ","))
	}
	if s.cfg.Infra != nil {
		env = append(env, s.cfg.Infra.credentials(p, svc)...)
		env = append(env, s.nacosEnv(p, inst.Name())...)
	}
	env = append(env, s.cfg.ServiceEnv[svc.Name]...)
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(env, s.extraEnv[inst.Name()]...)
}

// targetKey is a callee's key in the caller's <P>_TARGETS_<KEY>_ADDRESSES variable: the callee's name
// in upper case with '-' as '_', as pkg/platform/config names a map entry.
func targetKey(callee string) string {
	return strings.ReplaceAll(strings.ToUpper(callee), "-", "_")
}

// gomaxprocs shares the machine's CPUs among the stack's processes: each child gets NumCPU divided by
// the number of service processes (at least 1). Six processes each scheduling on every core of a small
// machine spend their CPU on spinning and context switches (on 2 cores, GOMAXPROCS=1 gave 24% less CPU
// per order and 25% more orders/s; docs/BENCHMARKS.md). A GOMAXPROCS in the stack's Env wins.
func (s *Stack) gomaxprocs() int {
	return max(1, runtime.NumCPU()/max(1, s.plan.instances()))
}

// waitReady polls grpc.health.v1 Check (an HTTP service: GET /readyz) until SERVING (200), the child exits
// or ReadyTimeout passes.
func (s *Stack) waitReady(parent context.Context, c *child) error {
	ctx, cancel := context.WithTimeout(parent, s.cfg.ReadyTimeout)
	defer cancel()
	probe, closeProbe, err := readinessProbe(c.inst, s.info.CertsDir)
	if err != nil {
		return err
	}
	defer closeProbe()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		last = probe(pctx)
		pcancel()
		if last == nil {
			s.cfg.Logger.Info("ready", "instance", c.inst.Name())
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited during start-up (%w); see %s; last output:\n%s",
				c.inst.Name(), exitError(c), c.inst.Log, c.tail.String())
		case <-ctx.Done():
			if parent.Err() != nil {
				return fmt.Errorf("%s: start interrupted: %w", c.inst.Name(), parent.Err())
			}
			return fmt.Errorf("%s not ready within %v: %w (log %s)", c.inst.Name(), s.cfg.ReadyTimeout, last, c.inst.Log)
		case <-tick.C:
		}
	}
}

// readinessProbe checks an instance: an HTTP service (kind http) by GET /readyz, a gRPC one by the
// health service; with certsDir set, gRPC services are probed over mTLS with their own certificate
// (health checks are allowed for every shopmesh identity).
func readinessProbe(inst Instance, certsDir string) (func(context.Context) error, func(), error) {
	if inst.GRPCAddr == "" {
		hc := &http.Client{}
		url := "http://" + inst.HTTPAddr + "/readyz"
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET /readyz: %s", resp.Status)
			}
			return nil
		}, hc.CloseIdleConnections, nil
	}
	creds := insecure.NewCredentials()
	if certsDir != "" {
		src, err := mtls.Load(CertFiles(certsDir, inst.Service))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", inst.Name(), err)
		}
		creds = src.ClientCredentials(inst.Service)
	}
	conn, err := grpc.NewClient(inst.GRPCAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", inst.Name(), err)
	}
	hc := healthpb.NewHealthClient(conn)
	return func(ctx context.Context) error {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health: %s", r.GetStatus())
		}
		return nil
	}, func() { _ = conn.Close() }, nil
}

// Lifetimes of the dev certificates `make run` issues; they are renewed at a start once they cannot
// cover a new leaf.
const (
	certTTL = 720 * time.Hour
	caTTL   = 8760 * time.Hour
)

// CertFiles names service's mTLS files in a certificate directory (the layout of `make certs`).
func CertFiles(dir, service string) mtls.Config {
	return mtls.Config{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, service+".pem"),
		KeyFile:  filepath.Join(dir, service+"-key.pem"),
	}
}

// buildAll builds the services' binaries into BinDir in parallel.
func buildAll(ctx context.Context, cfg Config, groups []*group) error {
	if err := os.MkdirAll(cfg.BinDir, 0o755); err != nil {
		return err
	}
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		svc := g.svc.Name
		wg.Go(func() {
			// The build inherits this process's environment (GOCACHE, GOFLAGS, ...); go.work at Root makes
			// the workspace modules resolve.
			cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(cfg.BinDir, svc), "./cmd/"+svc)
			cmd.Dir = filepath.Join(cfg.Root, filepath.FromSlash(g.svc.Dir))
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("build %s: %w\n%s", svc, err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var names []string
	for _, g := range groups {
		names = append(names, g.svc.Name)
	}
	cfg.Logger.Info("built", "services", strings.Join(names, ","), "bin", cfg.BinDir)
	return nil
}

// writeJSON writes v to path atomically.
func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
