package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
)

// run parses the flags, then runs the stack until ctx ends. environ is the children's base environment.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shopmesh-dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		root      = fs.String("root", "", "repository root (default: the directory holding go.work, found from the working directory up)")
		dataDir   = fs.String("data", "", "data directory: <service>.db, nats/ (default <root>/.data)")
		runDir    = fs.String("run-dir", "", "stack.json and logs/ (default <root>/.run)")
		binDir    = fs.String("bin", "", "where the service binaries are built (default <root>/bin)")
		host      = fs.String("host", "127.0.0.1", "host the services listen on")
		instances = fs.String("instances", "", "instance counts, name=N,... (e.g. inventory=3,payment=1); N=0 leaves a service out; default each service's dev_instances in services/<name>/service.yaml")
		// The per-service flags of the reference suite, kept for existing scripts; -instances covers
		// every service of the list.
		orders      = fs.Int("order", 0, "order instances (same as -instances order=N; default from services/order/service.yaml)")
		inventories = fs.Int("inventory", 0, "inventory instances (default from services/inventory/service.yaml)")
		payments    = fs.Int("payment", 0, "payment instances (default from services/payment/service.yaml)")
		orderPort   = fs.Int("order-port", 0, "first order port (instance i listens on port+i-1; 0 picks free ports; default dev_port of services/order/service.yaml)")
		invPort     = fs.Int("inventory-port", 0, "first inventory port (default its dev_port)")
		payPort     = fs.Int("payment-port", 0, "first payment port (default its dev_port)")
		gateway     = fs.String("gateway", "on", "run the gateway: on or off (auto: the same as on)")
		gatewayAddr = fs.String("gateway-addr", "", "gateway HTTP address (default <host>:<dev_port of services/gateway/service.yaml>)")

		natsAddr     = fs.String("nats-addr", "127.0.0.1:4222", "embedded NATS address (port 0 picks one)")
		kafkaAddr    = fs.String("kafka-addr", "127.0.0.1:9092", "embedded Kafka (kfake) address, always 127.0.0.1")
		kafkaPersist = fs.Bool("kafka-persist", false, "keep Kafka's log under <data>/kafka (kfake DataDir); default in memory")
		quiet        = fs.Bool("quiet", false, "do not copy the services' output to the console (it is always in <run-dir>/logs)")
		readyTimeout = fs.Duration("ready-timeout", 0, "wait for each instance to be ready (default 90s)")
		stopTimeout  = fs.Duration("stop-timeout", 0, "SIGTERM-to-SIGKILL grace per child (default 15s)")
		certsDir     = fs.String("certs", "", "mTLS certificates (make certs layout), issued when missing (default <run-dir>/certs)")
		plaintext    = fs.Bool("plaintext", false, "run the services without mTLS (debugging only; the authorization policy is then not enforced)")
		infraEnv     = fs.String("infra", "", "run on the real servers of `make infra-up`: path of their env file (.run/infra.env); PostgreSQL database per service, Kafka, NATS, Nacos, Jaeger")
		nacosNS      = fs.String("nacos-namespace", "", "with -infra: Nacos namespace id for registrations and config documents (default public)")
		freshDBs     = fs.String("db-prefix", "", "with -infra: create fresh databases <prefix>_<service> (dropped at exit) instead of using <service>_svc")
		otlp         = fs.String("otlp", "", "OTLP/gRPC endpoint (e.g. Jaeger's 127.0.0.1:4317): every service traces every request there; default off")
	)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: shopmesh-dev [flags]\n\nRuns every service of services/*/service.yaml (make run). Flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, f := range []struct {
		name string
		n    int
	}{{"order", *orders}, {"inventory", *inventories}, {"payment", *payments}} {
		if set[f.name] && f.n < 1 {
			return errors.New("-order, -inventory and -payment need at least 1 instance each")
		}
	}
	if *root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if *root, err = localstack.FindRoot(wd); err != nil {
			return err
		}
	}
	list, err := servicelist.Load(*root)
	if err != nil {
		return err
	}

	// Counts and first ports per service: the list's, then -instances, then the per-service flags.
	counts, err := parseCounts(*instances, list)
	if err != nil {
		return err
	}
	ports := map[string]int{}
	for _, f := range []struct {
		svc         string
		count, port string
		n, p        int
	}{
		{localstack.Order, "order", "order-port", *orders, *orderPort},
		{localstack.Inventory, "inventory", "inventory-port", *inventories, *invPort},
		{localstack.Payment, "payment", "payment-port", *payments, *payPort},
	} {
		if set[f.count] {
			counts[f.svc] = f.n
		}
		if set[f.port] {
			ports[f.svc] = f.p
		}
	}
	switch *gateway {
	case "on", "auto":
	case "off":
		counts[localstack.Gateway] = 0
	default:
		return fmt.Errorf("-gateway: want on or off, got %q", *gateway)
	}

	cfg := localstack.Default(*root)
	cfg.DataDir, cfg.RunDir, cfg.BinDir = *dataDir, *runDir, *binDir
	cfg.Instances = map[string][]string{}
	for _, s := range list {
		n, ok := counts[s.Name]
		if !ok {
			n = s.DevInstances
		}
		if n == 0 {
			cfg.Skip = append(cfg.Skip, s.Name)
			continue
		}
		port, ok := ports[s.Name]
		if !ok {
			port = s.DevPort
		}
		cfg.Instances[s.Name] = localstack.Addrs(*host, port, n)
	}
	if *gatewayAddr != "" && !slices.Contains(cfg.Skip, localstack.Gateway) {
		if _, ok := servicelist.Find(list, localstack.Gateway); !ok {
			return errors.New("-gateway-addr: there is no services/gateway/service.yaml")
		}
		if counts[localstack.Gateway] > 1 {
			return errors.New("-gateway-addr: one address for several gateway instances")
		}
		cfg.Instances[localstack.Gateway] = []string{*gatewayAddr}
	}
	cfg.NATSAddr, cfg.KafkaAddr, cfg.KafkaPersist = *natsAddr, *kafkaAddr, *kafkaPersist
	cfg.Env = environ
	cfg.CertsDir, cfg.Plaintext = *certsDir, *plaintext
	cfg.OTLPEndpoint = *otlp
	if *infraEnv != "" {
		inf, err := localstack.ReadInfraEnv(*infraEnv)
		if err != nil {
			return err
		}
		inf.NacosNamespace, inf.DBPrefix = *nacosNS, *freshDBs
		cfg.Infra = &inf
	} else if *nacosNS != "" || *freshDBs != "" {
		return errors.New("-nacos-namespace and -db-prefix need -infra")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil)).With("component", "shopmesh-dev")
	if !*quiet {
		cfg.Console = stdout
	}
	if *readyTimeout > 0 {
		cfg.ReadyTimeout = *readyTimeout
	}
	if *stopTimeout > 0 {
		cfg.StopTimeout = *stopTimeout
	}
	return localstack.Run(ctx, cfg, stdout)
}

// parseCounts reads -instances: "name=N,..." with every name in the list and N ≥ 0.
func parseCounts(spec string, list []servicelist.Service) (map[string]int, error) {
	counts := map[string]int{}
	if strings.TrimSpace(spec) == "" {
		return counts, nil
	}
	for _, part := range strings.Split(spec, ",") {
		name, n, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("-instances: %q is not name=N", part)
		}
		if _, ok := servicelist.Find(list, name); !ok {
			return nil, fmt.Errorf("-instances: unknown service %q (the services are %s)", name, strings.Join(servicelist.Names(list), ", "))
		}
		if _, dup := counts[name]; dup {
			return nil, fmt.Errorf("-instances: %s given twice", name)
		}
		v, err := strconv.Atoi(n)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("-instances: %s=%s: want a count ≥ 0", name, n)
		}
		counts[name] = v
	}
	return counts, nil
}
