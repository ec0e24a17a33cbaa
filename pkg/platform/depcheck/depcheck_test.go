package depcheck_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopmesh/shopmesh/pkg/platform/depcheck"
)

func check(t *testing.T, f func(context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	return f(ctx)
}

func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

func TestKafka(t *testing.T) {
	t.Parallel()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	brokers := c.ListenAddrs()
	dead := deadAddr(t)
	if err := check(t, depcheck.Kafka(append([]string{dead}, brokers...), nil)); err != nil {
		t.Fatalf("one broker up: %v", err)
	}
	c.Close()
	if err := check(t, depcheck.Kafka(append([]string{dead}, brokers...), nil)); err == nil {
		t.Fatal("every broker down, and the check passed")
	}
	if err := check(t, depcheck.Kafka(nil, nil)); err == nil {
		t.Fatal("no broker, and the check passed")
	}
}

func TestNATS(t *testing.T) {
	t.Parallel()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := check(t, depcheck.NATS(nc)); err != nil {
		t.Fatalf("server up: %v", err)
	}
	s.Shutdown()
	s.WaitForShutdown()
	if err := check(t, depcheck.NATS(nc)); err == nil {
		t.Fatal("server down, and the check passed")
	}
}
