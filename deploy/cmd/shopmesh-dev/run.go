package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/shopmesh/shopmesh/deploy/localstack"
)

// run parses the flags, then runs the stack until ctx ends. environ is the children's base environment.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("shopmesh-dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		root         = fs.String("root", "", "repository root (default: the directory holding go.work, found from the working directory up)")
		dataDir      = fs.String("data", "", "data directory: <service>.db, nats/ (default <root>/.data)")
		runDir       = fs.String("run-dir", "", "stack.json and logs/ (default <root>/.run)")
		binDir       = fs.String("bin", "", "where the service binaries are built (default <root>/bin)")
		host         = fs.String("host", "127.0.0.1", "host the gRPC services listen on")
		orders       = fs.Int("order", 1, "order instances")
		inventories  = fs.Int("inventory", 2, "inventory instances")
		payments     = fs.Int("payment", 2, "payment instances")
		orderPort    = fs.Int("order-port", 50051, "first order port (instance i listens on port+i-1; 0 picks free ports)")
		invPort      = fs.Int("inventory-port", 50061, "first inventory port")
		payPort      = fs.Int("payment-port", 50071, "first payment port")
		gateway      = fs.String("gateway", string(localstack.GatewayAuto), "run the gateway: auto (when it exists and builds), on, off")
		gatewayAddr  = fs.String("gateway-addr", "127.0.0.1:8080", "gateway HTTP address")
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
		freshDBs     = fs.String("db-prefix", "", "with -infra: create fresh databases <prefix>_<service> (dropped at exit) instead of using order_svc, inventory_svc, payment_svc")
		otlp         = fs.String("otlp", "", "OTLP/gRPC endpoint (e.g. Jaeger's 127.0.0.1:4317): every service traces every request there; default off")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
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
	for _, n := range []int{*orders, *inventories, *payments} {
		if n < 1 {
			return errors.New("-order, -inventory and -payment need at least 1 instance each")
		}
	}

	cfg := localstack.Default(*root)
	cfg.DataDir, cfg.RunDir, cfg.BinDir = *dataDir, *runDir, *binDir
	cfg.Order = localstack.Addrs(*host, *orderPort, *orders)
	cfg.Inventory = localstack.Addrs(*host, *invPort, *inventories)
	cfg.Payment = localstack.Addrs(*host, *payPort, *payments)
	cfg.Gateway, cfg.GatewayHTTP = localstack.GatewayMode(*gateway), *gatewayAddr
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
