package config_test

import (
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/services/inventory/internal/config"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c config.Config)
	}{
		{"dev defaults", map[string]string{}, "", func(t *testing.T, c config.Config) {
			if !c.Seed || c.DSN == "" || c.SeedProducts != 24 || c.SeedStock != 10_000 {
				t.Errorf("dev = %+v", c)
			}
		}},
		{"shared broker variables", map[string]string{
			"INVENTORY_PROFILE": "test", "INVENTORY_DSN": "sqlite:x.db", "KAFKA_BROKERS": "a:1,b:2", "NATS_URL": "nats://n:4222",
		}, "", func(t *testing.T, c config.Config) {
			if c.Seed || len(c.KafkaBrokers) != 2 || c.NatsURL != "nats://n:4222" {
				t.Errorf("test = %+v", c)
			}
		}},
		{"own variables win", map[string]string{
			"INVENTORY_PROFILE": "test", "INVENTORY_DSN": "sqlite:x.db", "KAFKA_BROKERS": "a:1", "INVENTORY_KAFKA_BROKERS": "c:3",
			"NATS_URL": "nats://n:4222",
		}, "", func(t *testing.T, c config.Config) {
			if len(c.KafkaBrokers) != 1 || c.KafkaBrokers[0] != "c:3" {
				t.Errorf("brokers = %v", c.KafkaBrokers)
			}
		}},
		{"test needs endpoints", map[string]string{"INVENTORY_PROFILE": "test"}, "dsn", nil},
		{"bad duration", map[string]string{"INVENTORY_RELAY_POLL_INTERVAL": "soon"}, "RELAY_POLL_INTERVAL", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := config.Load(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
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
