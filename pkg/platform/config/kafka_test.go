package config_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
)

// kafkaOnly is a service config embedding only the Kafka setting.
type kafkaOnly struct {
	config.Config
	config.Kafka
}

func (k kafkaOnly) Validate() error { return k.Kafka.Validate() }

func TestKafkaCredential(t *testing.T) {
	t.Parallel()
	load := func(env map[string]string) (kafkaOnly, error) {
		env["SHOP_PROFILE"] = "dev"
		return config.Load[kafkaOnly]("SHOP", envLookup(env), func(p config.Profile) kafkaOnly { return kafkaOnly{Config: config.Default(p)} })
	}
	c, err := load(map[string]string{"KAFKA_BROKERS": "k:9092", "SHOP_KAFKA_USERNAME": "shop", "SHOP_KAFKA_PASSWORD": "hunter2"})
	if err != nil {
		t.Fatal(err)
	}
	if c.KafkaUsername != "shop" || c.KafkaPassword.Reveal() != "hunter2" || c.SASL() == nil || c.SASL().Name() != "SCRAM-SHA-512" {
		t.Errorf("user %q, mechanism %v: want shop with SCRAM-SHA-512", c.KafkaUsername, c.SASL())
	}
	// The password never shows: not in fmt, slog, or the variable list -h and check-config print.
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "kafka", c.Kafka)
	out := fmt.Sprintf("%v %+v %#v %s", c, c, c, logs.String())
	for _, v := range config.Vars(&c, "SHOP") {
		out += v.Name + "=" + v.Default + " "
		if v.Name == "SHOP_KAFKA_USERNAME" || v.Name == "SHOP_KAFKA_PASSWORD" {
			if v.Alias != "" || v.Help == "" {
				t.Errorf("%s: alias %q help %q, want no alias (no fallback to the admin's KAFKA_USERNAME) and a help", v.Name, v.Alias, v.Help)
			}
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("the password shows: %s", out)
	}

	// No unprefixed fallback: infra.env's admin credential (KAFKA_USERNAME) is never a service's.
	c, err = load(map[string]string{"KAFKA_BROKERS": "k:9092", "KAFKA_USERNAME": "admin", "KAFKA_PASSWORD": "root"})
	if err != nil || c.KafkaUsername != "" || c.SASL() != nil {
		t.Errorf("KAFKA_USERNAME alone: user %q, err %v; want no credential", c.KafkaUsername, err)
	}

	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"SHOP_KAFKA_USERNAME": "shop"}, "kafka_password (SHOP_KAFKA_PASSWORD): must be set with kafka_username"},
		{map[string]string{"SHOP_KAFKA_PASSWORD": "hunter2"}, "kafka_username (SHOP_KAFKA_USERNAME): must be set with kafka_password"},
	} {
		tt.env["KAFKA_BROKERS"] = "k:9092"
		_, err := load(tt.env)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%v: err = %v, want %q (without the password)", tt.env, err, tt.want)
		}
	}
}
