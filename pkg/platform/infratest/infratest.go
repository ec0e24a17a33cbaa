// Package infratest lets tests that need a real server (PostgreSQL, Kafka, NATS,
// Nacos, Jaeger) find it, and makes their absence loud where it must be: the test
// skips with a reason on a laptop, and fails when REQUIRE_INFRA=1 (set in CI).
//
// Tests are the one place below cmd/ that read the environment: the endpoints are
// written by `make infra-up` to .run/infra.env and exported by the Makefile.
package infratest

import (
	"os"
	"testing"
)

// Endpoint variables written by deploy/infra/infra.sh.
const (
	DatabaseURL    = "DATABASE_URL"
	KafkaBrokers   = "KAFKA_BROKERS"
	NatsURL        = "NATS_URL"
	NacosAddr      = "NACOS_ADDR"
	OTLPEndpoint   = "OTLP_ENDPOINT"
	JaegerQueryURL = "JAEGER_QUERY_URL"
)

// The admin credential of an authenticating Kafka (`INFRA_AUTH=1 infra.sh up`); each service's is
// <P>_KAFKA_USERNAME and <P>_KAFKA_PASSWORD.
const (
	KafkaUsername = "KAFKA_USERNAME"
	KafkaPassword = "KAFKA_PASSWORD"
)

// Required reports whether missing servers must fail tests (REQUIRE_INFRA=1).
func Required() bool { return os.Getenv("REQUIRE_INFRA") == "1" }

// Require returns the value of the environment variable that names a real
// server's endpoint. When it is unset the test is skipped with a reason, or
// fails when REQUIRE_INFRA=1: a test that needs a server never passes silently.
func Require(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v != "" {
		return v
	}
	if Required() {
		t.Fatalf("%s is not set and REQUIRE_INFRA=1: start the servers with `make infra-up`", name)
	}
	t.Skipf("%s is not set: run `make infra-up` to test against the real server", name)
	return ""
}
