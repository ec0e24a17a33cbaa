// Package smoke holds one smoke test per real server of the infrastructure
// harness (deploy/infra): each proves the server is up and that the client library
// shopmesh uses talks to it the way the services will (consumer groups with explicit
// commits, durable JetStream consumers with explicit acks, Nacos registration and
// discovery, OTLP export read back through Jaeger's query API).
//
// Kafka and JetStream also run against the embedded defaults (kfake, an in-process
// nats-server), so `make test` on a machine with only Go exercises the same code.
package smoke
