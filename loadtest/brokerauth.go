package loadtest

import (
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/shopmesh/shopmesh/pkg/platform/config"
	"github.com/shopmesh/shopmesh/pkg/platform/kafkaauth"
)

// BrokerAuth is how the harness's own Kafka and NATS clients authenticate (the chaos campaign's backlog
// and topic checks, the audit's dead-letter reader, the outbox benchmark): the services' way,
// pkg/platform/kafkaauth and config.NATS.Auth.
type BrokerAuth struct {
	// Kafka is the SASL/SCRAM-SHA-512 mechanism; nil: no authentication.
	Kafka sasl.Mechanism
	// NATS is the connection option of the NATS user; without a user it changes nothing.
	NATS nats.Option
}

// ReadBrokerAuth reads KAFKA_USERNAME/KAFKA_PASSWORD and NATS_USER/NATS_PASSWORD through lookup: the
// admin's credentials that infra.env exports on an authenticating set (`INFRA_AUTH=1 infra.sh up`;
// `make chaos` sources the file). Unset: no authentication. A user without its password, or the
// reverse, is an error naming the variables.
func ReadBrokerAuth(lookup config.Lookup) (BrokerAuth, error) {
	var b config.Brokers
	if err := config.FromEnv(&b, "", lookup); err != nil {
		return BrokerAuth{}, err
	}
	var errs []error
	m, err := kafkaauth.Mechanism(b.KafkaUsername, b.KafkaPassword.Reveal())
	if err != nil {
		errs = append(errs, fmt.Errorf("KAFKA_USERNAME/KAFKA_PASSWORD: %w", err))
	}
	if (b.NatsUser == "") != (b.NatsPassword == "") {
		errs = append(errs, errors.New("NATS_USER/NATS_PASSWORD: set both or neither"))
	}
	if err := errors.Join(errs...); err != nil {
		return BrokerAuth{}, err
	}
	return BrokerAuth{Kafka: m, NATS: b.Auth()}, nil
}
