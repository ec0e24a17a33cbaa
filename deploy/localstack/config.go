// Package localstack runs the whole shopmesh suite on one machine without installs or containers: it
// hosts an in-process NATS server (JetStream on) and a Kafka-protocol broker (kfake), builds the
// binaries of every service listed in services/*/service.yaml (deploy/servicelist), starts every
// instance as a child process on static loopback addresses with SQLite files under the data directory,
// waits until each one reports SERVING, writes stack.json, and stops everything in dependency order.
// A child's environment comes from its service's entry alone (kind, dev ports, database, calls,
// kafka, nats), so a service added to the list runs with no edit here. `make run` (cmd/shopmesh-dev)
// and the component tests use it.
// With Config.Infra it runs the same processes on the real servers of deploy/infra (`make run
// INFRA=1`), and Stack.Kill, StopInstance and StartInstance crash, drain and restart single instances
// for the fault campaign (loadtest/chaos).
package localstack

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The names of the four services of the reference suite, for callers (the load and chaos tools) that
// address a service by name. The stack itself runs whatever services/*/service.yaml lists
// (deploy/servicelist) and builds every child's environment from that entry alone.
const (
	Gateway   = "gateway"
	Order     = "order"
	Inventory = "inventory"
	Payment   = "payment"
)

// Config describes one stack. Addresses are "host:port"; port 0 picks a free loopback port before the
// children start, so every address is known (and written to stack.json) up front.
type Config struct {
	// Root is the repository root (the directory holding go.work and services/).
	Root string
	// DataDir holds <service>.db (one SQLite file per service, shared by its instances), nats/ and,
	// with KafkaPersist, kafka/. Default Root/.data.
	DataDir string
	// RunDir receives stack.json and logs/<service>-<i>.log. Default Root/.run.
	RunDir string
	// BinDir receives the built service binaries. Default Root/bin.
	BinDir string
	// SkipBuild uses the binaries already in BinDir (a campaign that starts many stacks builds once).
	SkipBuild bool

	// Instances maps a service of the list (services/<name>/service.yaml) to the listen addresses of its
	// instances, one per instance: gRPC for kind grpc, HTTP for kind http. A service the map does not
	// name runs dev_instances instances on 127.0.0.1:dev_port, dev_port+1, ... (free ports with
	// FreePorts).
	Instances map[string][]string
	// FreePorts gives the services Instances does not name free loopback ports instead of their dev
	// ports, so a test or a load run does not collide with `make run` (or a service added later).
	FreePorts bool
	// Skip names services of the list not to run (`-gateway off`); no running service may call one.
	Skip []string

	// NATSAddr and KafkaAddr are where the embedded brokers listen (Kafka always on 127.0.0.1).
	NATSAddr  string
	KafkaAddr string
	// KafkaPersist keeps Kafka's log under DataDir/kafka (kfake's DataDir); otherwise the broker keeps
	// its data in memory and a restart starts with empty topics.
	KafkaPersist bool

	// Infra, when set, runs the stack on real servers (`make run INFRA=1`): PostgreSQL (a database per
	// service), Kafka, NATS, Nacos (registration, discovery, config center) and Jaeger; NATSAddr,
	// KafkaAddr, KafkaPersist and the SQLite files are then unused.
	Infra *InfraEndpoints

	// OTLPEndpoint, when set, turns tracing on in every child (<P>_TELEMETRY_OTLP_ENDPOINT, plaintext
	// OTLP/gRPC, every trace sampled), e.g. Jaeger's 127.0.0.1:4317.
	OTLPEndpoint string

	// CertsDir holds the dev CA bundle (ca.pem) and one mTLS certificate per service, the layout of
	// `make certs`; missing, invalid or expiring ones are issued at start (Go code, no openssl). Every
	// child gets <P>_TLS_CA_FILE/_CERT_FILE/_KEY_FILE from it. Default RunDir/certs.
	CertsDir string
	// Plaintext turns mTLS between the services off (debugging only; the policy is then not enforced).
	Plaintext bool

	// Env is the base environment of every child (main passes os.Environ()); the stack's own
	// variables are appended and win. ServiceEnv adds "KEY=VALUE" entries per service.
	Env        []string
	ServiceEnv map[string][]string

	// Console, when set, receives every child's output line by line, prefixed with "[inventory-1] ".
	// Every child's output also goes to RunDir/logs/<service>-<i>.log.
	Console io.Writer
	// Logger reports what the stack does (start, exit of a child, stop).
	Logger *slog.Logger

	// ReadyTimeout bounds the wait for one instance to report SERVING.
	ReadyTimeout time.Duration
	// StopTimeout is how long a child has after SIGTERM before it gets SIGKILL.
	StopTimeout time.Duration
}

// Default returns the configuration of `make run` for the repository at root: every service of
// services/*/service.yaml with its dev_instances on 127.0.0.1 from its dev_port upwards (today order on
// :50051, inventory on :50061/:50062, payment on :50071/:50072, the gateway on :8080), NATS on
// 127.0.0.1:4222 and Kafka on 127.0.0.1:9092.
func Default(root string) Config {
	return Config{
		Root:         root,
		NATSAddr:     "127.0.0.1:4222",
		KafkaAddr:    "127.0.0.1:9092",
		ReadyTimeout: 90 * time.Second,
		StopTimeout:  15 * time.Second,
	}
}

// Addrs returns n addresses on host from port upwards; port 0 gives n "host:0" (free ports).
func Addrs(host string, port, n int) []string {
	out := make([]string, n)
	for i := range n {
		p := port
		if port != 0 {
			p = port + i
		}
		out[i] = net.JoinHostPort(host, fmt.Sprint(p))
	}
	return out
}

// FindRoot walks up from dir to the directory holding go.work.
func FindRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work in %s or above: run from the repository", dir)
		}
	}
}

// withDefaults fills the directories and bounds, and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.Root == "" {
		return c, errors.New("root: must be set")
	}
	root, err := filepath.Abs(c.Root)
	if err != nil {
		return c, fmt.Errorf("root: %w", err)
	}
	c.Root = root
	for _, d := range []struct {
		dst  *string
		name string
	}{{&c.DataDir, ".data"}, {&c.RunDir, ".run"}, {&c.BinDir, "bin"}} {
		if *d.dst == "" {
			*d.dst = filepath.Join(root, d.name)
		}
		if *d.dst, err = filepath.Abs(*d.dst); err != nil {
			return c, err
		}
	}
	if c.CertsDir == "" {
		c.CertsDir = filepath.Join(c.RunDir, "certs")
	}
	if c.CertsDir, err = filepath.Abs(c.CertsDir); err != nil {
		return c, err
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 90 * time.Second
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = 15 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if c.Infra != nil {
		if err := c.Infra.validate(); err != nil {
			errs = append(errs, fmt.Errorf("infra: %w", err))
		}
		inf := *c.Infra
		c.Infra = &inf
		if c.OTLPEndpoint == "" {
			c.OTLPEndpoint = inf.OTLPEndpoint
		}
	} else if c.NATSAddr == "" || c.KafkaAddr == "" {
		errs = append(errs, errors.New("nats_addr, kafka_addr: must be set (port 0 picks one)"))
	}
	return c, errors.Join(errs...)
}
