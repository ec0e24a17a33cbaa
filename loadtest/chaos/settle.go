package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

// backlog is what still moves after the load stops.
type backlog struct {
	Pending, Compensating int   // orders PENDING / cancelled with compensation still to do
	Unsent                int   // outbox rows not yet published, every service with a database
	Lag                   int64 // Kafka consumer lag of the inventory and payment groups on the order topic
}

func (b backlog) zero() bool {
	return b.Pending == 0 && b.Compensating == 0 && b.Unsent == 0 && b.Lag == 0
}

func (b backlog) String() string {
	return fmt.Sprintf("%d pending, %d compensating, %d outbox rows unsent, consumer lag %d", b.Pending, b.Compensating, b.Unsent, b.Lag)
}

// readBacklog reads the backlog from the databases and Kafka. dbs maps each service with a database to
// its DSN (stack.json's infra.databases); every such service has an outbox.
func readBacklog(ctx context.Context, inf localstack.InfraEndpoints, auth sasl.Mechanism, dbs map[string]string) (backlog, error) {
	var b backlog
	q := func(svc, sql string, dst *int) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		dsn, ok := dbs[svc]
		if !ok {
			return fmt.Errorf("%s: no database in the stack", svc)
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return fmt.Errorf("%s database: %w", svc, err)
		}
		defer func() { _ = conn.Close(ctx) }()
		if err := conn.QueryRow(ctx, sql).Scan(dst); err != nil {
			return fmt.Errorf("%s: %w", svc, err)
		}
		return nil
	}
	var errs []error
	errs = append(errs, q(localstack.Order, `SELECT count(*) FROM orders WHERE status = 'PENDING'`, &b.Pending))
	errs = append(errs, q(localstack.Order, `SELECT count(*) FROM orders WHERE compensation_pending`, &b.Compensating))
	for _, svc := range slices.Sorted(maps.Keys(dbs)) {
		var n int
		errs = append(errs, q(svc, `SELECT count(*) FROM outbox WHERE sent_at IS NULL`, &n))
		b.Unsent += n
	}
	lag, err := groupLag(ctx, inf.KafkaBrokers, auth, "shopmesh.order.events", "inventory", "payment")
	errs = append(errs, err)
	b.Lag = lag
	return b, errors.Join(errs...)
}

// groupLag sums, over groups and the topic's partitions, the high watermark minus the committed offset.
func groupLag(ctx context.Context, brokers []string, auth sasl.Mechanism, topic string, groups ...string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: kafkaauth.Transport(auth)}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, fmt.Errorf("kafka metadata: %w", err)
	}
	var parts []kafka.OffsetRequest
	var ids []int
	for _, t := range md.Topics {
		for _, p := range t.Partitions {
			parts = append(parts, kafka.LastOffsetOf(p.ID))
			ids = append(ids, p.ID)
		}
	}
	if len(parts) == 0 {
		return 0, nil
	}
	lo, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: parts}})
	if err != nil {
		return 0, fmt.Errorf("kafka list offsets: %w", err)
	}
	end := map[int]int64{}
	for _, p := range lo.Topics[topic] {
		end[p.Partition] = p.LastOffset
	}
	var lag int64
	for _, g := range groups {
		of, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: g, Topics: map[string][]int{topic: ids}})
		if err != nil {
			return 0, fmt.Errorf("kafka offsets of group %s: %w", g, err)
		}
		for _, p := range of.Topics[topic] {
			committed := max(p.CommittedOffset, 0)
			if d := end[p.Partition] - committed; d > 0 {
				lag += d
			}
		}
	}
	return lag, nil
}

// kafkaHasKey reports whether topic holds a message with key.
func kafkaHasKey(ctx context.Context, brokers []string, auth sasl.Mechanism, topic, key string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second, Transport: kafkaauth.Transport(auth)}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return false, err
	}
	for _, t := range md.Topics {
		if t.Error != nil {
			return false, t.Error
		}
		for _, p := range t.Partitions {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Dialer: kafkaauth.Dialer(auth), Topic: topic, Partition: p.ID, MaxWait: 500 * time.Millisecond})
			found, err := scanPartition(ctx, r, key)
			_ = r.Close()
			if err != nil || found {
				return found, err
			}
		}
	}
	return false, nil
}

func scanPartition(ctx context.Context, r *kafka.Reader, key string) (bool, error) {
	hw, err := r.ReadLag(ctx)
	if err != nil {
		return false, err
	}
	for n := int64(0); n < hw; n++ {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return false, err
		}
		if string(m.Key) == key {
			return true, nil
		}
	}
	return false, nil
}

// goroutines reads go_goroutines from an admin /metrics endpoint.
func goroutines(ctx context.Context, admin string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("%s/metrics: no go_goroutines", admin)
}
