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

	"github.com/shopmesh/shopmesh/pkg/platform/mtls"
)

// Info is the content of stack.json.
type Info struct {
	NATSURL      string   `json:"nats_url"`
	KafkaBrokers []string `json:"kafka_brokers"`
	// KafkaInMemory is true when the broker keeps its data in memory (lost on restart).
	KafkaInMemory bool   `json:"kafka_in_memory"`
	GatewayURL    string `json:"gateway_url,omitempty"`
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
	brokers *brokers
	// tiers in start order: inventory+payment, order, gateway; Stop walks them backwards.
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

// Start builds the binaries, starts the brokers and every instance, waits until all are ready and
// writes RunDir/stack.json. On failure everything started so far is stopped again.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	withGateway, err := gatewayWanted(cfg)
	if err != nil {
		return nil, err
	}

	// Ports first: a taken port is reported before a minute of building.
	cfg.Order = append([]string{}, cfg.Order...)
	cfg.Inventory = append([]string{}, cfg.Inventory...)
	cfg.Payment = append([]string{}, cfg.Payment...)
	var names []string
	var addrs []*string
	for _, g := range []struct {
		svc   string
		addrs []string
	}{{Order, cfg.Order}, {Inventory, cfg.Inventory}, {Payment, cfg.Payment}} {
		for i := range g.addrs {
			names = append(names, fmt.Sprintf("%s-%d", g.svc, i+1))
			addrs = append(addrs, &g.addrs[i])
		}
	}
	// Every instance serves /metrics on an admin port of its own (free, in stack.json).
	admin := map[string]*string{}
	for _, n := range append(append([]string{}, names...), "gateway-1") {
		a := "127.0.0.1:0"
		admin[n] = &a
	}
	if cfg.Infra == nil {
		names = append(names, "nats", "kafka")
		addrs = append(addrs, &cfg.NATSAddr, &cfg.KafkaAddr)
	}
	if withGateway {
		names = append(names, "gateway-1")
		addrs = append(addrs, &cfg.GatewayHTTP)
	}
	for n, a := range admin {
		if n != "gateway-1" || withGateway {
			names = append(names, n+"-admin")
			addrs = append(addrs, a)
		}
	}
	if err := resolvePorts(names, addrs); err != nil {
		return nil, err
	}

	if cfg.SkipBuild {
		for _, svc := range []string{Order, Inventory, Payment, Gateway} {
			if svc == Gateway && !withGateway {
				continue
			}
			if _, err := os.Stat(filepath.Join(cfg.BinDir, svc)); err != nil {
				return nil, fmt.Errorf("skip build: %w", err)
			}
		}
	} else {
		log.Info("building the service binaries", "bin", cfg.BinDir)
		if withGateway, err = buildAll(ctx, cfg, withGateway); err != nil {
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
			Dir: cfg.CertsDir, Services: []string{Order, Inventory, Payment, Gateway}, TTL: certTTL, CATTL: caTTL,
		})
		if err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		log.Info("mtls certificates", "dir", cfg.CertsDir, "issued", strings.Join(res.Issued, ","), "kept", strings.Join(res.Kept, ","))
	}
	if cfg.Console != nil {
		cfg.Console = &lockedWriter{w: cfg.Console}
	}
	s := &Stack{cfg: cfg, admin: map[string]string{}, children: map[string]*child{}, extraEnv: map[string][]string{},
		info: Info{DataDir: cfg.DataDir, OTLPEndpoint: cfg.OTLPEndpoint}}
	if inf := cfg.Infra; inf != nil {
		if err := inf.prepareDatabases(ctx); err != nil {
			return nil, err
		}
		s.info.NATSURL, s.info.KafkaBrokers = inf.NATSURL, inf.KafkaBrokers
		s.info.Infra = &InfraInfo{NacosAddr: inf.NacosAddr, NacosNamespace: inf.NacosNamespace, Databases: map[string]string{}}
		for _, svc := range []string{Order, Inventory, Payment} {
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
	// Inventory and payment together; in each group the first instance migrates and seeds the shared
	// database alone before the others start.
	groups := [][]string{cfg.Inventory, cfg.Payment}
	startedBy := make([][]*child, len(groups))
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for k, svc := range []string{Inventory, Payment} {
		wg.Go(func() { startedBy[k], errs[k] = s.startGroup(ctx, svc, groups[k], "") })
	}
	wg.Wait()
	s.tiers = append(s.tiers, append(startedBy[0], startedBy[1]...))
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	started, err := s.startGroup(ctx, Order, cfg.Order, "")
	s.tiers = append(s.tiers, started)
	if err != nil {
		return fail(err)
	}
	if withGateway {
		started, err := s.startGroup(ctx, Gateway, []string{""}, cfg.GatewayHTTP)
		s.tiers = append(s.tiers, started)
		if err != nil {
			return fail(err)
		}
		s.info.GatewayURL = "http://" + cfg.GatewayHTTP
	}
	for _, t := range s.tiers {
		for _, c := range t {
			s.info.Instances = append(s.info.Instances, c.inst)
			s.monitor(c)
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

// Stop ends the gateway, then the order service, then inventory and payment, then the brokers: each
// child gets SIGTERM and StopTimeout to exit, then SIGKILL. It removes stack.json.
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
			if err := s.cfg.Infra.dropDatabases(); err != nil {
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
func (s *Stack) startGroup(ctx context.Context, svc string, grpcAddrs []string, httpAddr string) ([]*child, error) {
	var started []*child
	first, err := s.startInstance(svc, 1, grpcAddrs[0], httpAddr)
	if err != nil {
		return nil, err
	}
	started = append(started, first)
	if err := s.waitReady(ctx, first); err != nil {
		return started, err
	}
	var rest []*child
	for i := 1; i < len(grpcAddrs); i++ {
		c, err := s.startInstance(svc, i+1, grpcAddrs[i], "")
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

func (s *Stack) startInstance(svc string, index int, grpcAddr, httpAddr string) (*child, error) {
	inst := Instance{Service: svc, Index: index, GRPCAddr: grpcAddr, HTTPAddr: httpAddr}
	if svc == Gateway {
		inst.GRPCAddr = ""
	}
	inst.AdminAddr = s.admin[inst.Name()]
	env := s.env(svc, inst.Name(), grpcAddr, httpAddr)
	if inst.AdminAddr != "" {
		// Before ServiceEnv, which is appended last by env and still wins.
		// The admin port is on loopback: serve /debug/pprof/ too, so benchmarks can profile each process.
		env = append([]string{envName(svc) + "_ADMIN_ADDR=" + inst.AdminAddr, envName(svc) + "_ADMIN_PPROF=true"}, env...)
	}
	c, err := startChild(inst, filepath.Join(s.cfg.BinDir, svc), env,
		filepath.Join(s.cfg.RunDir, "logs"), s.cfg.Console)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.children[inst.Name()] = c
	s.mu.Unlock()
	s.cfg.Logger.Info("started", "instance", inst.Name(), "pid", c.inst.PID, "grpc", inst.GRPCAddr, "http", httpAddr, "log", c.inst.Log)
	return c, nil
}

// env is a child's environment: the base, the brokers, the service's own settings, then ServiceEnv.
func (s *Stack) env(svc, instance, grpcAddr, httpAddr string) []string {
	p := envName(svc)
	env := append([]string{}, s.cfg.Env...)
	if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") }) {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(s.gomaxprocs()))
	}
	env = append(env,
		"KAFKA_BROKERS="+strings.Join(s.info.KafkaBrokers, ","),
		"NATS_URL="+s.info.NATSURL,
		p+"_PROFILE=dev",
	)
	if !s.cfg.Plaintext {
		f := CertFiles(s.cfg.CertsDir, svc)
		env = append(env, p+"_TLS_CA_FILE="+f.CAFile, p+"_TLS_CERT_FILE="+f.CertFile, p+"_TLS_KEY_FILE="+f.KeyFile)
	}
	if s.cfg.OTLPEndpoint != "" {
		env = append(env, p+"_TELEMETRY_OTLP_ENDPOINT="+s.cfg.OTLPEndpoint, p+"_TELEMETRY_SAMPLE_RATIO=1")
	}
	if svc != Gateway { // the gateway serves HTTP only
		env = append(env, p+"_LISTEN_ADDR="+grpcAddr)
	}
	if s.cfg.Infra != nil {
		env = append(env, s.infraEnv(svc, instance)...)
	} else {
		switch svc {
		case Order, Inventory, Payment:
			env = append(env, p+"_DSN=sqlite:"+filepath.Join(s.cfg.DataDir, svc+".db"))
		}
	}
	switch svc {
	case Order:
		env = append(env,
			p+"_TARGETS_INVENTORY_ADDRESSES="+strings.Join(s.cfg.Inventory, ","),
			p+"_TARGETS_PAYMENT_ADDRESSES="+strings.Join(s.cfg.Payment, ","))
	case Gateway:
		env = append(env,
			p+"_HTTP_ADDR="+httpAddr,
			p+"_TARGETS_ORDER_ADDRESSES="+strings.Join(s.cfg.Order, ","),
			p+"_TARGETS_INVENTORY_ADDRESSES="+strings.Join(s.cfg.Inventory, ","),
			p+"_TARGETS_PAYMENT_ADDRESSES="+strings.Join(s.cfg.Payment, ","))
	}
	env = append(env, s.cfg.ServiceEnv[svc]...)
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(env, s.extraEnv[instance]...)
}

// gomaxprocs shares the machine's CPUs among the stack's processes: each child gets NumCPU divided by
// the number of service processes (at least 1). Six processes each scheduling on every core of a small
// machine spend their CPU on spinning and context switches (on 2 cores, GOMAXPROCS=1 gave 24% less CPU
// per order and 25% more orders/s; docs/BENCHMARKS.md). A GOMAXPROCS in the stack's Env wins.
func (s *Stack) gomaxprocs() int {
	n := len(s.cfg.Order) + len(s.cfg.Inventory) + len(s.cfg.Payment)
	if s.cfg.Gateway != GatewayOff {
		n++
	}
	return max(1, runtime.NumCPU()/max(1, n))
}

// waitReady polls grpc.health.v1 Check (the gateway: GET /readyz) until SERVING (200), the child exits
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
			return fmt.Errorf("%s exited during start-up (%v); see %s; last output:\n%s",
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

// readinessProbe checks an instance; with certsDir set, gRPC services are probed over mTLS with their
// own certificate (health checks are allowed for every shopmesh identity).
func readinessProbe(inst Instance, certsDir string) (func(context.Context) error, func(), error) {
	if inst.Service == Gateway {
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

// gatewayWanted decides from the mode and whether services/gateway/cmd/gateway has Go files.
func gatewayWanted(cfg Config) (bool, error) {
	if cfg.Gateway == GatewayOff {
		return false, nil
	}
	files, _ := filepath.Glob(filepath.Join(cfg.Root, "services", Gateway, "cmd", Gateway, "*.go"))
	if len(files) > 0 {
		return true, nil
	}
	if cfg.Gateway == GatewayOn {
		return false, errors.New("gateway: services/gateway/cmd/gateway has no Go files yet (use -gateway=off or auto)")
	}
	cfg.Logger.Warn("gateway: services/gateway/cmd/gateway not found; running without it")
	return false, nil
}

// buildAll builds every binary into BinDir in parallel. In auto mode a gateway that does not build is
// left out with a warning; it reports whether the gateway is still in.
func buildAll(ctx context.Context, cfg Config, withGateway bool) (bool, error) {
	svcs := []string{Order, Inventory, Payment}
	if withGateway {
		svcs = append(svcs, Gateway)
	}
	if err := os.MkdirAll(cfg.BinDir, 0o755); err != nil {
		return false, err
	}
	errs := make([]error, len(svcs))
	var wg sync.WaitGroup
	for i, svc := range svcs {
		wg.Go(func() {
			// The build inherits this process's environment (GOCACHE, GOFLAGS, ...); go.work at Root makes
			// the workspace modules resolve.
			cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(cfg.BinDir, svc), "./cmd/"+svc)
			cmd.Dir = filepath.Join(cfg.Root, "services", svc)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("build %s: %w\n%s", svc, err, out)
			}
		})
	}
	wg.Wait()
	if withGateway && errs[len(errs)-1] != nil && cfg.Gateway == GatewayAuto {
		cfg.Logger.Warn("gateway does not build; running without it", "err", errs[len(errs)-1])
		errs[len(errs)-1] = nil
		withGateway = false
	}
	cfg.Logger.Info("built", "services", strings.Join(svcs, ","), "bin", cfg.BinDir)
	return withGateway, errors.Join(errs...)
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
