package events_test

import (
	"os"
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"

	platformcfg "github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/services/payment/internal/config"
	"github.com/shopmesh/shopmesh/services/payment/internal/events"
)

// TestServiceYAMLBrokers: the Kafka topics and consumer groups services/payment/service.yaml declares (its
// user's ACLs on an authenticating cluster: deploy/cmd/kafkaacl) are the ones payment uses: it writes
// (and creates) events.Topics, its events and the dead letters of what it reads, reads the order events
// and reads them with the configured consumer group's default, in every profile.
func TestServiceYAMLBrokers(t *testing.T) {
	entry := readServiceYAML(t)
	var writes []string
	for _, topic := range events.Topics(1) {
		writes = append(writes, topic.Name)
	}
	reads := []string{events.OrderTopic}
	for _, r := range reads {
		if !slices.Contains(entry.Writes, consumer.DeadLetterTopic(r)) {
			t.Errorf("service.yaml kafka_writes %v lacks %s, the dead-letter topic of %s", entry.Writes, consumer.DeadLetterTopic(r), r)
		}
	}
	sameSet(t, "kafka_writes", entry.Writes, writes)
	sameSet(t, "kafka_reads", entry.Reads, reads)
	for _, p := range []platformcfg.Profile{platformcfg.Dev, platformcfg.Test, platformcfg.Compose, platformcfg.K8s, platformcfg.Prod} {
		sameSet(t, "kafka_groups (profile "+string(p)+")", entry.Groups, []string{config.Default(p).ConsumerGroup})
	}
	if !entry.Kafka {
		t.Error("service.yaml: kafka is false, but payment reads and writes Kafka topics")
	}
}

// serviceYAML is the part of the service's entry in the list of services (deploy/servicelist) about Kafka.
type serviceYAML struct {
	Kafka  bool     `yaml:"kafka"`
	Writes []string `yaml:"kafka_writes"`
	Reads  []string `yaml:"kafka_reads"`
	Groups []string `yaml:"kafka_groups"`
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
