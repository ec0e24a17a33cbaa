package bench_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopmesh/shopmesh/loadtest"
	"github.com/shopmesh/shopmesh/loadtest/bench"
)

// TestMain lets the test binary be the mTLS handshake case's server process, as cmd/bench is.
func TestMain(m *testing.M) {
	if dir := os.Getenv(bench.HandshakeServerEnv); dir != "" {
		if err := bench.ServeHandshakes(context.Background(), dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A benchmark line benchstat accepts: name with -GOMAXPROCS, iterations, then value/unit pairs.
var benchLine = regexp.MustCompile(`^Benchmark\S+-\d+\t\d+(\t[0-9.]+ [a-z0-9/-]+)+$`)

// TestChainCasesWriteBenchstatFiles runs the chain and mTLS comparisons for a moment over real loopback
// servers and checks every variant answered without errors and the files are in Go benchmark format,
// one per variant with the same benchmark names. Figures are logged, not asserted.
func TestChainCasesWriteBenchstatFiles(t *testing.T) {
	var cl bench.Cleanup
	t.Cleanup(cl.Run)
	chain, err := bench.ChainCases(t.Context(), &cl, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	tls, err := bench.MTLSCases(t.Context(), &cl)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := bench.Rounds{N: 2, Each: 100 * time.Millisecond, Warmup: 50 * time.Millisecond}
	var outs []bench.Outcome
	for _, c := range append(chain, tls...) {
		o := bench.RunCase(t.Context(), c, r, nil)
		outs = append(outs, o)
		for _, v := range o.Order {
			sts := o.Stats[v]
			if len(sts) != r.N {
				t.Fatalf("%s/%s: %d rounds, want %d", c.Name, v, len(sts), r.N)
			}
			for _, st := range sts {
				if st.Ops == 0 || st.Errors != 0 || st.CPU <= 0 || st.P50 > st.P99 {
					t.Errorf("%s/%s: %+v", c.Name, v, st)
				}
			}
		}
		paths, err := bench.AppendFiles(dir, bench.FileName(c.Name), o)
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) != len(c.Variants) {
			t.Errorf("%s: %d files for %d variants", c.Name, len(paths), len(c.Variants))
		}
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var lines int
			for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
				if strings.HasPrefix(l, "Benchmark") {
					lines++
					if !benchLine.MatchString(l) || !strings.HasPrefix(l, "Benchmark"+c.Name+"-") {
						t.Errorf("%s: not a benchmark line for %s: %q", filepath.Base(p), c.Name, l)
					}
				}
			}
			if lines != r.N || !strings.HasPrefix(string(data), "goos: ") {
				t.Errorf("%s: %d result lines (want %d) or no header", filepath.Base(p), lines, r.N)
			}
		}
	}
	var sum strings.Builder
	bench.WriteSummary(&sum, outs)
	t.Log("\n" + sum.String())
}

// TestOutboxEmbedded drains a small backlog through the relay to kfake and embedded JetStream and
// measures commit-to-consume; every committed event must arrive.
func TestOutboxEmbedded(t *testing.T) {
	var log strings.Builder
	rs, err := bench.Outbox(t.Context(), bench.OutboxConfig{Events: 500, Rate: 100, Duration: time.Second}, &log)
	t.Log("\n" + log.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d results, want kfake and jetstream", len(rs))
	}
	for _, r := range rs {
		if r.Throughput <= 0 || r.Sent == 0 || r.Got != r.Sent || r.P50 > r.P99 {
			t.Errorf("%s: %+v", r.Name, r)
		}
	}
}

// TestOutboxAuthenticatingBrokers runs the outbox-real case against a Kafka that requires SASL
// SCRAM-SHA-512 and a NATS server with users, with the credentials taken from KAFKA_USERNAME/
// KAFKA_PASSWORD and NATS_USER/NATS_PASSWORD as the bench command does: every committed event arrives
// through both; without the credentials the brokers refuse the case.
func TestOutboxAuthenticatingBrokers(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "admin", "kafka-secret"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true, Users: []*server.User{{Username: "admin", Password: "nats-secret"}}})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats: not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	env := map[string]string{"KAFKA_USERNAME": "admin", "KAFKA_PASSWORD": "kafka-secret", "NATS_USER": "admin", "NATS_PASSWORD": "nats-secret"}
	auth, err := loadtest.ReadBrokerAuth(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	cfg := bench.OutboxConfig{Kafka: cluster.ListenAddrs(), NATSURL: ns.ClientURL(), Events: 200, Rate: 100, Duration: time.Second}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err = bench.Outbox(ctx, cfg, io.Discard)
	if err == nil {
		t.Fatal("the outbox case ran on authenticating brokers without credentials")
	}
	t.Logf("without credentials: %v", err)

	cfg.KafkaSASL, cfg.NATSAuth = auth.Kafka, auth.NATS
	var log strings.Builder
	rs, err := bench.Outbox(t.Context(), cfg, &log)
	t.Log("\n" + log.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d results, want kafka and jetstream", len(rs))
	}
	for _, r := range rs {
		if r.Sent == 0 || r.Got != r.Sent {
			t.Errorf("%s: %d of %d events received", r.Name, r.Got, r.Sent)
		}
	}
}
