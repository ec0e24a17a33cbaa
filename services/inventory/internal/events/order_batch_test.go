package events_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
	eventsv1 "github.com/shopmesh/shopmesh/proto/gen/go/events/v1"
	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/events"
)

// batchRecorder records the batches it is given and answers done and err.
type batchRecorder struct {
	batches [][]string
	done    bool
	err     error
}

func (r *batchRecorder) OnOrderConfirmedBatch(_ context.Context, es []app.Confirmation) (bool, error) {
	var b []string
	for _, e := range es {
		b = append(b, e.EventID+"/"+e.OrderID)
	}
	r.batches = append(r.batches, b)
	return r.done, r.err
}

// The batch handler takes only OrderConfirmed events (and acknowledges other types); anything the
// Handler must decide — an OrderCancelled, a payload it dead-letters, a batch the use case refuses —
// leaves the whole batch to it, never dead-lettered by the batch path.
func TestOrderBatchHandler(t *testing.T) {
	t.Parallel()
	msg := func(m proto.Message) consumer.Message {
		b, _ := proto.Marshal(m)
		return consumer.Message{ID: "hdr-id", Payload: b, Headers: map[string]string{
			events.HeaderEventType: string(m.ProtoReflect().Descriptor().FullName())}}
	}
	confirmed := msg(&eventsv1.OrderConfirmed{EventId: "e1", OrderId: "o1"})
	noID := msg(&eventsv1.OrderConfirmed{OrderId: "o2"}) // the header's id stands in
	created := msg(&eventsv1.OrderCreated{EventId: "e3", OrderId: "o3"})
	cancelled := msg(&eventsv1.OrderCancelled{EventId: "e4", OrderId: "o4"})
	undecodable := consumer.Message{ID: "x", Payload: []byte{0xff}, Headers: map[string]string{events.HeaderEventType: "shopmesh.events.v1.OrderConfirmed"}}
	noOrder := msg(&eventsv1.OrderConfirmed{EventId: "e5"})
	boom := errors.New("database down")
	ctx := context.Background()

	for _, tc := range []struct {
		name    string
		ms      []consumer.Message
		done    bool
		err     error
		want    error
		batches int
	}{
		{"confirmations and ignored events", []consumer.Message{confirmed, created, noID}, true, nil, nil, 1},
		{"only ignored events", []consumer.Message{created, created}, true, nil, nil, 0},
		{"an OrderCancelled", []consumer.Message{confirmed, cancelled}, true, nil, consumer.ErrNotBatched, 0},
		{"an undecodable payload", []consumer.Message{confirmed, undecodable}, true, nil, consumer.ErrNotBatched, 0},
		{"an OrderConfirmed without order", []consumer.Message{noOrder, confirmed}, true, nil, consumer.ErrNotBatched, 0},
		{"refused by the use case", []consumer.Message{confirmed}, false, nil, consumer.ErrNotBatched, 1},
		{"failed", []consumer.Message{confirmed}, false, boom, boom, 1},
	} {
		r := &batchRecorder{done: tc.done, err: tc.err}
		err := events.OrderBatchHandler(r)(ctx, tc.ms)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if errors.Is(err, consumer.ErrPermanent) {
			t.Errorf("%s: %v: the batch path must not dead-letter", tc.name, err)
		}
		if len(r.batches) != tc.batches {
			t.Errorf("%s: use case called with %v, want %d batches", tc.name, r.batches, tc.batches)
		}
	}
	r := &batchRecorder{done: true}
	if err := events.OrderBatchHandler(r)(ctx, []consumer.Message{confirmed, created, noID}); err != nil {
		t.Fatal(err)
	}
	if want := "[[e1/o1 hdr-id/o2]]"; fmt.Sprint(r.batches) != want {
		t.Errorf("batches %v, want %s", r.batches, want)
	}
}
