package config_test

import (
	"strings"
	"testing"
	"time"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/services/order/internal/config"
)

// service is the order service's variable prefix (service.Prefix("order")).
const service = "ORDER"

// The configuration as the service command loads it: defaults of the profile, ORDER_* variables, the
// shared broker variables as fallbacks, and every problem named with its variable.
func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c config.Config)
	}{
		{
			name: "brokers from the shared variables, overrides from ORDER_",
			env: map[string]string{"KAFKA_BROKERS": "a:1,b:2", "NATS_URL": "nats://n:4222", "ORDER_PROFILE": "test",
				"ORDER_RECOVERY_INTERVAL": "250ms", "ORDER_LISTEN_ADDR": "127.0.0.1:0", "ORDER_TARGETS_PAYMENT_ADDRESSES": "p:1"},
			check: func(t *testing.T, c config.Config) {
				if len(c.KafkaBrokers) != 2 || c.NatsURL != "nats://n:4222" || c.RecoveryInterval != 250*time.Millisecond ||
					c.ListenAddr != "127.0.0.1:0" || c.Targets["payment"].Addresses[0] != "p:1" || c.Profile != "test" {
					t.Fatalf("loaded %+v", c)
				}
			},
		},
		{
			name: "follow-up settings",
			env: map[string]string{"KAFKA_BROKERS": "a:1", "NATS_URL": "n", "ORDER_SETTLE_AFTER": "90s", "ORDER_RETRY_MIN": "1s",
				"ORDER_RETRY_MAX": "2m", "ORDER_STUCK_AFTER": "1h", "ORDER_STUCK_ATTEMPTS": "7"},
			check: func(t *testing.T, c config.Config) {
				s := c.Settings()
				if s.SettleAfter != 90*time.Second || s.RetryMin != time.Second || s.RetryMax != 2*time.Minute ||
					s.StuckAfter != time.Hour || s.StuckAttempts != 7 {
					t.Fatalf("saga settings %+v", s)
				}
			},
		},
		{
			name: "outbox settings",
			env: map[string]string{"KAFKA_BROKERS": "a:1", "NATS_URL": "n", "ORDER_RELAY_POLL_INTERVAL": "50ms",
				"ORDER_TOPIC_PARTITIONS": "1"},
			check: func(t *testing.T, c config.Config) {
				if c.RelayPollInterval != 50*time.Millisecond || c.TopicPartitions != 1 {
					t.Fatalf("outbox %+v", c.Outbox)
				}
			},
		},
		{
			name: "outbox defaults",
			env:  map[string]string{"KAFKA_BROKERS": "a:1", "NATS_URL": "n"},
			check: func(t *testing.T, c config.Config) {
				if c.RelayPollInterval != 200*time.Millisecond || c.TopicPartitions != 3 {
					t.Fatalf("outbox %+v", c.Outbox)
				}
			},
		},
		{name: "zero poll", env: map[string]string{"KAFKA_BROKERS": "a:1", "NATS_URL": "n", "ORDER_RELAY_POLL_INTERVAL": "0s"},
			wantErr: "relay_poll_interval (ORDER_RELAY_POLL_INTERVAL)"},
		{name: "zero partitions", env: map[string]string{"KAFKA_BROKERS": "a:1", "NATS_URL": "n", "ORDER_TOPIC_PARTITIONS": "0"},
			wantErr: "topic_partitions (ORDER_TOPIC_PARTITIONS)"},
		// A DSN of no known scheme fails at start, not at the first open.
		{name: "unknown DSN scheme", env: map[string]string{"KAFKA_BROKERS": "a:1", "NATS_URL": "n", "ORDER_DSN": "mysql://h/order"},
			wantErr: "dsn (ORDER_DSN): sqldb: unknown DSN scheme"},
		{name: "retry_max below retry_min", env: map[string]string{"KAFKA_BROKERS": "a:1", "NATS_URL": "n",
			"ORDER_RETRY_MIN": "1m", "ORDER_RETRY_MAX": "30s"}, wantErr: "retry_max"},
		{
			name: "the prefixed broker variables win over the shared ones",
			env: map[string]string{"KAFKA_BROKERS": "a:1", "NATS_URL": "nats://shared:4222",
				"ORDER_KAFKA_BROKERS": "o:1,o:2", "ORDER_NATS_URL": "nats://own:4222"},
			check: func(t *testing.T, c config.Config) {
				if strings.Join(c.KafkaBrokers, ",") != "o:1,o:2" || c.NatsURL != "nats://own:4222" {
					t.Fatalf("brokers %v, nats %q", c.KafkaBrokers, c.NatsURL)
				}
			},
		},
		{name: "brokers are required", env: map[string]string{}, wantErr: "kafka_brokers (ORDER_KAFKA_BROKERS or KAFKA_BROKERS)"},
		{name: "nats is required", env: map[string]string{"KAFKA_BROKERS": "a:1"}, wantErr: "nats_url (ORDER_NATS_URL or NATS_URL)"},
		{name: "bad duration", env: map[string]string{"KAFKA_BROKERS": "a:1", "NATS_URL": "n", "ORDER_SAGA_TIMEOUT": "soon"}, wantErr: "ORDER_SAGA_TIMEOUT"},
		{name: "recovery must outlast the saga", env: map[string]string{"KAFKA_BROKERS": "a:1", "NATS_URL": "n",
			"ORDER_SAGA_TIMEOUT": "1m", "ORDER_RECOVERY_AFTER": "30s"}, wantErr: "recovery_after (ORDER_RECOVERY_AFTER)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := platformcfg.Load[config.Config](service, devUnlessSet(tt.env), config.Default)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to name %s", err, tt.wantErr)
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

// devUnlessSet looks variables up in env, with ORDER_PROFILE=dev unless env sets it (a process needs one).
func devUnlessSet(env map[string]string) platformcfg.Lookup {
	return func(k string) (string, bool) {
		if _, set := env["ORDER_PROFILE"]; !set && k == "ORDER_PROFILE" {
			return "dev", true
		}
		v, ok := env[k]
		return v, ok
	}
}
