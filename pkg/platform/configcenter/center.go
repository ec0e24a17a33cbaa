package configcenter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/fault"
	"github.com/shopmesh/shopmesh/pkg/platform/ratelimit"
)

// Source delivers the raw documents, by data id. Nacos is one; Static serves tests and files.
type Source interface {
	// Get returns the current content of dataID ("" when it does not exist).
	Get(ctx context.Context, dataID string) (string, error)
	// Watch calls fn with the new content of dataID on every change, until ctx ends or Watch fails.
	// fn must not be called after Watch returned.
	Watch(ctx context.Context, dataID string, fn func(content string)) error
}

// SharedDataID is the document every service reads below its own ("<service>.yaml").
const SharedDataID = "shared.yaml"

// DataIDs returns the layers of service, lowest first.
func DataIDs(service string) []string { return []string{SharedDataID, service + ".yaml"} }

// Targets are what the settings are applied to; nil fields are skipped, and a document changing a
// skipped section is still validated.
type Targets struct {
	Limiter  *ratelimit.Limiter
	Faults   *fault.Injector
	LogLevel *slog.LevelVar
	// Breaker receives new breaker thresholds: platform.(*Platform).UpdateBreakers applies them to every
	// running breaker (see breaker.Breaker.Update). Called at the first apply and on every change.
	Breaker func(breaker.Config) error
}

// Options refine New.
type Options struct {
	// RefuseFault rejects documents that enable fault injection (set outside the dev and test profiles:
	// config.Profile.AllowsFaults).
	RefuseFault bool
	// Resync is how often Run reads every layer again besides watching it, so a change whose push was
	// lost (a reconnect, a listener the server dropped) still arrives; 0 means 30 s, < 0 never.
	Resync time.Duration
}

// Center keeps the layers and applies their combination.
type Center struct {
	base    Settings
	dataIDs []string
	src     Source
	targets Targets
	opts    Options
	logger  *slog.Logger

	mu      sync.Mutex
	layers  map[string]document // last accepted document per data id
	seen    map[string]string   // last content read or pushed per data id, accepted or not
	current Settings
	applied bool
}

// New returns a Center over base (the defaults from file and environment) reading dataIDs from src,
// lowest layer first.
func New(base Settings, dataIDs []string, src Source, targets Targets, opts Options, logger *slog.Logger) (*Center, error) {
	if logger == nil {
		return nil, errors.New("configcenter: logger is nil")
	}
	if src == nil {
		return nil, errors.New("configcenter: source is nil")
	}
	if err := base.Validate(); err != nil {
		return nil, fmt.Errorf("configcenter base settings: %w", err)
	}
	return &Center{
		base: base.clone(), dataIDs: dataIDs, src: src, targets: targets, opts: opts,
		logger: logger.With("component", "configcenter"), layers: map[string]document{}, seen: map[string]string{}, current: base.clone(),
	}, nil
}

// Load reads every layer once and applies the result. A layer that cannot be read or is invalid is
// logged and left out, so a broken document never stops a start.
func (c *Center) Load(ctx context.Context) {
	for _, id := range c.dataIDs {
		content, err := c.src.Get(ctx, id)
		if err != nil {
			c.logger.Warn("config not readable; using the layers below", "data_id", id, "err", err)
			continue
		}
		_ = c.Update(id, content)
	}
	c.mu.Lock()
	applied := c.applied
	c.mu.Unlock()
	if !applied {
		// Nothing was accepted: apply the base so every target starts from the same values.
		c.mu.Lock()
		err := c.apply(c.base.clone())
		c.mu.Unlock()
		if err != nil {
			c.logger.Error("applying the base settings failed", "err", err)
		}
	}
}

// Run loads, then watches every layer until ctx ends. It returns nil on cancellation.
func (c *Center) Run(ctx context.Context) error {
	c.Load(ctx)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(c.dataIDs))
	for _, id := range c.dataIDs {
		go func() {
			errc <- c.src.Watch(ctx, id, func(content string) { _ = c.Update(id, content) })
		}()
	}
	if every := c.resync(); every > 0 {
		go c.resyncLoop(ctx, every)
	}
	var errs []error
	for range c.dataIDs {
		if err := <-errc; err != nil && ctx.Err() == nil {
			errs = append(errs, err)
			cancel()
		}
	}
	return errors.Join(errs...)
}

func (c *Center) resync() time.Duration {
	switch {
	case c.opts.Resync < 0:
		return 0
	case c.opts.Resync == 0:
		return 30 * time.Second
	}
	return c.opts.Resync
}

