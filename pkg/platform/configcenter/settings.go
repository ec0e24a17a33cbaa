// Package configcenter applies the settings that may change while a service runs — rate limits, circuit
// breaker thresholds, fault injection and the log level — from layered documents (a shared one, then the
// service's own) over the defaults main loaded from file and environment. Every change is validated as a
// whole before anything is applied; an invalid document is logged and ignored, the previous values stay.
package configcenter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/fault"
	"github.com/shopmesh/shopmesh/pkg/platform/ratelimit"
)

// Settings are the dynamic settings of one service.
type Settings struct {
	LogLevel  slog.Level
	RateLimit ratelimit.Limits
	Breaker   breaker.Config
	Fault     fault.Config
}

// Validate reports every problem, naming the field.
func (s Settings) Validate() error {
	var errs []error
	if err := s.RateLimit.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("rate_limit: %w", err))
	}
	if err := s.Breaker.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("breaker: %w", err))
	}
	if err := s.Fault.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("fault: %w", err))
	}
	return errors.Join(errs...)
}

func (s Settings) clone() Settings {
	s.RateLimit.Methods = maps.Clone(s.RateLimit.Methods)
	s.Fault.Rules = maps.Clone(s.Fault.Rules)
	return s
}

// The document format (YAML); every key is optional and overrides the layer below it:
//
//	log_level: debug
//	rate_limit:
//	  default: {rps: 100, burst: 20, max_in_flight: 50}
//	  methods:
//	    /shopmesh.order.v1.OrderService/PlaceOrder: {rps: 10}
//	  max_in_flight: 1000
//	  retry_after: 100ms
//	breaker: {enabled: true, consecutive_failures: 5, failure_ratio: 0.5, min_requests: 20,
//	          interval: 10s, open_timeout: 5s, half_open_probes: 3}
//	fault:
//	  enabled: true
//	  rules:
//	    "*": {delay: 300ms, delay_percent: 100}
//
// A method or fault rule replaces the rule of the same key below it as a whole.
type document struct {
	LogLevel  *string       `yaml:"log_level"`
	RateLimit *rateLimitDoc `yaml:"rate_limit"`
	Breaker   *breakerDoc   `yaml:"breaker"`
	Fault     *faultDoc     `yaml:"fault"`
}

type ruleDoc struct {
	RPS         *float64 `yaml:"rps"`
	Burst       *int     `yaml:"burst"`
	MaxInFlight *int     `yaml:"max_in_flight"`
}

type rateLimitDoc struct {
	Default     *ruleDoc           `yaml:"default"`
	Methods     map[string]ruleDoc `yaml:"methods"`
	MaxInFlight *int               `yaml:"max_in_flight"`
	RetryAfter  *time.Duration     `yaml:"retry_after"`
}

type breakerDoc struct {
	Enabled             *bool          `yaml:"enabled"`
	ConsecutiveFailures *uint32        `yaml:"consecutive_failures"`
	FailureRatio        *float64       `yaml:"failure_ratio"`
	MinRequests         *uint32        `yaml:"min_requests"`
	Interval            *time.Duration `yaml:"interval"`
	OpenTimeout         *time.Duration `yaml:"open_timeout"`
	HalfOpenProbes      *uint32        `yaml:"half_open_probes"`
}

type faultRuleDoc struct {
	Delay        time.Duration `yaml:"delay"`
	DelayPercent float64       `yaml:"delay_percent"`
	AbortCode    string        `yaml:"abort_code"`
	AbortPercent float64       `yaml:"abort_percent"`
}

type faultDoc struct {
	Enabled *bool                   `yaml:"enabled"`
	Rules   map[string]faultRuleDoc `yaml:"rules"`
}

// parse decodes one layer strictly: unknown keys and trailing documents are errors.
func parse(content string) (document, error) {
	var d document
	if strings.TrimSpace(content) == "" {
		return d, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader([]byte(content)))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil && !errors.Is(err, io.EOF) {
		return document{}, fmt.Errorf("parse: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return document{}, errors.New("parse: more than one YAML document")
	}
	return d, nil
}

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// overlay returns s with the layer d applied on top.
func (d document) overlay(s Settings) (Settings, error) {
	s = s.clone()
	if d.LogLevel != nil {
		if err := s.LogLevel.UnmarshalText([]byte(*d.LogLevel)); err != nil {
			return s, fmt.Errorf("log_level: %w", err)
		}
	}
	if r := d.RateLimit; r != nil {
		if r.Default != nil {
			s.RateLimit.Default = r.Default.overlay(s.RateLimit.Default)
		}
		for m, rule := range r.Methods {
			if s.RateLimit.Methods == nil {
				s.RateLimit.Methods = map[string]ratelimit.Rule{}
			}
			s.RateLimit.Methods[m] = rule.overlay(ratelimit.Rule{})
		}
		set(&s.RateLimit.MaxInFlight, r.MaxInFlight)
		set(&s.RateLimit.RetryAfter, r.RetryAfter)
	}
	if b := d.Breaker; b != nil {
		set(&s.Breaker.Enabled, b.Enabled)
		set(&s.Breaker.ConsecutiveFailures, b.ConsecutiveFailures)
		set(&s.Breaker.FailureRatio, b.FailureRatio)
		set(&s.Breaker.MinRequests, b.MinRequests)
		set(&s.Breaker.Interval, b.Interval)
		set(&s.Breaker.OpenTimeout, b.OpenTimeout)
		set(&s.Breaker.HalfOpenProbes, b.HalfOpenProbes)
	}
	if f := d.Fault; f != nil {
		set(&s.Fault.Enabled, f.Enabled)
		for m, r := range f.Rules {
			if s.Fault.Rules == nil {
				s.Fault.Rules = map[string]fault.Rule{}
			}
			s.Fault.Rules[m] = fault.Rule(r)
		}
	}
	return s, nil
}

func (r ruleDoc) overlay(base ratelimit.Rule) ratelimit.Rule {
	set(&base.RPS, r.RPS)
	set(&base.Burst, r.Burst)
	set(&base.MaxInFlight, r.MaxInFlight)
	return base
}
