package breaker

import (
	"errors"
	"fmt"
	"time"
)

// Config is the serializable part of Settings, as it appears in service configuration.
type Config struct {
	Enabled bool `help:"per-target circuit breaker on"`
	// ConsecutiveFailures opens the breaker after this many failures in a row (0 disables the rule).
	ConsecutiveFailures uint32 `help:"open the breaker after this many failures in a row (0 disables the rule)"`
	// FailureRatio opens it once at least MinRequests counted calls were seen in the current Interval and
	// this fraction of them failed (0 disables the rule).
	FailureRatio float64 `help:"open it when this share of the calls in one interval failed, 0-1 (0 disables the rule)"`
	MinRequests  uint32  `help:"calls needed in one interval before FAILURE_RATIO applies"`
	// Interval is the closed-state counting window.
	Interval time.Duration `help:"closed-state counting window"`
	// OpenTimeout is how long it stays open before probing.
	OpenTimeout time.Duration `help:"how long the breaker stays open before probing"`
	// HalfOpenProbes is how many calls may probe at once, and how many successes close it.
	HalfOpenProbes uint32 `help:"calls that may probe at once, and successes that close the breaker"`
}

// Validate names the fields that are wrong.
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	if c.ConsecutiveFailures == 0 && c.FailureRatio == 0 {
		errs = append(errs, errors.New("consecutive_failures or failure_ratio: at least one trip rule is needed"))
	}
	if c.FailureRatio < 0 || c.FailureRatio > 1 {
		errs = append(errs, fmt.Errorf("failure_ratio: must be within 0-1, got %v", c.FailureRatio))
	}
	if c.FailureRatio > 0 && c.MinRequests == 0 {
		errs = append(errs, errors.New("min_requests: must be > 0 when failure_ratio is set"))
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval: must be >= 0, got %v", c.Interval))
	}
	if c.OpenTimeout <= 0 {
		errs = append(errs, fmt.Errorf("open_timeout: must be > 0, got %v", c.OpenTimeout))
	}
	if c.HalfOpenProbes == 0 {
		errs = append(errs, errors.New("half_open_probes: must be > 0"))
	}
	return errors.Join(errs...)
}

// Settings turns c into Settings for the breaker called name; callers may then set OnStateChange and Now.
func (c Config) Settings(name string) Settings {
	return Settings{
		Name:        name,
		MaxRequests: c.HalfOpenProbes,
		Interval:    c.Interval,
		Timeout:     c.OpenTimeout,
		ReadyToTrip: Trip(c.ConsecutiveFailures, c.MinRequests, c.FailureRatio),
	}
}
