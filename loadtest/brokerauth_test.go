package loadtest_test

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/shopmesh/shopmesh/loadtest"
)

func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// TestReadBrokerAuth: no credential variables, no authentication; both of a pair, the SCRAM-SHA-512
// mechanism and the NATS user; half a pair, an error naming the variables.
func TestReadBrokerAuth(t *testing.T) {
	a, err := loadtest.ReadBrokerAuth(lookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	var o nats.Options
	if err := a.NATS(&o); err != nil {
		t.Fatal(err)
	}
	if a.Kafka != nil || o.User != "" {
		t.Errorf("without variables: Kafka %v, NATS user %q; want no authentication", a.Kafka, o.User)
	}

	a, err = loadtest.ReadBrokerAuth(lookup(map[string]string{"KAFKA_USERNAME": "admin", "KAFKA_PASSWORD": "k", "NATS_USER": "admin", "NATS_PASSWORD": "n"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.NATS(&o); err != nil {
		t.Fatal(err)
	}
	if a.Kafka == nil || a.Kafka.Name() != "SCRAM-SHA-512" || o.User != "admin" || o.Password != "n" {
		t.Errorf("with both pairs: Kafka %v, NATS user %q; want SCRAM-SHA-512 and admin", a.Kafka, o.User)
	}

	for env, want := range map[string]string{
		"KAFKA_USERNAME": "KAFKA_USERNAME/KAFKA_PASSWORD",
		"KAFKA_PASSWORD": "KAFKA_USERNAME/KAFKA_PASSWORD",
		"NATS_USER":      "NATS_USER/NATS_PASSWORD",
		"NATS_PASSWORD":  "NATS_USER/NATS_PASSWORD",
	} {
		_, err := loadtest.ReadBrokerAuth(lookup(map[string]string{env: "x"}))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("only %s set: err %v, want one naming %s", env, err, want)
		}
	}
}