// resyncLoop reads every layer each interval and applies one whose content differs from the last seen.
func (c *Center) resyncLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range c.dataIDs {
			content, err := c.src.Get(ctx, id)
			if err != nil {
				continue // unreachable now: the watch or the next round brings it
			}
			c.mu.Lock()
			same := c.seen[id] == content
			c.mu.Unlock()
			if !same {
				c.logger.Info("config changed without a push; applying it", "data_id", id)
				_ = c.Update(id, content)
			}
		}
	}
}

// Update replaces the layer dataID with content and applies the combination when it is valid. On error
// the layer keeps its previous content and nothing changes.
func (c *Center) Update(dataID string, content string) error {
	c.mu.Lock()
	c.seen[dataID] = content
	c.mu.Unlock()
	err := c.update(dataID, content)
	if err != nil {
		c.logger.Error("config rejected; previous settings stay", "data_id", dataID, "err", err)
		return err
	}
	c.logger.Info("config applied", "data_id", dataID)
	return nil
}

func (c *Center) update(dataID string, content string) error {
	doc, err := parse(content)
	if err != nil {
		return fmt.Errorf("%s: %w", dataID, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	next := c.base.clone()
	for _, id := range c.dataIDs {
		d, ok := c.layers[id]
		if id == dataID {
			d, ok = doc, true
		}
		if !ok {
			continue
		}
		if next, err = d.overlay(next); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
	}
	if err := next.Validate(); err != nil {
		return fmt.Errorf("%s: %w", dataID, err)
	}
	if c.opts.RefuseFault && (next.Fault.Enabled || len(next.Fault.Rules) > 0) {
		return fmt.Errorf("%s: fault: fault injection is refused in this profile", dataID)
	}
	if err := c.apply(next); err != nil {
		return fmt.Errorf("%s: %w", dataID, err)
	}
	c.layers[dataID] = doc
	return nil
}

// apply pushes s to the targets; called with c.mu held. Validate ran before, so the updates only fail
// on a bug; the ones already made are then undone.
func (c *Center) apply(s Settings) error {
	t := c.targets
	prev := c.current
	if t.Limiter != nil {
		if err := t.Limiter.Update(s.RateLimit); err != nil {
			return err
		}
	}
	if t.Faults != nil {
		if err := t.Faults.Update(s.Fault); err != nil {
			if t.Limiter != nil {
				_ = t.Limiter.Update(prev.RateLimit)
			}
			return err
		}
	}
	if t.Breaker != nil && (!c.applied || s.Breaker != prev.Breaker) {
		if err := t.Breaker(s.Breaker); err != nil {
			if t.Limiter != nil {
				_ = t.Limiter.Update(prev.RateLimit)
			}
			if t.Faults != nil {
				_ = t.Faults.Update(prev.Fault)
			}
			if c.applied {
				_ = t.Breaker(prev.Breaker)
			}
			return err
		}
	}
	if t.LogLevel != nil {
		t.LogLevel.Set(s.LogLevel)
	}
	c.current, c.applied = s.clone(), true
	return nil
}

// Current returns the settings in effect.
func (c *Center) Current() Settings {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current.clone()
}

// Static is a Source held in memory: Set changes a document and informs its watchers. It serves tests,
// and main can fill it from files.
type Static struct {
	mu       sync.Mutex
	docs     map[string]string
	watchers map[string]map[*func(string)]struct{}
}

var _ Source = (*Static)(nil)

// NewStatic returns a Static source holding docs (data id → content).
func NewStatic(docs map[string]string) *Static {
	s := &Static{docs: map[string]string{}, watchers: map[string]map[*func(string)]struct{}{}}
	for k, v := range docs {
		s.docs[k] = v
	}
	return s
}

// Get returns the document.
func (s *Static) Get(ctx context.Context, dataID string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.docs[dataID], nil
}

// Watch calls fn for every Set of dataID until ctx ends.
func (s *Static) Watch(ctx context.Context, dataID string, fn func(string)) error {
	f := &fn
	s.mu.Lock()
	if s.watchers[dataID] == nil {
		s.watchers[dataID] = map[*func(string)]struct{}{}
	}
	s.watchers[dataID][f] = struct{}{}
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	delete(s.watchers[dataID], f)
	s.mu.Unlock()
	return nil
}

// Set replaces dataID and calls its watchers synchronously.
func (s *Static) Set(dataID, content string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs[dataID] = content
	for f := range s.watchers[dataID] {
		(*f)(content)
	}
}
