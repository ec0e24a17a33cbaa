package outbox

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream publishes to JetStream subjects (Message.Topic) with Nats-Msg-Id set to the event id, so
// the server drops a re-sent event inside the stream's Duplicates window.
type JetStream struct {
	js jetstream.JetStream
}

// NewJetStream returns a publisher on js. The streams capturing the subjects must exist.
func NewJetStream(js jetstream.JetStream) *JetStream { return &JetStream{js: js} }

// Publish sends msgs asynchronously, in order, and waits for every acknowledgement.
func (p *JetStream) Publish(ctx context.Context, msgs []Message) error {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		nm := nats.NewMsg(m.Topic)
		nm.Data = m.Payload
		for k, v := range m.Headers {
			nm.Header.Set(k, v)
		}
		nm.Header.Set(HeaderEventID, m.ID)
		if m.Key != "" {
			nm.Header.Set(HeaderKey, m.Key)
		}
		f, err := p.js.PublishMsgAsync(nm, jetstream.WithMsgID(m.ID))
		if err != nil {
			return fmt.Errorf("jetstream publish %s: %w", m.Topic, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("jetstream ack %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return fmt.Errorf("jetstream ack: %w", ctx.Err())
		}
	}
	return nil
}
