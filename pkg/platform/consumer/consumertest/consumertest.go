// Package consumertest checks a service's consumer.BatchHandler against the contract the consumer
// relies on: a batch it can apply goes to its use case in one call, anything the Handler must decide
// leaves the whole batch to the Handler (consumer.ErrNotBatched), a failure is returned as it is, and
// the batch path never dead-letters. Only tests import it.
package consumertest

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
)

// MessageID is the event id the transport gives every message of BatchVerdicts.Check: an event without
// an id of its own has this one.
const MessageID = "hdr-id"

// UseCase stands in for the use case behind a batch handler: it records the batches of E it is given
// and answers Done and Err.
type UseCase[E any] struct {
	Batches [][]E
	Done    bool
	Err     error
}

// Apply records es and answers u.Done, u.Err.
func (u *UseCase[E]) Apply(_ context.Context, es []E) (bool, error) {
	u.Batches = append(u.Batches, es)
	return u.Done, u.Err
}

// BatchVerdicts is a BatchHandler under test, whose use case takes batches of E, and the events that
// show its verdicts.
type BatchVerdicts[E any] struct {
	// Handler returns the handler under test on uc.
	Handler func(uc *UseCase[E]) consumer.BatchHandler
	// TypeHeader is the header the events carry their type in.
	TypeHeader string
	// Take are events the handler applies, and Applied what its use case must be given for them.
	Take    []proto.Message
	Applied []E
	// Ignore is an event of a type the handler acknowledges without effect.
	Ignore proto.Message
	// LeftToHandler are events, by name, that leave any batch they are in to the Handler, without a
	// use-case call: an event type only the Handler applies, an invalid event. A payload of Take[0]'s
	// type that does not decode, which the Handler dead-letters, is always one.
	LeftToHandler map[string]proto.Message
}

// message is m as the service's consumer receives it: m marshalled, its type (full name) under
// TypeHeader, MessageID as the event id.
func (v BatchVerdicts[E]) message(t *testing.T, m proto.Message) consumer.Message {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return consumer.Message{ID: MessageID, Payload: b, Headers: map[string]string{
		v.TypeHeader: string(m.ProtoReflect().Descriptor().FullName())}}
}

// Check gives batches to new handlers and checks their verdicts: nil, with one use-case call given
// Applied, for Take with Ignore among them, and nil without a call for Ignore alone; ErrNotBatched
// without a call for a batch with a message LeftToHandler, first or after Take[0]; ErrNotBatched when
// the use case refuses the batch (not done); the use case's error when it fails; never
// consumer.ErrPermanent.
func (v BatchVerdicts[E]) Check(t *testing.T) {
	t.Helper()
	boom := errors.New("database down")
	var take []consumer.Message
	for _, m := range v.Take {
		take = append(take, v.message(t, m))
	}
	ignore := v.message(t, v.Ignore)
	apply := append([]consumer.Message{take[0], ignore}, take[1:]...)
	type batchCase struct {
		name  string
		ms    []consumer.Message
		uc    UseCase[E]
		want  error
		calls int
	}
	cases := []batchCase{
		{"taken and ignored events", apply, UseCase[E]{Done: true}, nil, 1},
		{"only ignored events", []consumer.Message{ignore, ignore}, UseCase[E]{Done: true}, nil, 0},
		{"refused by the use case", apply, UseCase[E]{}, consumer.ErrNotBatched, 1},
		{"failed", apply, UseCase[E]{Err: boom}, boom, 1},
	}
	left := map[string]consumer.Message{"an undecodable payload": {ID: "x", Payload: []byte{0xff},
		Headers: map[string]string{v.TypeHeader: take[0].Headers[v.TypeHeader]}}}
	for name, m := range v.LeftToHandler {
		left[name] = v.message(t, m)
	}
	for name, m := range left {
		cases = append(cases,
			batchCase{name + " first", []consumer.Message{m, take[0]}, UseCase[E]{Done: true}, consumer.ErrNotBatched, 0},
			batchCase{name + " after another", []consumer.Message{take[0], m}, UseCase[E]{Done: true}, consumer.ErrNotBatched, 0})
	}
	for _, tc := range cases {
		uc := tc.uc
		err := v.Handler(&uc)(t.Context(), tc.ms)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		if errors.Is(err, consumer.ErrPermanent) {
			t.Errorf("%s: %v: the batch path must not dead-letter", tc.name, err)
		}
		if len(uc.Batches) != tc.calls {
			t.Errorf("%s: use case called with %v, want %d batches", tc.name, uc.Batches, tc.calls)
		}
		if tc.want == nil && tc.calls == 1 && !reflect.DeepEqual(uc.Batches[0], v.Applied) {
			t.Errorf("%s: use case given %v, want %v", tc.name, uc.Batches[0], v.Applied)
		}
	}
}
