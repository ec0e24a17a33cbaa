package config_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// TestKeysMatchFromEnv sets every listed variable and checks FromEnv reads each one: Keys and FromEnv
// must agree on names.
func TestKeysMatchFromEnv(t *testing.T) {
	t.Parallel()
	type svc struct {
		config.Config
		DSN          string
		KafkaBrokers []string
		Hidden       string `env:"-"`
	}
	c := svc{Config: config.Default(config.Test)}
	c.Targets["inventory"] = config.Target{Addresses: []string{"a:1"}}
	keys := config.Keys(&c, "SHOP_")
	for _, want := range []string{"SHOP_LISTEN_ADDR", "SHOP_DSN", "SHOP_KAFKA_BROKERS", "SHOP_SERVER_DRAIN_DELAY",
		"SHOP_TLS_CA_FILE", "SHOP_TARGETS_INVENTORY_ADDRESSES", "SHOP_TELEMETRY_OTLP_ENDPOINT", "SHOP_HEALTH_ADDR",
		"SHOP_REGISTRY_BACKEND", "SHOP_PROFILE", "SHOP_CONFIG_CENTER_BACKEND", "SHOP_ADMIN_PPROF"} {
		if !slices.Contains(keys, want) {
			t.Errorf("Keys lacks %s", want)
		}
	}
	for _, k := range keys {
		// The embedded Config adds no name segment (SHOP_CONFIG_LISTEN_ADDR would be wrong); the config
		// center's own field is the one SHOP_CONFIG_ name.
		if strings.Contains(k, "HIDDEN") || (strings.HasPrefix(k, "SHOP_CONFIG_") && k != "SHOP_CONFIG_CENTER_BACKEND") {
			t.Errorf("Keys has %s", k)
		}
	}
	if !slices.IsSorted(keys) {
		t.Error("Keys is not sorted")
	}
	var read []string
	lookup := func(k string) (string, bool) { read = append(read, k); return "", false }
	if err := config.FromEnv(&c, "SHOP", lookup); err != nil {
		t.Fatal(err)
	}
	slices.Sort(read)
	if !slices.Equal(slices.Compact(read), keys) {
		t.Errorf("FromEnv looked up %d names, Keys lists %d:\nread %v\nkeys %v", len(read), len(keys), read, keys)
	}
	// A listed duration is settable.
	if err := config.FromEnv(&c, "SHOP", func(k string) (string, bool) {
		return "3s", k == "SHOP_SERVER_DRAIN_DELAY"
	}); err != nil || c.Server.DrainDelay != 3*time.Second {
		t.Errorf("drain delay = %v, %v", c.Server.DrainDelay, err)
	}
}

func TestUnknown(t *testing.T) {
	t.Parallel()
	known := []string{"SHOP_LISTEN_ADDR", "SHOP_DSN"}
	env := []string{"SHOP_LISTEN_ADDR=:1", "SHOP_LISTEN_ADR=:2", "SHOPPING=1", "PATH=/bin", "SHOP_DNS", "OTHER_DSN=x"}
	if got := config.Unknown(env, "SHOP", known); !slices.Equal(got, []string{"SHOP_DNS", "SHOP_LISTEN_ADR"}) {
		t.Errorf("Unknown = %v", got)
	}
	err := config.CheckUnknown(env, "SHOP_", known)
	if err == nil || !strings.Contains(err.Error(), "SHOP_LISTEN_ADR: unknown variable") {
		t.Errorf("CheckUnknown = %v", err)
	}
	if err := config.CheckUnknown([]string{"SHOP_DSN=x"}, "SHOP", known); err != nil {
		t.Errorf("CheckUnknown(known) = %v", err)
	}
}
