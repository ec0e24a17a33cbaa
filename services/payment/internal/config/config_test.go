package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/payment/internal/config"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c config.Config)
	}{
		{name: "dev defaults seed a local file", env: map[string]string{}, check: func(t *testing.T, c config.Config) {
			if !c.Seed || c.DSN != "sqlite:payment.db" || c.Platform.Service != "payment" || c.ConsumerGroup != "payment" {
				t.Errorf("dev = %+v", c)
			}
		}},
		{name: "overrides", env: map[string]string{"PAYMENT_PROFILE": "k8s", "PAYMENT_DSN": "postgres://db/payment",
			"KAFKA_BROKERS": "k1:9092, k2:9092", "PAYMENT_LISTEN_ADDR": "127.0.0.1:0", "PAYMENT_RELAY_POLL_INTERVAL": "50ms",
			"PAYMENT_TLS_CA_FILE": "ca.pem", "PAYMENT_TLS_CERT_FILE": "payment.pem", "PAYMENT_TLS_KEY_FILE": "payment-key.pem"},
			check: func(t *testing.T, c config.Config) {
				if c.Seed || c.DSN != "postgres://db/payment" || len(c.KafkaBrokers) != 2 || c.KafkaBrokers[1] != "k2:9092" ||
					c.Platform.ListenAddr != "127.0.0.1:0" || c.RelayPollInterval != 50*time.Millisecond || c.Platform.Server.DrainDelay == 0 {
					t.Errorf("k8s = %+v", c)
				}
			}},
		{name: "prefixed brokers win", env: map[string]string{"KAFKA_BROKERS": "a:1", "PAYMENT_KAFKA_BROKERS": "b:2"},
			check: func(t *testing.T, c config.Config) {
				if len(c.KafkaBrokers) != 1 || c.KafkaBrokers[0] != "b:2" {
					t.Errorf("brokers = %v", c.KafkaBrokers)
				}
			}},
		{name: "non-dev needs a DSN", env: map[string]string{"PAYMENT_PROFILE": "prod"}, wantErr: "dsn"},
		{name: "bad log level", env: map[string]string{"PAYMENT_LOG_LEVEL": "loud"}, wantErr: "log_level"},
		{name: "bad duration", env: map[string]string{"PAYMENT_CONSUMER_MAX_WAIT": "soon"}, wantErr: "PAYMENT_CONSUMER_MAX_WAIT"},
		{name: "bad profile", env: map[string]string{"PAYMENT_PROFILE": "staging"}, wantErr: "profile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Load(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
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
