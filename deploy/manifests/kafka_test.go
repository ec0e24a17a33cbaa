package manifests_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"go.yaml.in/yaml/v3"

	"github.com/shopmesh/shopmesh/deploy/devsecrets"
	"github.com/shopmesh/shopmesh/deploy/servicelist"
	"github.com/shopmesh/shopmesh/pkg/platform/infratest"
	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

// kafkaDist is the Kafka 3.9.1 distribution deploy/infra/infra.sh installs (libs/*.jar): KAFKA_DIST, or
// ~/.cache/shopmesh/kafka-3.9.1.
func kafkaDist(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KAFKA_DIST")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "shopmesh", "kafka-3.9.1")
	}
	_, java := exec.LookPath("java")
	jars, _ := filepath.Glob(filepath.Join(dir, "libs", "kafka_*.jar"))
	if java != nil || len(jars) == 0 {
		if infratest.Required() {
			t.Fatalf("java or the Kafka jars (%s/libs) are missing and REQUIRE_INFRA=1: run `bash deploy/infra/infra.sh install kafka`", dir)
		}
		t.Skipf("java or the Kafka jars (%s/libs) are missing: `bash deploy/infra/infra.sh install kafka` installs them", dir)
	}
	return dir
}

// serverProperties turns the apache/kafka image's KAFKA_* variables into server.properties lines as the
// image does ('_' = '.', '__' = '_', '___' = '-', lower case).
func serverProperties(env map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(env) {
		key, ok := strings.CutPrefix(k, "KAFKA_")
		if !ok {
			continue
		}
		key = strings.NewReplacer("___", "-", "__", "_", "_", ".").Replace(key)
		fmt.Fprintf(&b, "%s=%s\n", strings.ToLower(key), env[k])
	}
	return b.String()
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// TestComposeKafkaAuth runs a real Kafka 3.9.1 broker with compose's kafka environment (the service's
// KAFKA_* variables and kafka.env of `make secrets`, as the image turns them into server.properties;
// only the host names, ports and log dir are moved to loopback), then compose's own healthcheck command
// and init/kafka-setup.sh with kafka-setup.env, as the containers do. Then, as the services: each logs
// in with its generated password and may create and write its own events topic, not another's; a wrong
// password and a client without SASL are refused.
func TestComposeKafkaAuth(t *testing.T) {
	dist := kafkaDist(t)
	root := repoRoot(t)
	list, err := servicelist.Load(root)
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
			Healthcheck struct {
				Test []string `yaml:"test"`
			} `yaml:"healthcheck"`
		} `yaml:"services"`
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "compose", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	vals := map[string]string{}
	for _, v := range devsecrets.Values(list) {
		vals[v.Name] = "pw-" + v.Name
	}
	files := devsecrets.ComposeEnv(list, vals)
	env := compose.Services["kafka"].Environment
	for _, kv := range files["kafka.env"] {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	client, internal, controller := freePort(t), freePort(t), freePort(t)
	dir := t.TempDir()
	env["KAFKA_LISTENERS"] = "CLIENT://127.0.0.1:" + client + ",INTERNAL://127.0.0.1:" + internal + ",CONTROLLER://127.0.0.1:" + controller
	env["KAFKA_ADVERTISED_LISTENERS"] = "CLIENT://127.0.0.1:" + client + ",INTERNAL://127.0.0.1:" + internal
	env["KAFKA_CONTROLLER_QUORUM_VOTERS"] = "1@127.0.0.1:" + controller
	env["KAFKA_LOG_DIRS"] = filepath.Join(dir, "data")
	props := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(props, []byte(serverProperties(env)), 0o600); err != nil {
		t.Fatal(err)
	}
	// The image's tools: thin wrappers around the distribution's classes.
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, class := range map[string]string{"kafka-configs.sh": "kafka.admin.ConfigCommand", "kafka-acls.sh": "kafka.admin.AclCommand",
		"kafka-broker-api-versions.sh": "kafka.admin.BrokerApiVersionsCommand", "kafka-storage.sh": "kafka.tools.StorageTool", "kafka-server-start.sh": "kafka.Kafka"} {
		script := fmt.Sprintf("#!/bin/sh\nexec java -Xmx256m -Dlog4j.configuration=file:%s -cp '%s/libs/*' %s \"$@\"\n", filepath.Join(dir, "log4j.properties"), dist, class)
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "log4j.properties"), []byte("log4j.rootLogger=WARN, stderr\nlog4j.appender.stderr=org.apache.log4j.ConsoleAppender\nlog4j.appender.stderr.Target=System.err\nlog4j.appender.stderr.layout=org.apache.log4j.PatternLayout\nlog4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, filepath.Join(bin, "kafka-storage.sh"), "format", "-t", "5L6g3nShT-eMCtK--X86sw", "-c", props).CombinedOutput(); err != nil {
		t.Fatalf("format: %v\n%s", err, out)
	}
	broker := exec.Command(filepath.Join(bin, "kafka-server-start.sh"), props)
	logf, err := os.Create(filepath.Join(dir, "kafka.log"))
	if err != nil {
		t.Fatal(err)
	}
	broker.Stdout, broker.Stderr = logf, logf
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = broker.Process.Kill()
		_ = broker.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(logf.Name())
			t.Logf("kafka log:\n%s", log)
		}
	})

	// The healthcheck, as compose runs it (CMD-SHELL: sh -c; "$$" is compose's escape of "$").
	hc := compose.Services["kafka"].Healthcheck.Test
	if len(hc) != 2 || hc[0] != "CMD-SHELL" {
		t.Fatalf("kafka healthcheck %q, want CMD-SHELL and one command", hc)
	}
	check := strings.NewReplacer("$$", "$", "localhost:9094", "127.0.0.1:"+internal, "/opt/kafka/bin/", bin+"/", "/tmp/admin.properties", filepath.Join(dir, "admin.properties")).Replace(hc[1])
	for {
		cmd := exec.CommandContext(ctx, "sh", "-c", check)
		cmd.Env = append(os.Environ(), "SHOPMESH_KAFKA_ADMIN_PASSWORD="+vals["kafka-admin-password"])
		out, err := cmd.CombinedOutput()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the healthcheck never passed: %v\n%s", err, out)
		}
		time.Sleep(2 * time.Second)
	}

	setup := exec.CommandContext(ctx, "sh", filepath.Join(root, "deploy", "compose", "init", "kafka-setup.sh"))
	setup.Env = append(os.Environ(), "KAFKA_BIN="+bin, "KAFKA_SETUP_BOOTSTRAP=127.0.0.1:"+internal)
	setup.Env = append(setup.Env, files["kafka-setup.env"]...)
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("kafka-setup.sh: %v\n%s", err, out)
	}

	addr := kafka.TCP("127.0.0.1:" + client)
	var kafkaUsers []servicelist.Service
	for _, s := range list {
		if s.Kafka && len(s.KafkaWrites) > 0 {
			kafkaUsers = append(kafkaUsers, s)
		}
	}
	for i, s := range kafkaUsers {
		other := kafkaUsers[(i+1)%len(kafkaUsers)]
		pw := envValue(files[s.Name+".env"], s.Prefix()+"_KAFKA_PASSWORD")
		own, foreign := s.KafkaWrites[0], other.KafkaWrites[0]
		if err := createAndWrite(ctx, addr, s.Name, pw, own); err != nil {
			t.Errorf("%s cannot create and write its own topic %s: %v", s.Name, own, err)
		}
		if err := createAndWrite(ctx, addr, s.Name, pw, foreign); err == nil || !strings.Contains(err.Error(), "Authorization Failed") {
			t.Errorf("%s writing %s's topic %s: %v, want an authorization failure", s.Name, other.Name, foreign, err)
		}
		if err := write(ctx, addr, s.Name, pw+"x", own); err == nil || !strings.Contains(err.Error(), "SASL Authentication Failed") {
			t.Errorf("%s with a wrong password: %v, want SASL Authentication Failed", s.Name, err)
		}
	}
	plain := &kafka.Client{Addr: addr, Timeout: 5 * time.Second}
	if _, err := plain.Metadata(ctx, &kafka.MetadataRequest{}); err == nil {
		t.Error("a client without SASL got the metadata")
	}
}

// createAndWrite creates topic and writes one message to it as user, as a service's outbox does.
func createAndWrite(ctx context.Context, addr net.Addr, user, password, topic string) error {
	m, err := kafkaauth.Mechanism(user, password)
	if err != nil {
		return err
	}
	c := &kafka.Client{Addr: addr, Timeout: 10 * time.Second, Transport: kafkaauth.Transport(m)}
	r, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}})
	if err != nil {
		return err
	}
	if err := r.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return err
	}
	return write(ctx, addr, user, password, topic)
}

// write writes one message to topic as user.
func write(ctx context.Context, addr net.Addr, user, password, topic string) error {
	m, err := kafkaauth.Mechanism(user, password)
	if err != nil {
		return err
	}
	w := &kafka.Writer{Addr: addr, Topic: topic, Transport: kafkaauth.Transport(m), MaxAttempts: 3, WriteTimeout: 10 * time.Second}
	defer w.Close()
	return w.WriteMessages(ctx, kafka.Message{Value: []byte("event")})
}
