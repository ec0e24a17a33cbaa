package security

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/outbox"
)

// natsTries is how many times each NATS attack is tried.
const natsTries = 20

// The NATS subjects and streams of the services (services/<svc>/internal/events; infra.sh gives each
// service's user the right to publish only its own).
const (
	stockSubject  = "shopmesh.stock."        // inventory's, + sku
	stockStream   = "SHOPMESH_STOCK"         // captures shopmesh.stock.*
	statusSubject = "shopmesh.order.status." // order's, + order id
	statusStream  = "SHOPMESH_ORDER_STATUS"  // captures shopmesh.order.status.>
)

// natsAuth is the authenticated NATS of `INFRA_AUTH=1 infra.sh up nats` (its infra.env): the URL, the
// admin's credential and each service's setting as the service reads it (<P>_NATS_USER/_PASSWORD).
type natsAuth struct {
	url                     string
	admin, inventory, order config.NATS
}

// orderUser and inventoryUser are the services' settings (method values for tables declared before the
// server is known).
func (n natsAuth) orderUser() config.NATS     { return n.order }
func (n natsAuth) inventoryUser() config.NATS { return n.inventory }

func requireNATSAuth(t *testing.T) natsAuth {
	t.Helper()
	url := infratest.Require(t, infratest.NatsURL)
	user := func(p string) config.NATS {
		return config.NATS{NatsURL: url, NatsUser: infratest.Require(t, p+"NATS_USER"),
			NatsPassword: config.Secret(infratest.Require(t, p+"NATS_PASSWORD"))}
	}
	return natsAuth{url: url, admin: user(""), inventory: user("INVENTORY_"), order: user("ORDER_")}
}

// natsConn connects with n's credential, collecting the server's asynchronous errors (permission
// violations) in errs.
type natsConn struct {
	*nats.Conn
	mu   sync.Mutex
	errs []string
}

func connectNATS(t *testing.T, n config.NATS, opts ...nats.Option) (*natsConn, error) {
	t.Helper()
	c := &natsConn{}
	opts = append([]nats.Option{nats.Name("security-suite"), nats.Timeout(5 * time.Second), nats.MaxReconnects(0), n.Auth(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err.Error())
			c.mu.Unlock()
		})}, opts...)
	nc, err := nats.Connect(n.NatsURL, opts...)
	if err != nil {
		return nil, err
	}
	c.Conn = nc
	t.Cleanup(nc.Close)
	return c, nil
}

// violation waits (bounded) for the server's permissions violation naming subject.
func (c *natsConn) violation(subject string) (string, bool) {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		c.mu.Lock()
		for _, e := range c.errs {
			if strings.Contains(e, "Permissions Violation") && strings.Contains(e, `"`+subject+`"`) {
				c.mu.Unlock()
				return e, true
			}
		}
		c.mu.Unlock()
	}
	return "", false
}

func randHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// streams creates the services' streams as the services do (each with its own user) and returns the
// admin's JetStream, which checks what they store.
func streams(t *testing.T, a natsAuth) jetstream.JetStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, s := range []struct {
		user config.NATS
		cfg  jetstream.StreamConfig
	}{
		{a.inventory, jetstream.StreamConfig{Name: stockStream, Subjects: []string{stockSubject + "*"}, Storage: jetstream.FileStorage,
			MaxAge: 24 * time.Hour, MaxMsgsPerSubject: 100, Duplicates: 2 * time.Minute}},
		{a.order, jetstream.StreamConfig{Name: statusStream, Subjects: []string{statusSubject + ">"}, Storage: jetstream.FileStorage,
			Duplicates: 2 * time.Minute, MaxAge: 24 * time.Hour}},
	} {
		c, err := connectNATS(t, s.user)
		if err != nil {
			t.Fatalf("%s connects: %v", s.user.NatsUser, err)
		}
		js, err := jetstream.New(c.Conn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateOrUpdateStream(ctx, s.cfg); err != nil {
			t.Fatalf("%s creates its stream %s: %v", s.user.NatsUser, s.cfg.Name, err)
		}
	}
	admin, err := connectNATS(t, a.admin)
	if err != nil {
		t.Fatalf("admin connects: %v", err)
	}
	js, err := jetstream.New(admin.Conn)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// stored reports whether stream holds a message on subject.
func stored(ctx context.Context, js jetstream.JetStream, stream, subject string) (bool, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false, err
	}
	_, err = s.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	return err == nil, err
}

// An event published to NATS without credentials, or with a wrong password, never gets in: the server
// refuses the connection.
func TestNATSWithoutCredentials(t *testing.T) {
	cases := []struct {
		attack string
		cred   func(a natsAuth) config.NATS
	}{
		{"NATS: connect (to forge an event) without credentials", func(a natsAuth) config.NATS { return config.NATS{NatsURL: a.url} }},
		{"NATS: connect as a service with a wrong password", func(a natsAuth) config.NATS {
			return config.NATS{NatsURL: a.url, NatsUser: a.inventory.NatsUser, NatsPassword: config.Secret(randHex(t))}
		}},
		{"NATS: connect as an unknown user", func(a natsAuth) config.NATS {
			return config.NATS{NatsURL: a.url, NatsUser: "intruder", NatsPassword: config.Secret(randHex(t))}
		}},
	}
	// The rows first: without the server the test skips, and the table lists them as skipped.
	rows := make([]*Attack, len(cases))
	for i, c := range cases {
		rows[i] = attack(t, c.attack, "connection refused: Authorization Violation")
	}
	a := requireNATSAuth(t)
	for i, c := range cases {
		at, cred := rows[i], c.cred(a)
		for range natsTries {
			at.try(func() (bool, error) {
				conn, err := connectNATS(t, cred)
				if err == nil {
					conn.Close()
					return true, nil
				}
				if errors.Is(err, nats.ErrAuthorization) || strings.Contains(err.Error(), "Authorization Violation") {
					at.saw("Authorization Violation")
					return false, nil
				}
				return false, err
			})
		}
	}
}

