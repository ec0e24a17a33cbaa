package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream publishes to JetStream subjects (Message.Topic) with Nats-Msg-Id set to the event id, so
// the server drops a re-sent event inside the stream's Duplicates window.
type JetStream struct {
	js     jetstream.JetStream
	window int
}

// DefaultJetStreamWindow is how many publishes a JetStream publisher keeps waiting for their
// acknowledgement at once, unless told otherwise: below nats.go's default PublishAsyncMaxPending
// (4,000), so a publish never stalls on the connection's own limit, and above what one stream acks in
// the time of a round trip, so the server never waits for the relay.
const DefaultJetStreamWindow = 1024

// JetStreamOption tunes NewJetStream.
type JetStreamOption func(*JetStream)

// WithWindow bounds the publishes in flight (sent, not yet acknowledged) to n; n <= 0 keeps the default.
// Give the jetstream.JetStream a PublishAsyncMaxPending at least as large (nats.go's default is 4,000).
func WithWindow(n int) JetStreamOption {
	return func(p *JetStream) {
		if n > 0 {
			p.window = n
		}
	}
}

// NewJetStream returns a publisher on js. The streams capturing the subjects must exist.
func NewJetStream(js jetstream.JetStream, opts ...JetStreamOption) *JetStream {
	p := &JetStream{js: js, window: DefaultJetStreamWindow}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Publish sends msgs asynchronously, in order, on one connection, with at most the window of them
// waiting for their acknowledgement, and returns once every one is acknowledged. The server appends a
// stream's messages in the order they arrive, so each subject's (each key's) messages are stored in
// the order given; messages for different streams are stored, and fsynced, in parallel.
//
// A failure is a *PublishError naming the first message not acknowledged: Permanent for a subject no
// message can be published to (empty, blanks, wildcards, empty tokens), a message over the server's
// max_payload or the stream's maximum message size; Transient for everything else (no connection, no
// stream answering, timeouts). Invalid subjects and oversized payloads are caught before anything after
// them is sent; nothing is sent after a message the server refused, but messages already in flight
// behind it may be stored before it is sent again (see the package comment).
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
	// A connection shared with other async publishers may be at its own limit: wait for room as long as
	// the batch may take, not nats.go's 200 ms, after which it fails the publish.
	stall := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		stall = max(time.Until(dl), time.Millisecond)
	}
	futures := make([]jetstream.PubAckFuture, 0, stop)
	acked := 0
	// await waits for the acknowledgement of futures[acked], in order.
	await := func() error {
		f := futures[acked]
		select {
		case <-f.Ok():
			acked++
			return nil
		case err := <-f.Err():
			return &PublishError{Index: acked, Kind: jetStreamKind(err), Err: fmt.Errorf("jetstream ack %s: %w", f.Msg().Subject, err)}
		case <-ctx.Done():
			return &PublishError{Index: acked, Kind: Transient, Err: fmt.Errorf("jetstream ack: %w", ctx.Err())}
		}
	}
	for i, m := range msgs[:stop] {
		if i-acked >= p.window {
			if err := await(); err != nil {
				return err
			}
		}
		nm := nats.NewMsg(m.Topic)
		nm.Data = m.Payload
		for k, v := range m.Headers {
			nm.Header.Set(k, v)
		}
		nm.Header.Set(HeaderEventID, m.ID)
		if m.Key != "" {
			nm.Header.Set(HeaderKey, m.Key)
		}
		f, err := p.js.PublishMsgAsync(nm, jetstream.WithMsgID(m.ID), jetstream.WithStallWait(stall))
		if err != nil {
			for acked < len(futures) {
				if aerr := await(); aerr != nil {
					return aerr
				}
			}
			return &PublishError{Index: i, Kind: jetStreamKind(err), Err: fmt.Errorf("jetstream publish %s: %w", m.Topic, err)}
		}
		futures = append(futures, f)
	}
	for acked < len(futures) {
		if err := await(); err != nil {
			return err
		}
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
