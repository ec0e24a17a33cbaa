package localstack

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"
)

// brokers are the in-process NATS server and Kafka-protocol broker the children connect to.
type brokers struct {
	nats  *server.Server
	kafka *kfake.Cluster
}

// startBrokers starts NATS (JetStream stored under dataDir/nats) on natsAddr and kfake on kafkaAddr's
// port (kfake always listens on 127.0.0.1); port 0 picks a free one.
func startBrokers(natsAddr, kafkaAddr, dataDir string, kafkaPersist bool) (*brokers, error) {
	host, port, err := splitPort(natsAddr)
	if err != nil {
		return nil, fmt.Errorf("nats_addr: %w", err)
	}
	if port == 0 {
		port = -1 // nats-server: -1 is a random port, 0 would be 4222
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "shopmesh-dev", Host: host, Port: port, JetStream: true,
		StoreDir: filepath.Join(dataDir, "nats"), NoLog: true, NoSigs: true,
	})
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("nats: not accepting connections on %s within 15s", natsAddr)
	}

	_, kport, err := splitPort(kafkaAddr)
	if err != nil {
		ns.Shutdown()
		return nil, fmt.Errorf("kafka_addr: %w", err)
	}
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	if kport != 0 {
		opts = append(opts, kfake.Ports(kport))
	}
	if kafkaPersist {
		opts = append(opts, kfake.DataDir(filepath.Join(dataDir, "kafka")))
	}
	kc, err := kfake.NewCluster(opts...)
	if err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("kafka (kfake): %w", err)
	}
	return &brokers{nats: ns, kafka: kc}, nil
}

func (b *brokers) natsURL() string { return b.nats.ClientURL() }

func (b *brokers) kafkaAddrs() []string { return b.kafka.ListenAddrs() }

func (b *brokers) close() {
	b.kafka.Close()
	b.nats.Shutdown()
	b.nats.WaitForShutdown()
}

func splitPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", addr)
	}
	return host, port, nil
}

// resolvePorts checks that every fixed address is free (so a taken port fails before anything starts,
// naming its owner in the stack) and replaces port 0 by a free port. All listeners stay open until every
// address is resolved, so no two picks collide. A picked port could in principle be taken by someone
// else before the child binds it; the child would then fail its start, clearly.
func resolvePorts(names []string, addrs []*string) error {
	var open []net.Listener
	defer func() {
		for _, l := range open {
			_ = l.Close()
		}
	}()
	for i, a := range addrs {
		host, port, err := splitPort(*a)
		if err != nil {
			return fmt.Errorf("%s: %w", names[i], err)
		}
		l, err := net.Listen("tcp", *a) //nolint:noctx // a probe: the listener only reserves the port until the brokers start
		if err != nil {
			return fmt.Errorf("%s: address %s is not available (another stack or server running?): %w", names[i], *a, err)
		}
		open = append(open, l)
		if port == 0 {
			*a = net.JoinHostPort(host, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
		}
	}
	return nil
}
