// Package secret is the credential value of the platform's configuration (config.Secret is this type),
// in a package of its own so that sections config imports (registry/nacos) can hold one too.
package secret

import "log/slog"

// Redacted is how a Value prints, logs and marshals.
const Redacted = "[redacted]"

// Value holds a credential. It prints, logs and marshals as "[redacted]"; only Reveal gives the value.
type Value string

// Reveal returns the secret value, for the one place that needs it.
func (s Value) Reveal() string { return string(s) }

// String hides the value from fmt.
func (s Value) String() string { return Redacted }

// GoString hides the value from %#v.
func (s Value) GoString() string { return Redacted }

// LogValue hides the value from slog.
func (s Value) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalText hides the value from encoders (JSON, YAML, config dumps).
func (s Value) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
