package dlq_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	"github.com/shopmesh/shopmesh/pkg/platform/consumer/dlq"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// A broker whose group coordinator is not ready yet (just started, or the coordinator moved) answers
// the offset fetch with a retriable error: the tool asks again instead of failing (CI saw
// NOT_COORDINATOR from a Kafka started a minute earlier).
func TestListWaitsForTheGroupCoordinator(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	topic := uniq("coord-")
	ctx := timeout(t, 30*time.Second)
	if err := outbox.EnsureTopics(ctx, c.ListenAddrs(), nil, outbox.Topic{Name: consumer.DeadLetterTopic(topic), Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, code := range []int16{14, 15, 16} { // GROUP_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR
		c.ControlKey(int16(kmsg.OffsetFetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r := req.(*kmsg.OffsetFetchRequest)
			resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
			resp.Version = r.Version
			resp.ErrorCode = code
			refused++
			return resp, nil, true
		})
	}
	tool := dlq.Kafka{Brokers: c.ListenAddrs(), Topic: consumer.DeadLetterTopic(topic), Group: uniq("replay-")}
	entries, err := tool.List(ctx)
	if err != nil {
		t.Fatalf("List with the coordinator refusing %d times: %v", refused, err)
	}
	if refused != 3 || len(entries) != 0 {
		t.Errorf("refused %d offset fetches (want 3), listed %d entries (want 0)", refused, len(entries))
	}
}