// A service's user publishing onto another service's subjects (an event forged in its name), or asking
// JetStream to delete another service's stream, is refused with a permissions violation, and the
// stream stores nothing; subscribing to another service's subjects is refused too.
func TestNATSServiceUsersStayInTheirSubjects(t *testing.T) {
	cases := []struct {
		attack        string
		as            func(a natsAuth) config.NATS
		subject       func(id string) string
		stream        string // where a forged event would be stored ("" for API requests)
		streamSurvive string
	}{
		{attack: "NATS: event forged onto inventory's stock subject with order's user", as: natsAuth.orderUser,
			subject: func(id string) string { return stockSubject + "SEC-FORGED-" + id }, stream: stockStream},
		{attack: "NATS: event forged onto order's status subject with inventory's user", as: natsAuth.inventoryUser,
			subject: func(id string) string { return statusSubject + "sec-forged-" + id }, stream: statusStream},
		{attack: "NATS: another service's stream deleted through the JetStream API", as: natsAuth.orderUser,
			subject: func(string) string { return "$JS.API.STREAM.DELETE." + stockStream }, streamSurvive: stockStream},
	}
	// The rows first: without the server the test skips, and the table lists them as skipped.
	rows := make([]*Attack, len(cases))
	for i, c := range cases {
		rows[i] = attack(t, c.attack, "Permissions Violation for Publish; nothing stored")
	}
	read := attack(t, "NATS: another service's events read (subscribe with order's user to inventory's subjects)", "Permissions Violation for Subscription")
	a := requireNATSAuth(t)
	js := streams(t, a)
	for i, c := range cases {
		at := rows[i]
		conn, err := connectNATS(t, c.as(a))
		if err != nil {
			t.Fatalf("%s connects: %v", c.as(a).NatsUser, err)
		}
		for range natsTries {
			at.try(func() (bool, error) {
				subj := c.subject(randHex(t))
				msg := nats.NewMsg(subj)
				msg.Data = []byte(`{"forged":true}`)
				msg.Reply = conn.NewRespInbox()
				if err := conn.PublishMsg(msg); err != nil {
					return false, err
				}
				if err := conn.Flush(); err != nil {
					return false, err
				}
				e, refused := conn.violation(subj)
				if refused {
					at.saw("Permissions Violation for Publish")
				} else {
					t.Logf("no permissions violation seen for %s", subj)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				defer cancel()
				if c.stream != "" {
					in, err := stored(ctx, js, c.stream, subj)
					if err != nil {
						return false, err
					}
					return in || !refused, nil
				}
				if _, err := js.Stream(ctx, c.streamSurvive); err != nil {
					return true, fmt.Errorf("stream %s after the request: %w (%s)", c.streamSurvive, err, e)
				}
				return !refused, nil
			})
		}
	}

	at := read
	conn, err := connectNATS(t, a.order)
	if err != nil {
		t.Fatal(err)
	}
	for range natsTries {
		at.try(func() (bool, error) {
			subj := stockSubject + "SEC-READ-" + randHex(t)
			sub, err := conn.SubscribeSync(subj)
			if err != nil {
				return false, err
			}
			defer func() { _ = sub.Unsubscribe() }()
			if err := conn.Flush(); err != nil {
				return false, err
			}
			_, refused := conn.violation(subj)
			if refused {
				at.saw("Permissions Violation for Subscription")
			}
			return !refused, nil
		})
	}
}

// The control: each service's user publishes its events through the platform's JetStream publisher
// (the outbox relay's) onto its own subjects, they are stored, and it receives them on its own
// subscriptions (the live feeds) — the permissions refuse only what they must.
func TestNATSServiceUsersPublishTheirOwnEvents(t *testing.T) {
	a := requireNATSAuth(t)
	js := streams(t, a)
	for _, c := range []struct {
		as      config.NATS
		subject string
		stream  string
		feed    string // what the service's live feed subscribes to
	}{
		{a.inventory, stockSubject + "SEC-OK-" + randHex(t), stockStream, stockSubject + "*"}, // WatchStock of every SKU
		{a.order, statusSubject + "sec-ok-" + randHex(t), statusStream, ""},                   // WatchOrder: the order's subject
	} {
		if c.feed == "" {
			c.feed = c.subject
		}
		conn, err := connectNATS(t, c.as)
		if err != nil {
			t.Fatalf("%s connects: %v", c.as.NatsUser, err)
		}
		sub, err := conn.SubscribeSync(c.feed)
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Flush(); err != nil {
			t.Fatal(err)
		}
		own, err := jetstream.New(conn.Conn)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err = outbox.NewJetStream(own).Publish(ctx, []outbox.Message{{ID: randHex(t), Topic: c.subject, Payload: []byte("ok")}})
		if err != nil {
			cancel()
			t.Fatalf("%s publishes on %s: %v", c.as.NatsUser, c.subject, err)
		}
		if in, err := stored(ctx, js, c.stream, c.subject); err != nil || !in {
			cancel()
			t.Fatalf("%s's event on %s stored = %v, %v", c.as.NatsUser, c.subject, in, err)
		}
		if _, err := sub.NextMsgWithContext(ctx); err != nil {
			cancel()
			t.Fatalf("%s's feed did not receive its event: %v", c.as.NatsUser, err)
		}
		cancel()
		if len(conn.errs) != 0 {
			t.Fatalf("%s got errors: %v", c.as.NatsUser, conn.errs)
		}
	}
}
