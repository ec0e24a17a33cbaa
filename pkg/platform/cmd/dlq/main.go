// Command dlq lists and replays the dead letters shopmesh consumers write, for any topic or stream:
//
//	dlq list   -brokers 127.0.0.1:9092 -topic shopmesh.order.events.dlq [-group shopmesh-dlq-replay]
//	dlq replay -brokers 127.0.0.1:9092 -topic shopmesh.order.events.dlq [-group …] [-event id,id…]
//	dlq list   -nats nats://127.0.0.1:4222 -stream ORDERS_DLQ [-durable shopmesh-dlq-replay]
//	dlq replay -nats nats://127.0.0.1:4222 -stream ORDERS_DLQ [-durable …] [-event id,id…]
//
// Against brokers that authenticate (infra.sh with INFRA_AUTH=1), the Kafka commands use the
// SASL/SCRAM-SHA-512 credential in KAFKA_USERNAME and KAFKA_PASSWORD (infra.env's admin user), the
// NATS commands the user and password in NATS_USER and NATS_PASSWORD.
//
// list prints one line per dead letter: its position, event id, original topic and position, the
// consumer that gave up, cause, attempts, time, whether a replay already sent it, and the reason.
// replay republishes the entries not yet replayed to their original topic with their event id (the
// consumers' inboxes drop the copies they already applied) and records that on the broker — the
// group's committed offsets on the dead-letter topic, the durable's acknowledgements on the stream —
// so running it again sends only newer dead letters. With -event it sends only those entries and
// records nothing. Fix the cause (deploy the corrected handler) before replaying: an entry that fails
// permanently again is dead-lettered again.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/consumer/dlq"
	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dlq:", err)
		os.Exit(1)
	}
}

type tool interface {
	List(context.Context) ([]dlq.Entry, error)
	Replay(context.Context, func(dlq.Entry) bool) (dlq.Report, error)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		return errors.New("usage: dlq list|replay (-brokers B -topic T.dlq [-group G] | -nats URL -stream S [-durable D]) [-event ids] [-timeout d]")
	}
	verb := args[0]
	fs := flag.NewFlagSet("dlq "+verb, flag.ContinueOnError)
	fs.SetOutput(stdout)
	brokers := fs.String("brokers", "", "Kafka bootstrap brokers, comma-separated")
	topic := fs.String("topic", "", "Kafka dead-letter topic, e.g. shopmesh.order.events.dlq")
	group := fs.String("group", dlq.DefaultReplayer, "Kafka consumer group recording replays")
	natsURL := fs.String("nats", "", "NATS URL (JetStream)")
	stream := fs.String("stream", "", "JetStream dead-letter stream")
	durable := fs.String("durable", dlq.DefaultReplayer, "JetStream durable recording replays")
	events := fs.String("event", "", "replay: only these event ids, comma-separated (nothing is recorded)")
	timeout := fs.Duration("timeout", 2*time.Minute, "bound of the whole command")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	var t tool
	switch {
	case *brokers != "" && *topic != "" && *natsURL == "":
		auth, err := kafkaauth.Mechanism(getenv("KAFKA_USERNAME"), getenv("KAFKA_PASSWORD"))
		if err != nil {
			return fmt.Errorf("KAFKA_USERNAME/KAFKA_PASSWORD: %w", err)
		}
		t = dlq.Kafka{Brokers: strings.Split(*brokers, ","), SASL: auth, Topic: *topic, Group: *group}
	case *natsURL != "" && *stream != "" && *brokers == "":
		n := config.NATS{NatsURL: *natsURL, NatsUser: getenv("NATS_USER"), NatsPassword: config.Secret(getenv("NATS_PASSWORD"))}
		if err := n.Validate(); err != nil {
			return fmt.Errorf("NATS_USER/NATS_PASSWORD: %w", err)
		}
		nc, err := nats.Connect(*natsURL, nats.Name("dlq"), nats.Timeout(10*time.Second), n.Auth())
		if err != nil {
			return fmt.Errorf("nats %s: %w", *natsURL, err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		t = dlq.JetStream{JS: js, Stream: *stream, Durable: *durable}
	default:
		return errors.New("give either -brokers and -topic (Kafka) or -nats and -stream (JetStream)")
	}

	if verb == "list" {
		entries, err := t.List(ctx)
		if err != nil {
			return err
		}
		printEntries(stdout, entries)
		fmt.Fprintf(stdout, "%d dead letter(s)\n", len(entries))
		return nil
	}
	var only func(dlq.Entry) bool
	if *events != "" {
		ids := map[string]bool{}
		for _, id := range strings.Split(*events, ",") {
			ids[strings.TrimSpace(id)] = true
		}
		only = func(e dlq.Entry) bool { return ids[e.EventID] }
	}
	rep, err := t.Replay(ctx, only)
	printEntries(stdout, rep.Replayed)
	fmt.Fprintf(stdout, "replayed %d, skipped %d, unroutable %d\n", len(rep.Replayed), rep.Skipped, rep.Unroutable)
	return err
}

func printEntries(w io.Writer, entries []dlq.Entry) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POSITION\tEVENT\tTOPIC\tORIGIN\tCONSUMER\tCAUSE\tATTEMPTS\tTIME\tREPLAYED\tREASON")
	for _, e := range entries {
		at := ""
		if !e.Time.IsZero() {
			at = e.Time.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%v\t%s\n", e.Position, e.EventID, e.Topic, e.Origin, e.Consumer,
			e.Cause, e.Attempts, at, e.Replayed, strings.ReplaceAll(e.Reason, "\n", " "))
	}
	_ = tw.Flush()
}
