package platform

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/shopmesh/shopmesh/pkg/platform/configcenter"
	"github.com/shopmesh/shopmesh/pkg/platform/registry"
)

// liveConfig is the process's config center: its source and the center applying it.
type liveConfig struct {
	src    ConfigSource
	center *configcenter.Center
}

// newConfigCenter builds the config center Config.ConfigCenter selects: base settings from the
// configuration, targets the running limiter, fault injector and breakers (and the log level given with
// WithLogLevel). Nothing is read until RunConfigCenter.
func (p *Platform) newConfigCenter() error {
	if !p.cfg.ConfigCenter.Enabled() {
		return nil
	}
	newSource := configSource(p.opts.backends, p.cfg.ConfigCenter.Backend)
	if newSource == nil {
		return fmt.Errorf("config center: backend %q: %w", p.cfg.ConfigCenter.Backend, registry.ErrNotLinked)
	}
	src, err := newSource(p.cfg)
	if err != nil {
		return fmt.Errorf("config center: %w", err)
	}
	base := configcenter.Settings{
		LogLevel:  slog.LevelInfo,
		RateLimit: p.cfg.RateLimit,
		Breaker:   p.cfg.Client.Breaker,
		Fault:     p.cfg.Fault,
	}
	if p.opts.logLevel != nil {
		base.LogLevel = p.opts.logLevel.Level()
	}
	center, err := configcenter.New(base, configcenter.DataIDs(p.cfg.Service), src, configcenter.Targets{
		Limiter:  p.limiter,
		Faults:   p.faults,
		LogLevel: p.opts.logLevel,
		Breaker:  p.UpdateBreakers,
	}, configcenter.Options{RefuseFault: !p.cfg.Profile.AllowsFaults()}, p.logger.With("component", "configcenter"))
	if err != nil {
		_ = src.Close()
		return fmt.Errorf("config center: %w", err)
	}
	p.center = &liveConfig{src: src, center: center}
	return nil
}

// RunConfigCenter loads the config center's documents, applies them and follows their changes until
// ctx ends; it returns at once without a config center. Serve runs it; a process without a gRPC server
// (the gateway) calls it itself. While Nacos is unreachable the last known documents (the SDK's cache)
// or the base settings stay in effect.
func (p *Platform) RunConfigCenter(ctx context.Context) error {
	p.mu.Lock()
	c := p.center
	p.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.center.Run(ctx)
}

// ConfigCenter returns the settings the config center applied last, and false without one.
func (p *Platform) ConfigCenter() (configcenter.Settings, bool) {
	p.mu.Lock()
	c := p.center
	p.mu.Unlock()
	if c == nil {
		return configcenter.Settings{}, false
	}
	return c.center.Current(), true
}
