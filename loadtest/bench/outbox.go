package bench

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/shopmesh/shopmesh/loadtest/openloop"
	"github.com/shopmesh/shopmesh/loadtest/stats"
	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
	"github.com/shopmesh/shopmesh/pkg/platform/migrate"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// OutboxConfig says what the relay runs against. Empty DSN/Kafka/NATS start embedded ones (SQLite
// file, kfake, in-process nats-server with JetStream).
type OutboxConfig struct {
	PostgresURL string
	Kafka       []string
	NATSURL     string
	// KafkaSASL and NATSAuth authenticate the clients of the real Kafka and NATS (pkg/platform/kafkaauth,
	// config.NATS.Auth); nil: they do not. The embedded brokers never authenticate.
	KafkaSASL sasl.Mechanism
	NATSAuth  nats.Option
	// Events is the backlog drained for throughput; Rate × Duration events measure latency.
	Events   int
	Rate     float64
	Duration time.Duration
	// BatchSize is the relay's RelayConfig.BatchSize (0: the default, 100).
	BatchSize int
}

// OutboxResult is one (database, broker) pair.
type OutboxResult struct {
	Name       string
	Throughput float64 // events/s draining a backlog
	CPUPerEvt  time.Duration
	P50, P99   time.Duration
	Sent, Got  int
}

const benchTopic = "bench.outbox"

// Outbox measures the outbox relay: throughput draining a backlog of cfg.Events rows, then
// commit-to-consume latency with events committed at cfg.Rate (one transaction each, Notify after
// commit) and consumed by a broker consumer. It runs Kafka and JetStream publishers on SQLite and,
// with PostgresURL, on PostgreSQL.
func Outbox(ctx context.Context, cfg OutboxConfig, log io.Writer) ([]OutboxResult, error) {
	var cl Cleanup
	defer cl.Run()
	brokers, kafkaAuth := cfg.Kafka, cfg.KafkaSASL
	kname := "kafka"
	if len(brokers) == 0 {
		kafkaAuth = nil
		kc, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return nil, err
		}
		cl.Add(kc.Close)
		brokers, kname = kc.ListenAddrs(), "kfake"
	}
	natsURL, nname, natsAuth := cfg.NATSURL, "jetstream", cfg.NATSAuth
	if natsURL == "" {
		natsAuth = nil
		dir, err := os.MkdirTemp("", "shopmesh-bench-nats-")
		if err != nil {
			return nil, err
		}
		cl.Add(func() { _ = os.RemoveAll(dir) })
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
		if err != nil {
			return nil, err
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			return nil, errors.New("nats: not ready")
		}
		cl.Add(func() { ns.Shutdown(); ns.WaitForShutdown() })
		natsURL, nname = ns.ClientURL(), "jetstream-embedded"
	}

	type db struct{ name, dsn string }
	dbs := []db{}
	dir, err := os.MkdirTemp("", "shopmesh-bench-outbox-")
	if err != nil {
		return nil, err
	}
	cl.Add(func() { _ = os.RemoveAll(dir) })
	var results []OutboxResult
	for _, broker := range []string{kname, nname} {
		dbs = dbs[:0]
		dbs = append(dbs, db{"sqlite", "sqlite:" + filepath.Join(dir, broker+".db")})
		if cfg.PostgresURL != "" {
			dsn, drop, err := freshDatabase(ctx, cfg.PostgresURL, "bench_outbox_"+fmt.Sprint(os.Getpid())+"_"+fmt.Sprint(len(results)))
			if err != nil {
				return results, err
			}
			cl.Add(drop)
			dbs = append(dbs, db{"postgres", dsn})
		}
		for _, d := range dbs {
			r, err := outboxOne(ctx, cfg, d.name+"+"+broker, d.dsn, broker == kname, brokers, kafkaAuth, natsURL, natsAuth, log)
			if err != nil {
				return results, fmt.Errorf("%s+%s: %w", d.name, broker, err)
			}
			results = append(results, r)
		}
	}
	return results, nil
}

func freshDatabase(ctx context.Context, dsn, name string) (string, func(), error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", nil, err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		_ = conn.Close(ctx)
		return "", nil, err
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	return u.String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		_ = conn.Close(ctx)
	}, nil
}

