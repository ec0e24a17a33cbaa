package config_test

import (
	"strings"
	"testing"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
)

// load reads the configuration from env the way the service command does, with INVENTORY_PROFILE=dev unless
// env sets it (a process needs one).
func load(env map[string]string) (config.Config, error) {
	return platformcfg.Load[config.Config]("INVENTORY", func(k string) (string, bool) {
		if _, set := env["INVENTORY_PROFILE"]; !set && k == "INVENTORY_PROFILE" {
			return "dev", true
		}
		v, ok := env[k]
		return v, ok
	}, config.Default)
}

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string
		check   func(t *testing.T, c config.Config)
	}{
		{"dev defaults", map[string]string{}, nil, func(t *testing.T, c config.Config) {
			if !c.Seed || c.DSN == "" || c.SeedProducts != 24 || c.SeedStock != 10_000 || c.Service != "inventory" {
				t.Errorf("dev = %+v", c)
			}
			// Order events in batches of up to the platform's default (one transaction per batch).
			if c.ConsumerMaxBatchOption() != 100 {
				t.Errorf("consumer batch %d by default, want 100", c.ConsumerMaxBatchOption())
			}
		}},
		{"order events one at a time on request", map[string]string{"INVENTORY_CONSUMER_MAX_BATCH": "1"}, nil, func(t *testing.T, c config.Config) {
			if c.ConsumerMaxBatchOption() != 1 {
				t.Errorf("consumer batch %d, want INVENTORY_CONSUMER_MAX_BATCH's 1", c.ConsumerMaxBatchOption())
			}
		}},
		{"shared broker variables", map[string]string{
			"INVENTORY_PROFILE": "test", "INVENTORY_DSN": "sqlite:x.db", "KAFKA_BROKERS": "a:1,b:2", "NATS_URL": "nats://n:4222",
		}, nil, func(t *testing.T, c config.Config) {
			if c.Seed || len(c.KafkaBrokers) != 2 || c.NatsURL != "nats://n:4222" || c.DSN != "sqlite:x.db" {
				t.Errorf("test = %+v", c)
			}
		}},
		{"own variables win", map[string]string{
			"INVENTORY_PROFILE": "test", "INVENTORY_DSN": "sqlite:x.db", "KAFKA_BROKERS": "a:1", "INVENTORY_KAFKA_BROKERS": "c:3",
			"NATS_URL": "nats://n:4222", "INVENTORY_NATS_URL": "nats://own:4222",
		}, nil, func(t *testing.T, c config.Config) {
			if len(c.KafkaBrokers) != 1 || c.KafkaBrokers[0] != "c:3" || c.NatsURL != "nats://own:4222" {
				t.Errorf("brokers = %v, nats = %s", c.KafkaBrokers, c.NatsURL)
			}
		}},
		{"own settings", map[string]string{
			"INVENTORY_SEED_PRODUCTS": "3", "INVENTORY_SEED_STOCK": "7", "INVENTORY_TOPIC_PARTITIONS": "2",
			"INVENTORY_RELAY_POLL_INTERVAL": "50ms", "INVENTORY_CONSUMER_COMMIT_INTERVAL": "0s", "INVENTORY_INBOX_RETENTION": "48h",
		}, nil, func(t *testing.T, c config.Config) {
			if c.SeedProducts != 3 || c.SeedStock != 7 || c.TopicPartitions != 2 || c.RelayPollInterval.String() != "50ms" ||
				c.ConsumerCommitInterval != 0 || c.InboxRetention.String() != "48h0m0s" {
				t.Errorf("settings = %+v", c)
			}
		}},
		{"test needs endpoints", map[string]string{"INVENTORY_PROFILE": "test"},
			[]string{"INVENTORY_DSN", "INVENTORY_KAFKA_BROKERS or KAFKA_BROKERS", "INVENTORY_NATS_URL or NATS_URL"}, nil},
		{"bad seed size", map[string]string{"INVENTORY_SEED_PRODUCTS": "0"}, []string{"INVENTORY_SEED_PRODUCTS"}, nil},
		{"bad partitions", map[string]string{"INVENTORY_TOPIC_PARTITIONS": "0"}, []string{"INVENTORY_TOPIC_PARTITIONS"}, nil},
		{"bad duration", map[string]string{"INVENTORY_RELAY_POLL_INTERVAL": "soon"}, []string{"INVENTORY_RELAY_POLL_INTERVAL"}, nil},
		{"zero poll", map[string]string{"INVENTORY_RELAY_POLL_INTERVAL": "0s"}, []string{"INVENTORY_RELAY_POLL_INTERVAL"}, nil},
		{"shared defaults", map[string]string{}, nil, func(t *testing.T, c config.Config) {
			if c.TopicPartitions != 6 || c.RelayPollInterval.String() != "200ms" || c.ConsumerCommitInterval.String() != "1s" ||
				c.InboxRetention.String() != "168h0m0s" {
				t.Errorf("outbox %+v consumer %+v", c.Outbox, c.Consumer)
			}
		}},
		// A negative commit interval would make the Kafka reader's ticker panic; a negative retention means nothing.
		{"negative consumer durations", map[string]string{"INVENTORY_CONSUMER_COMMIT_INTERVAL": "-1s", "INVENTORY_INBOX_RETENTION": "-1h"},
			[]string{"consumer_commit_interval (INVENTORY_CONSUMER_COMMIT_INTERVAL)", "inbox_retention (INVENTORY_INBOX_RETENTION)"}, nil},
		// A DSN of no known scheme fails at start, not at the first open.
		{"unknown DSN scheme", map[string]string{"INVENTORY_DSN": "mysql://h/inventory"}, []string{"dsn (INVENTORY_DSN): sqldb: unknown DSN scheme"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tt.env)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want one naming %v", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("err = %v, want it to name %s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}
