package security

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

// serviceCredential matches the per-service credentials of the authenticated servers' env file
// (ORDER_KAFKA_USERNAME, PAYMENT_NATS_PASSWORD, ...): the services get these and nothing else — not the
// admin's KAFKA_USERNAME / NATS_USER / NACOS_USERNAME.
var serviceCredential = regexp.MustCompile(`^[A-Z][A-Z0-9_]*_(KAFKA_USERNAME|KAFKA_PASSWORD|NATS_USER|NATS_PASSWORD)=`)

// TestStackOnAuthenticatedInfra is the least-privilege control: the whole suite (make run's code on the
// real servers, `make run INFRA=1`) with each service logging in to Kafka and NATS as itself (Nacos as
// the one client user rnacos has), places orders through the gateway, and they are CONFIRMED; each
// order's events reach Kafka; no service logs an authorization failure. The ACLs that refuse the
// attacks of kafka_test.go and nats_test.go let the services do their work.
func TestStackOnAuthenticatedInfra(t *testing.T) {
	for _, v := range []string{"KAFKA_USERNAME", "NATS_USER", "NACOS_USERNAME"} {
		infratest.Require(t, v)
	}
	inf := localstack.InfraEndpoints{
		DatabaseURL:    infratest.Require(t, infratest.DatabaseURL),
		KafkaBrokers:   strings.Split(infratest.Require(t, infratest.KafkaBrokers), ","),
		NATSURL:        infratest.Require(t, infratest.NatsURL),
		NacosAddr:      infratest.Require(t, infratest.NacosAddr),
		DBPrefix:       "security",
		NacosNamespace: "",
	}
	root, err := localstack.FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := localstack.Default(root)
	cfg.DataDir, cfg.RunDir = filepath.Join(dir, "data"), filepath.Join(dir, "run")
	cfg.BinDir = filepath.Join(root, "bin", "security")
	cfg.FreePorts = true
	cfg.Infra = &inf
	cfg.StopTimeout = 20 * time.Second
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, kv := range os.Environ() {
		if serviceCredential.MatchString(kv) {
			cfg.Env = append(cfg.Env, kv)
		}
	}
	key := randomKey()
	cfg.ServiceEnv = map[string][]string{localstack.Gateway: {fmt.Sprintf("GATEWAY_JWT_KEYS=k1:%s", key)}}
	for _, svc := range []string{localstack.Gateway, localstack.Order, localstack.Inventory, localstack.Payment} {
		p := strings.ToUpper(svc)
		cfg.ServiceEnv[svc] = append(cfg.ServiceEnv[svc],
			p+"_REGISTRY_NACOS_USERNAME="+os.Getenv("NACOS_USERNAME"), p+"_REGISTRY_NACOS_PASSWORD="+os.Getenv("NACOS_PASSWORD"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	s, err := localstack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("the stack on the authenticated servers: %v", err)
	}
	defer s.Stop()
	info := s.Info()

	// Orders through the gateway, each for its own customer.
	c := client(90)
	var ids []string
	for i := range 10 {
		tok := jwtSpec{"HS256", "k1", key, claims(func(c map[string]any) { c["sub"] = fmt.Sprintf("cust-%04d", 301+i) })}.String()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, info.GatewayURL+"/v1/orders",
			strings.NewReader(`{"items":[{"sku":"SKU-0001","quantity":1}]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("security-auth-%d", i))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var o struct{ ID, Status string }
		err = json.NewDecoder(resp.Body).Decode(&o)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusCreated || o.Status != "CONFIRMED" {
			t.Fatalf("order %d: %d %+v %v", i, resp.StatusCode, o, err)
		}
		ids = append(ids, o.ID)
	}
	t.Logf("%d orders CONFIRMED through the gateway on the authenticated servers", len(ids))

	// Every order's events reached shopmesh.order.events (written with order's own credentials), read
	// back as the admin.
	mech, err := kafkaauth.Mechanism(os.Getenv("KAFKA_USERNAME"), os.Getenv("KAFKA_PASSWORD"))
	if err != nil {
		t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: inf.KafkaBrokers, Topic: "shopmesh.order.events", GroupID: fmt.Sprintf("security-check-%d", time.Now().UnixNano()),
		StartOffset: kafka.FirstOffset, Dialer: kafkaauth.Dialer(mech), MaxWait: 500 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	missing := map[string]bool{}
	for _, id := range ids {
		missing[id] = true
	}
	rctx, rcancel := context.WithTimeout(ctx, 90*time.Second)
	defer rcancel()
	for len(missing) > 0 {
		m, err := r.ReadMessage(rctx)
		if err != nil {
			t.Fatalf("reading shopmesh.order.events: %v (%d orders without an event)", err, len(missing))
		}
		for id := range missing {
			if bytes.Contains(m.Key, []byte(id)) || bytes.Contains(m.Value, []byte(id)) {
				delete(missing, id)
			}
		}
	}

	// No service was refused anything by Kafka, NATS or Nacos.
	denied := regexp.MustCompile(`(?i)(TOPIC_AUTHORIZATION_FAILED|GROUP_AUTHORIZATION_FAILED|SASL_AUTHENTICATION_FAILED|Authorization Violation|Permissions Violation|authentication failed|user not found|403 Forbidden)`)
	for _, inst := range info.Instances {
		b, err := os.ReadFile(inst.Log)
		if err != nil {
			t.Fatal(err)
		}
		if m := denied.Find(b); m != nil {
			t.Errorf("%s logged an authorization failure (%q); see %s", inst.Name(), m, inst.Log)
		}
	}
}