func outboxOne(ctx context.Context, cfg OutboxConfig, name, dsn string, useKafka bool, brokers []string, kafkaAuth sasl.Mechanism,
	natsURL string, natsAuth nats.Option, log io.Writer) (OutboxResult, error) {
	res := OutboxResult{Name: name}
	d, err := sqldb.ParseDialect(dsn)
	if err != nil {
		return res, err
	}
	mig, err := outbox.Migrations(d)
	if err != nil {
		return res, err
	}
	if err := migrate.Up(ctx, dsn, mig, migrate.Options{Table: outbox.MigrationsTable}); err != nil {
		return res, fmt.Errorf("migrate: %w", err)
	}
	db, dialect, err := sqldb.Open(ctx, dsn, sqldb.Options{})
	if err != nil {
		return res, err
	}
	defer func() { _ = db.Close() }()
	topic := fmt.Sprintf("%s.%d", benchTopic, time.Now().UnixNano())

	var pub outbox.Publisher
	var consume func(ctx context.Context, got func(sent time.Time)) (func(), error)
	if useKafka {
		if err := outbox.EnsureTopics(ctx, brokers, kafkaAuth, outbox.Topic{Name: topic, Partitions: 1, ReplicationFactor: 1}); err != nil {
			return res, err
		}
		defer func() {
			// The topic is this run's own: remove it so repeated runs leave nothing on a real broker.
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: kafkaauth.Transport(kafkaAuth)}
			_, _ = c.DeleteTopics(dctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
		}()
		k := outbox.NewKafka(brokers, kafkaAuth)
		defer func() { _ = k.Close() }()
		pub = k
		consume = func(ctx context.Context, got func(time.Time)) (func(), error) {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Dialer: kafkaauth.Dialer(kafkaAuth), Topic: topic, Partition: 0, MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 20 * time.Millisecond})
			if err := r.SetOffset(kafka.LastOffset); err != nil {
				return nil, err
			}
			cctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					m, err := r.ReadMessage(cctx)
					if err != nil {
						return
					}
					if len(m.Value) >= 8 {
						got(time.Unix(0, int64(binary.BigEndian.Uint64(m.Value))))
					}
				}
			}()
			return func() { cancel(); <-done; _ = r.Close() }, nil
		}
	} else {
		var opts []nats.Option
		if natsAuth != nil {
			opts = append(opts, natsAuth)
		}
		nc, err := nats.Connect(natsURL, opts...)
		if err != nil {
			return res, err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return res, err
		}
		stream := fmt.Sprintf("BENCH_%d", time.Now().UnixNano())
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{topic}}); err != nil {
			return res, err
		}
		defer func() { _ = js.DeleteStream(context.Background(), stream) }()
		pub = outbox.NewJetStream(js)
		consume = func(ctx context.Context, got func(time.Time)) (func(), error) {
			c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
			if err != nil {
				return nil, err
			}
			cc, err := c.Consume(func(m jetstream.Msg) {
				if b := m.Data(); len(b) >= 8 {
					got(time.Unix(0, int64(binary.BigEndian.Uint64(b))))
				}
			})
			if err != nil {
				return nil, err
			}
			return cc.Stop, nil
		}
	}
	ob := outbox.New(dialect, nil)
	enqueue := func(ctx context.Context, tx *sql.Tx, i int) error {
		p := make([]byte, 64)
		binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
		_, err := ob.Enqueue(ctx, tx, outbox.Message{Topic: topic, Key: fmt.Sprintf("agg-%d", i%100), Payload: p})
		return err
	}

	// Throughput: a backlog of cfg.Events rows written before the relay starts.
	for i := 0; i < cfg.Events; i += 500 {
		err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error {
			for j := i; j < min(i+500, cfg.Events); j++ {
				if err := enqueue(ctx, tx, j); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("backlog: %w", err)
		}
	}
	relay, err := outbox.NewRelay(db, pub, slog.New(slog.DiscardHandler), nil, outbox.RelayConfig{BatchSize: cfg.BatchSize})
	if err != nil {
		return res, err
	}
	rctx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan struct{})
	cpu0, t0 := cpuNow(nil), time.Now()
	go func() { _ = relay.Run(rctx); close(relayDone) }()
	defer func() { stopRelay(); <-relayDone }()
	for {
		st, err := relay.Stats(ctx)
		if err != nil {
			return res, err
		}
		if st.Pending == 0 {
			break
		}
		if time.Since(t0) > 2*time.Minute {
			return res, fmt.Errorf("backlog not drained in 2 min (%d pending)", st.Pending)
		}
		time.Sleep(5 * time.Millisecond)
	}
	el := time.Since(t0)
	res.Throughput = float64(cfg.Events) / el.Seconds()
	res.CPUPerEvt = (cpuNow(nil) - cpu0) / time.Duration(max(1, cfg.Events))
	fmt.Fprintf(log, "  %-28s backlog %d drained in %v: %.0f events/s, %.1f µs CPU/event in this process (relay, plus broker/DB when embedded)\n",
		name, cfg.Events, el.Round(time.Millisecond), res.Throughput, float64(res.CPUPerEvt)/1e3)

	// Latency: one transaction per event at cfg.Rate, Notify after commit.
	var mu sync.Mutex
	var lats []time.Duration
	stop, err := consume(ctx, func(sent time.Time) {
		mu.Lock()
		lats = append(lats, time.Since(sent))
		mu.Unlock()
	})
	if err != nil {
		return res, err
	}
	time.Sleep(200 * time.Millisecond) // consumer positioned at the end
	for a := range (openloop.Schedule{Rate: cfg.Rate, Duration: cfg.Duration}).Arrivals(ctx) {
		if err := sqldb.InTx(ctx, db, func(tx *sql.Tx) error { return enqueue(ctx, tx, a.N) }); err != nil {
			stop()
			return res, err
		}
		relay.Notify()
		res.Sent++
	}
	if err := ctx.Err(); err != nil {
		stop()
		return res, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(lats)
		mu.Unlock()
		if n >= res.Sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lats)
	res.Got = len(lats)
	res.P50, res.P99 = stats.Percentile(lats, 50), stats.Percentile(lats, 99)
	fmt.Fprintf(log, "  %-28s commit-to-consume at %.0f/s: %d/%d received, p50 %.2f ms, p99 %.2f ms\n",
		name, cfg.Rate, res.Got, res.Sent, ms(res.P50), ms(res.P99))
	return res, nil
}
