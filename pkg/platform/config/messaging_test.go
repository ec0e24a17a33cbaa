package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

func TestDatabaseValidate(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{"postgres://u:p@h:5432/db?sslmode=disable", "postgresql://h/db", "sqlite:x.db", "file:x.db"} {
		if err := (config.Database{DSN: dsn}).Validate(); err != nil {
			t.Errorf("%s: %v", dsn, err)
		}
	}
	for _, tt := range []struct{ dsn, want string }{
		{"", "dsn: must be set (postgres://... or sqlite:<file>)"},
		{"mysql://root:hunter2@h/db", "dsn: "},
		{"host=h user=u password=hunter2", "dsn: "},
	} {
		err := config.Database{DSN: tt.dsn}.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want it to start with %q", tt.dsn, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%q: the error shows the password: %v", tt.dsn, err)
		}
		if tt.dsn != "" && (!errors.Is(err, sqldb.ErrUnknownDSN) || !strings.Contains(err.Error(), "postgres://") ||
			!strings.Contains(err.Error(), "sqlite:")) {
			t.Errorf("%q: err = %v, want sqldb.ErrUnknownDSN naming postgres:// and sqlite:", tt.dsn, err)
		}
	}
}

func TestBrokersValidate(t *testing.T) {
	t.Parallel()
	ok := config.Brokers{Kafka: config.Kafka{KafkaBrokers: []string{"k:9092"}}, NATS: config.NATS{NatsURL: "nats://n:4222"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (config.Brokers{}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "kafka_brokers: at least one host:port is needed") || !strings.Contains(err.Error(), "nats_url: must be set") {
		t.Errorf("empty brokers: err = %v, want both named", err)
	}
	if err := (config.Kafka{}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "kafka_brokers: ") {
		t.Errorf("empty Kafka: err = %v", err)
	}
	if err := (config.NATS{}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "nats_url: ") {
		t.Errorf("empty NATS: err = %v", err)
	}
}

func TestOutboxAndConsumerValidate(t *testing.T) {
	t.Parallel()
	if err := config.DefaultOutbox().Validate(); err != nil {
		t.Errorf("DefaultOutbox: %v", err)
	}
	if err := config.DefaultConsumer().Validate(); err != nil {
		t.Errorf("DefaultConsumer: %v", err)
	}
	// Zero means "synchronous commits" and "the inbox's default retention".
	if err := (config.Consumer{}).Validate(); err != nil {
		t.Errorf("zero Consumer: %v", err)
	}
	for _, tt := range []struct {
		name string
		err  error
		want []string
	}{
		{"zero outbox", config.Outbox{}.Validate(), []string{"relay_poll_interval: must be > 0", "topic_partitions: must be > 0"}},
		{"negative poll", config.Outbox{RelayPollInterval: -time.Second, TopicPartitions: 1}.Validate(), []string{"relay_poll_interval: "}},
		{"negative min interval", config.Outbox{RelayPollInterval: time.Second, RelayMinInterval: -time.Millisecond, TopicPartitions: 1}.Validate(),
			[]string{"relay_min_interval: must be >= 0"}},
		{"negative consumer", config.Consumer{ConsumerCommitInterval: -time.Second, ConsumerMaxBatch: -1, InboxRetention: -time.Hour}.Validate(),
			[]string{"consumer_commit_interval: must be >= 0", "consumer_max_batch: must be between 0 and 10000", "inbox_retention: must be >= 0"}},
		{"huge consumer batch", config.Consumer{ConsumerMaxBatch: 10001}.Validate(), []string{"consumer_max_batch: must be between 0 and 10000"}},
	} {
		if tt.err == nil {
			t.Errorf("%s: no error", tt.name)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(tt.err.Error(), w) {
				t.Errorf("%s: err = %v, want %q", tt.name, tt.err, w)
			}
		}
	}
}

// RelayMinInterval's 0 ("each batch at once") is the relay's "none" (negative): the relay's own 0 is
// its default.
func TestRelayMinIntervalOption(t *testing.T) {
	t.Parallel()
	if got := (config.Outbox{}).RelayMinIntervalOption(); got >= 0 {
		t.Errorf("0 → %v, want a negative value (no minimum)", got)
	}
	if got := config.DefaultOutbox().RelayMinIntervalOption(); got != 25*time.Millisecond {
		t.Errorf("default → %v, want 25ms", got)
	}
}

// ConsumerMaxBatch's 0 ("one at a time") is the consumer's 1: the consumer's own 0 is its default.
func TestConsumerMaxBatchOption(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ set, want int }{{0, 1}, {1, 1}, {100, 100}} {
		if got := (config.Consumer{ConsumerMaxBatch: tt.set}).ConsumerMaxBatchOption(); got != tt.want {
			t.Errorf("%d → %d, want %d", tt.set, got, tt.want)
		}
	}
}

// relay is a service config embedding every shared setting, validated with their own Validates.
type relay struct {
	config.Config
	config.Database
	config.Brokers
	config.Outbox
	config.Consumer
}

func (r relay) Validate() error {
	return errors.Join(r.Config.Validate(), r.Database.Validate(), r.Brokers.Validate(), r.Outbox.Validate(), r.Consumer.Validate())
}

func relayDefaults(p config.Profile) relay {
	r := relay{Config: config.Default(p), Outbox: config.DefaultOutbox(), Consumer: config.DefaultConsumer()}
	r.Service = "shop"
	return r
}

// Load names the variable of each shared setting that is wrong, and -h lists them all with help.
func TestSharedSettingsThroughLoad(t *testing.T) {
	t.Parallel()
	good := map[string]string{"SHOP_PROFILE": "dev", "SHOP_DSN": "sqlite:shop.db", "KAFKA_BROKERS": "k:9092", "NATS_URL": "nats://n:4222"}
	r, err := config.Load[relay]("SHOP", envLookup(good), relayDefaults)
	if err != nil {
		t.Fatal(err)
	}
	if r.RelayPollInterval != 200*time.Millisecond || r.TopicPartitions != 3 || r.ConsumerCommitInterval != time.Second ||
		r.ConsumerMaxBatch != 100 || r.InboxRetention != 7*24*time.Hour {
		t.Errorf("defaults %+v %+v", r.Outbox, r.Consumer)
	}

	_, err = config.Load[relay]("SHOP", envLookup(map[string]string{"SHOP_PROFILE": "dev", "SHOP_DSN": "mysql://h/db", "SHOP_RELAY_POLL_INTERVAL": "0s",
		"SHOP_TOPIC_PARTITIONS": "0", "SHOP_CONSUMER_COMMIT_INTERVAL": "-1s", "SHOP_CONSUMER_MAX_BATCH": "-1", "SHOP_INBOX_RETENTION": "-1h"}), relayDefaults)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"dsn (SHOP_DSN): ", "kafka_brokers (SHOP_KAFKA_BROKERS or KAFKA_BROKERS): ",
		"nats_url (SHOP_NATS_URL or NATS_URL): ", "relay_poll_interval (SHOP_RELAY_POLL_INTERVAL): ",
		"topic_partitions (SHOP_TOPIC_PARTITIONS): ", "consumer_commit_interval (SHOP_CONSUMER_COMMIT_INTERVAL): ",
		"consumer_max_batch (SHOP_CONSUMER_MAX_BATCH): ", "inbox_retention (SHOP_INBOX_RETENTION): "} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v\nwant it to name %q", err, w)
		}
	}

	vars := map[string]config.Var{}
	for _, v := range config.Vars(&r, "SHOP") {
		vars[v.Name] = v
	}
	for name, def := range map[string]string{"SHOP_DSN": "", "SHOP_KAFKA_BROKERS": "k:9092", "SHOP_NATS_URL": "nats://n:4222",
		"SHOP_RELAY_POLL_INTERVAL": "200ms", "SHOP_TOPIC_PARTITIONS": "3", "SHOP_CONSUMER_COMMIT_INTERVAL": "1s",
		"SHOP_CONSUMER_MAX_BATCH": "100", "SHOP_INBOX_RETENTION": "168h"} {
		v, ok := vars[name]
		switch {
		case !ok:
			t.Errorf("Vars lacks %s", name)
		case strings.TrimSpace(v.Help) == "":
			t.Errorf("%s has no help", name)
		case name != "SHOP_DSN" && v.Default != def:
			t.Errorf("%s: default %q, want %q", name, v.Default, def)
		}
	}
}
