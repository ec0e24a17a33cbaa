// Package kafkaauth is the one place the platform's Kafka clients get their authentication: SASL
// SCRAM-SHA-512 with a user name and password (the brokers of `INFRA_AUTH=1 infra.sh up`, compose and
// k8s), or none. Writers and kafka.Client take Transport, readers and direct connections take Dialer;
// both give the same behaviour as kafka-go's defaults when the mechanism is nil.
package kafkaauth

import (
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Mechanism returns the SCRAM-SHA-512 mechanism of username and password, or nil (no authentication)
// when both are empty. One without the other is an error naming the missing one.
func Mechanism(username, password string) (sasl.Mechanism, error) {
	switch {
	case username == "" && password == "":
		return nil, nil
	case username == "":
		return nil, errors.New("kafka_username: must be set with kafka_password")
	case password == "":
		return nil, errors.New("kafka_password: must be set with kafka_username")
	}
	m, err := scram.Mechanism(scram.SHA512, username, password)
	if err != nil {
		// SASLprep refused a character; the error never holds the password.
		return nil, fmt.Errorf("kafka_username/kafka_password: not a valid SCRAM credential: %w", err)
	}
	return m, nil
}

// Transport returns the round tripper of a kafka.Writer or kafka.Client authenticating with m: nil
// (kafka-go's shared default transport) when m is nil.
func Transport(m sasl.Mechanism) kafka.RoundTripper {
	if m == nil {
		return nil
	}
	return &kafka.Transport{SASL: m, DialTimeout: kafka.DefaultDialer.Timeout}
}

// Dialer returns the dialer of a kafka.Reader or a direct kafka connection authenticating with m:
// kafka-go's default dialer settings, with m.
func Dialer(m sasl.Mechanism) *kafka.Dialer {
	d := *kafka.DefaultDialer
	d.SASLMechanism = m
	return &d
}
