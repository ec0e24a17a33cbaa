package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"

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

// Publish sends msgs asynchronously, in order, and waits for every acknowledgement. A failure is a
// *PublishError naming the first message not acknowledged: Permanent for a subject no message can be
// published to (empty, blanks, wildcards, empty tokens), a message over the server's max_payload or the
// stream's maximum message size; Transient for everything else (no connection, no stream answering,
// timeouts). Invalid subjects and oversized payloads are caught before anything after them is sent;
// a stream refusing one message does not stop the later ones, which are sent again after it.
func (p *JetStream) Publish(ctx context.Context, msgs []Message) error {
	stop, stopErr := len(msgs), error(nil)
	maxPayload := int64(-1)
	if nc := p.js.Conn(); nc != nil && nc.IsConnected() {
		maxPayload = nc.MaxPayload()
	}
	for i, m := range msgs {
		if err := validSubject(m.Topic); err != nil {
			stop, stopErr = i, err
			break
		}
		if maxPayload > 0 && int64(len(m.Payload)) > maxPayload {
			stop, stopErr = i, fmt.Errorf("%d bytes over max_payload %d: %w", len(m.Payload), maxPayload, nats.ErrMaxPayload)
			break
		}
	}
	futures := make([]jetstream.PubAckFuture, 0, stop)
	sendErr := error(nil)
	for _, m := range msgs[:stop] {
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
			sendErr = err
			break
		}
		futures = append(futures, f)
	}
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return &PublishError{Index: i, Kind: jetStreamKind(err), Err: fmt.Errorf("jetstream ack %s: %w", f.Msg().Subject, err)}
		case <-ctx.Done():
			return &PublishError{Index: i, Kind: Transient, Err: fmt.Errorf("jetstream ack: %w", ctx.Err())}
		}
	}
	if sendErr != nil {
		return &PublishError{Index: len(futures), Kind: jetStreamKind(sendErr),
			Err: fmt.Errorf("jetstream publish %s: %w", msgs[len(futures)].Topic, sendErr)}
	}
	if stopErr != nil {
		return &PublishError{Index: stop, Kind: Permanent, Err: fmt.Errorf("jetstream subject %q: %w", msgs[stop].Topic, stopErr)}
	}
	return nil
}

// validSubject refuses what no publish can go to: the protocol would split a subject at a blank.
func validSubject(s string) error {
	if s == "" || strings.ContainsAny(s, " \t\r\n") {
		return nats.ErrBadSubject
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return nats.ErrBadSubject
		}
	}
	return nil
}

// jetStreamKind classifies a JetStream publish error for the relay.
func jetStreamKind(err error) ErrorKind {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) {
		return Permanent
	}
	var api *jetstream.APIError
	if errors.As(err, &api) && api.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum {
		return Permanent
	}
	return Transient
}
