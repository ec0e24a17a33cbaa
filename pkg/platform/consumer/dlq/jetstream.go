package dlq

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shopmesh/shopmesh/pkg/platform/consumer"
)

// JetStream reads and replays one dead-letter stream (the stream capturing "<subject>.dlq").
type JetStream struct {
	JS     jetstream.JetStream
	Stream string
	// Durable is the consumer on Stream whose acknowledgements record the replays (default
	// DefaultReplayer).
	Durable string
	// Timeout bounds each server request (default 10 s).
	Timeout time.Duration
}

func (j JetStream) withDefaults() JetStream {
	if j.Durable == "" {
		j.Durable = DefaultReplayer
	}
	if j.Timeout <= 0 {
		j.Timeout = 10 * time.Second
	}
	return j
}

func jsEntry(stream string, seq uint64, subject string, data []byte, hdr nats.Header) Entry {
	h := make(map[string]string, len(hdr))
	for k, v := range hdr {
		if len(v) > 0 {
			h[k] = v[0]
		}
	}
	e := entry(fmt.Sprintf("%s/%d", stream, seq), nil, data, h)
	if e.Topic == "" {
		e.Topic = subject
	}
	return e
}

// replayedTo returns the sequence below which the replay durable has acknowledged everything (0
// when it does not exist yet).
func (j JetStream) replayedTo(ctx context.Context, s jetstream.Stream) (uint64, error) {
	c, err := s.Consumer(ctx, j.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.AckFloor.Stream + 1, nil
}

// List returns every dead letter the stream holds, in sequence order.
func (j JetStream) List(ctx context.Context) ([]Entry, error) {
	j = j.withDefaults()
	rctx, cancel := context.WithTimeout(ctx, j.Timeout)
	defer cancel()
	s, err := j.JS.Stream(rctx, j.Stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", j.Stream, err)
	}
	info, err := s.Info(rctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", j.Stream, err)
	}
	replayed, err := j.replayedTo(rctx, s)
	if err != nil {
		return nil, fmt.Errorf("replay durable %s: %w", j.Durable, err)
	}
	var out []Entry
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		gctx, cancel := context.WithTimeout(ctx, j.Timeout)
		m, err := s.GetMsg(gctx, seq)
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted
		}
		if err != nil {
			return out, fmt.Errorf("read %s/%d: %w", j.Stream, seq, err)
		}
		e := jsEntry(j.Stream, seq, m.Subject, m.Data, m.Header)
		e.Replayed = seq < replayed
		out = append(out, e)
	}
	return out, nil
}

// Replay republishes the dead letters the replay durable has not acknowledged to their original
// subjects, each under a new Nats-Msg-Id (the original one would be dropped as a duplicate inside the
// stream's window) with its event id header kept, and acknowledges each once republished. only, when
// not nil, selects entries by event id, as in Kafka.Replay: a filtered replay reads the stream with an
// ephemeral consumer and records nothing.
func (j JetStream) Replay(ctx context.Context, only func(Entry) bool) (Report, error) {
	j = j.withDefaults()
	cctx, cancel := context.WithTimeout(ctx, j.Timeout)
	defer cancel()
	var (
		c   jetstream.Consumer
		err error
	)
	if only == nil {
		c, err = j.JS.CreateOrUpdateConsumer(cctx, j.Stream, jetstream.ConsumerConfig{
			Durable: j.Durable, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
			AckWait: time.Minute, MaxAckPending: 1000,
		})
	} else {
		c, err = j.JS.OrderedConsumer(cctx, j.Stream, jetstream.OrderedConsumerConfig{})
	}
	if err != nil {
		return Report{}, fmt.Errorf("replay consumer on %s: %w", j.Stream, err)
	}
	var rep Report
	for {
		info, err := c.Info(cctx)
		if err != nil {
			return rep, fmt.Errorf("replay consumer on %s: %w", j.Stream, err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			return rep, nil
		}
		batch, err := c.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return rep, fmt.Errorf("read %s: %w", j.Stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return rep, err
			}
			e := jsEntry(j.Stream, md.Sequence.Stream, m.Subject(), m.Data(), m.Headers())
			switch {
			case only != nil && !only(e):
				rep.Skipped++
				continue
			case e.Headers[consumer.HeaderDLQTopic] == "":
				rep.Unroutable++
			default:
				out := nats.NewMsg(e.Topic)
				out.Data = e.Payload
				for k, v := range e.republished() {
					out.Header.Set(k, v)
				}
				out.Header.Del(jetstream.MsgIDHeader)
				pctx, cancel := context.WithTimeout(ctx, j.Timeout)
				_, err := j.JS.PublishMsg(pctx, out, jetstream.WithMsgID("replay-"+e.EventID+"@"+e.Position))
				cancel()
				if err != nil {
					return rep, fmt.Errorf("republish %s: %w", e.Position, err)
				}
				rep.Replayed = append(rep.Replayed, e)
			}
			if only == nil {
				actx, cancel := context.WithTimeout(ctx, j.Timeout)
				err := m.DoubleAck(actx)
				cancel()
				if err != nil {
					return rep, fmt.Errorf("record replay of %s: %w", e.Position, err)
				}
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return rep, fmt.Errorf("read %s: %w", j.Stream, err)
		}
		if n == 0 && only != nil {
			return rep, nil
		}
	}
}
