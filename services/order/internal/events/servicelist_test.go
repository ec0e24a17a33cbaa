package events_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/shopmesh/shopmesh/services/order/internal/events"
)

// TestServiceYAMLBrokers: the Kafka topics and consumer groups services/order/service.yaml declares
// (its user's ACLs on an authenticating cluster: deploy/cmd/kafkaacl) are the ones order uses: it
// writes (and creates) events.Topic and reads nothing; and its NATS subjects and stream are those of
// events.StatusStreamConfig.
func TestServiceYAMLBrokers(t *testing.T) {
	entry := readServiceYAML(t)
	sameSet(t, "kafka_writes", entry.Writes, []string{events.Topic})
	sameSet(t, "kafka_reads", entry.Reads, nil)
	sameSet(t, "kafka_groups", entry.Groups, nil)
	if !entry.Kafka {
		t.Error("service.yaml: kafka is false, but order writes a Kafka topic")
	}
	natsInStep(t, entry, events.StatusStreamConfig())
}

// serviceYAML is the part of the service's entry in the list of services (deploy/servicelist) about its
// brokers.
type serviceYAML struct {
	Kafka        bool     `yaml:"kafka"`
	Writes       []string `yaml:"kafka_writes"`
	Reads        []string `yaml:"kafka_reads"`
	Groups       []string `yaml:"kafka_groups"`
	NATS         bool     `yaml:"nats"`
	NATSSubjects string   `yaml:"nats_subjects"`
	NATSStream   string   `yaml:"nats_stream"`
}

func readServiceYAML(t *testing.T) serviceYAML {
	t.Helper()
	raw, err := os.ReadFile("../../service.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var entry serviceYAML
	if err := yaml.Unmarshal(raw, &entry); err != nil {
		t.Fatalf("service.yaml: %v", err)
	}
	return entry
}

func sameSet(t *testing.T, field string, got, want []string) {
	t.Helper()
	got, want = slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Errorf("service.yaml %s = %v, the code uses %v: keep them in step (then `make gen`)", field, got, want)
	}
}

// natsInStep checks the stream the service creates against nats_stream and nats_subjects (its user's
// permissions on an authenticating server: <nats_subjects>.> and the JetStream API of <nats_stream>).
func natsInStep(t *testing.T, entry serviceYAML, stream jetstream.StreamConfig) {
	t.Helper()
	if !entry.NATS {
		t.Error("service.yaml: nats is false, but the service publishes to JetStream")
	}
	if entry.NATSStream != stream.Name {
		t.Errorf("service.yaml nats_stream = %q, the code creates stream %q", entry.NATSStream, stream.Name)
	}
	for _, s := range stream.Subjects {
		if !strings.HasPrefix(s, entry.NATSSubjects+".") {
			t.Errorf("service.yaml nats_subjects = %q: the stream's subject %q is not under %s.>", entry.NATSSubjects, s, entry.NATSSubjects)
		}
	}
}
