package config_test

import (
	"strings"
	"testing"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/services/payment/internal/config"
)

// load reads the configuration from env the way the service command does, with PAYMENT_PROFILE=dev unless
// env sets it (a process needs one).
func load(env map[string]string) (config.Config, error) {
	return platformcfg.Load[config.Config]("PAYMENT", func(k string) (string, bool) {
		if _, set := env["PAYMENT_PROFILE"]; !set && k == "PAYMENT_PROFILE" {
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
		wantErr string
		check   func(t *testing.T, c config.Config)
	}{
		{name: "dev defaults seed a local file", env: map[string]string{}, check: func(t *testing.T, c config.Config) {
			if !c.Seed || c.DSN != "sqlite:payment.db" || c.Service != "payment" || c.ConsumerGroup != "payment" ||
				c.LogLevel != "info" || len(c.KafkaBrokers) != 1 || c.KafkaBrokers[0] != "127.0.0.1:9092" {
				t.Errorf("dev = %+v", c)
			}
		}},
		{name: "overrides", env: map[string]string{"PAYMENT_PROFILE": "k8s", "PAYMENT_DSN": "postgres://db/payment",
			"KAFKA_BROKERS": "k1:9092, k2:9092", "PAYMENT_LISTEN_ADDR": "127.0.0.1:0", "PAYMENT_RELAY_POLL_INTERVAL": "50ms",
			"PAYMENT_TLS_CA_FILE": "ca.pem", "PAYMENT_TLS_CERT_FILE": "payment.pem", "PAYMENT_TLS_KEY_FILE": "payment-key.pem",
			"PAYMENT_LOG_LEVEL": "debug"},
			check: func(t *testing.T, c config.Config) {
				if c.Seed || c.DSN != "postgres://db/payment" || len(c.KafkaBrokers) != 2 || c.KafkaBrokers[1] != "k2:9092" ||
					c.ListenAddr != "127.0.0.1:0" || c.RelayPollInterval != 50*time.Millisecond || c.Server.DrainDelay == 0 ||
					c.Profile != platformcfg.K8s || c.LogLevel != "debug" {
					t.Errorf("k8s = %+v", c)
				}
			}},
		{name: "prefixed brokers win", env: map[string]string{"KAFKA_BROKERS": "a:1", "PAYMENT_KAFKA_BROKERS": "b:2"},
			check: func(t *testing.T, c config.Config) {
				if len(c.KafkaBrokers) != 1 || c.KafkaBrokers[0] != "b:2" {
					t.Errorf("brokers = %v", c.KafkaBrokers)
				}
			}},
		{name: "own settings", env: map[string]string{"PAYMENT_TOPIC_PARTITIONS": "2", "PAYMENT_CONSUMER_GROUP": "pay-2",
			"PAYMENT_SEED": "false", "PAYMENT_CONSUMER_MAX_WAIT": "100ms", "PAYMENT_CONSUMER_COMMIT_INTERVAL": "0s",
			"PAYMENT_INBOX_RETENTION": "48h"},
			check: func(t *testing.T, c config.Config) {
				if c.TopicPartitions != 2 || c.ConsumerGroup != "pay-2" || c.Seed || c.ConsumerMaxWait != 100*time.Millisecond ||
					c.ConsumerCommitInterval != 0 || c.InboxRetention != 48*time.Hour {
					t.Errorf("settings = %+v", c)
				}
			}},
		{name: "non-dev needs a DSN", env: map[string]string{"PAYMENT_PROFILE": "prod"}, wantErr: "PAYMENT_DSN"},
		{name: "bad log level", env: map[string]string{"PAYMENT_LOG_LEVEL": "loud"}, wantErr: "log_level (PAYMENT_LOG_LEVEL)"},
		{name: "no brokers", env: map[string]string{"PAYMENT_KAFKA_BROKERS": ""}, wantErr: "kafka_brokers (PAYMENT_KAFKA_BROKERS or KAFKA_BROKERS)"},
		{name: "bad partitions", env: map[string]string{"PAYMENT_TOPIC_PARTITIONS": "0"}, wantErr: "PAYMENT_TOPIC_PARTITIONS"},
		{name: "no consumer group", env: map[string]string{"PAYMENT_CONSUMER_GROUP": ""}, wantErr: "PAYMENT_CONSUMER_GROUP"},
		{name: "bad poll interval", env: map[string]string{"PAYMENT_RELAY_POLL_INTERVAL": "0s"}, wantErr: "PAYMENT_RELAY_POLL_INTERVAL"},
		{name: "shared defaults", env: map[string]string{}, check: func(t *testing.T, c config.Config) {
			if c.TopicPartitions != 8 || c.RelayPollInterval != 200*time.Millisecond || c.ConsumerCommitInterval != time.Second ||
				c.InboxRetention != 7*24*time.Hour {
				t.Errorf("outbox %+v consumer %+v", c.Outbox, c.Consumer)
			}
		}},
		// A negative commit interval would make the Kafka reader's ticker panic.
		{name: "negative commit interval", env: map[string]string{"PAYMENT_CONSUMER_COMMIT_INTERVAL": "-1s"},
			wantErr: "consumer_commit_interval (PAYMENT_CONSUMER_COMMIT_INTERVAL)"},
		{name: "negative inbox retention", env: map[string]string{"PAYMENT_INBOX_RETENTION": "-1h"},
			wantErr: "inbox_retention (PAYMENT_INBOX_RETENTION)"},
		{name: "unknown DSN scheme", env: map[string]string{"PAYMENT_DSN": "mysql://h/payment"},
			wantErr: "dsn (PAYMENT_DSN): sqldb: unknown DSN scheme"},
		{name: "bad max wait", env: map[string]string{"PAYMENT_CONSUMER_MAX_WAIT": "0s"}, wantErr: "PAYMENT_CONSUMER_MAX_WAIT"},
		{name: "bad duration", env: map[string]string{"PAYMENT_CONSUMER_MAX_WAIT": "soon"}, wantErr: "PAYMENT_CONSUMER_MAX_WAIT"},
		{name: "bad profile", env: map[string]string{"PAYMENT_PROFILE": "staging"}, wantErr: "PAYMENT_PROFILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
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
