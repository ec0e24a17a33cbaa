package platform

import (
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/shopmesh/shopmesh/pkg/platform/breaker"
	"github.com/shopmesh/shopmesh/pkg/platform/dialer"
	"github.com/shopmesh/shopmesh/pkg/platform/dialer/outlier"
)

// Dial returns a connection to the logical target name (a key of Config.Targets, or a name the configured
// Resolver knows). The connection is lazy: it connects on first use and keeps reconnecting, so a
// dependency that is down at start does not fail the caller's start. Close closes the connection.
//
// Calls are retried (Config.Client.Retry) only for methods that are safe to repeat: those whose proto
// declares `option idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT`, and those listed in the
// target's Idempotent; every other method is attempted once (grpc's transparent retries aside, which
// only cover attempts no server handler saw). See package dialer.
//
// An address that fails or is slow while its peers are fine is ejected from the rotation for a growing
// time (Config.Client.Outlier; logged), and a retried call avoids the address that just failed it. Each
// target gets its own circuit breaker, which opens only when the target as a whole fails: while some
// address still serves well, failures confined to outliers do not open it.
func (p *Platform) Dial(name string) (*grpc.ClientConn, error) {
	_, retryStream := p.obs.tel.ClientInterceptors() // lets the stats handler count retries
	target, builder, err := p.resolver.Resolve(name)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", name, err)
	}
	t := p.cfg.Targets[name]
	dl := p.cfg.Client.DefaultDeadline
	if t.DefaultDeadline > 0 {
		dl = t.DefaultDeadline
	}
	o := dialer.Options{
		Target:                p.cfg.DialTarget(name),
		Resolver:              builder,
		DefaultDeadline:       dl,
		StreamDefaultDeadline: p.cfg.Client.StreamDefaultDeadline,
		Keepalive:             p.cfg.Client.Keepalive,
		MaxRecvMsgSize:        p.cfg.Client.MaxRecvMsgSize,
		// The unary attempt counter is a context wrap inside the dialer's own interceptor.
		UnaryContext: p.obs.tel.CountAttempts,
		Unary:        p.opts.unaryClient,
		Stream:       append([]grpc.StreamClientInterceptor{retryStream}, p.opts.streamClient...),
		// Tracing and the grpc_client_* metrics, per attempt.
		StatsHandlers: []stats.Handler{p.obs.tel.ClientStatsHandler()},
		// Transport credentials first, so WithDialOptions can still replace them.
		Extra: append(p.sec.dialOptions(name), p.opts.dialOptions...),
	}
	// Every connection gets its target's breaker, a pass-through while disabled, so UpdateBreakers can
	// enable it later.
	o.Breaker = p.breaker(name)
	logger := p.logger
	o.OnOutlier = func(e outlier.Event) {
		if e.Ejected {
			logger.Warn("outlier ejected", "target", name, "addr", e.Addr, "for", e.For, "reason", e.Reason)
			return
		}
		logger.Info("outlier back in rotation", "target", name, "addr", e.Addr)
	}
	conn, err := dialer.Dial(target, o)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", name, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = conn.Close()
		return nil, errors.New("dial " + name + ": platform is closed")
	}
	p.conns = append(p.conns, conn)
	return conn, nil
}

// breaker returns the target's breaker, creating it once: two connections to one target share it.
func (p *Platform) breaker(name string) *breaker.Breaker {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.breakers[name]; ok {
		return b
	}
	cfg := p.breakerCfg
	s := cfg.Settings(name)
	s.Now = p.opts.now
	logger := p.logger
	observe := p.opts.onBreaker
	obs := p.obs
	obs.breakerState.WithLabelValues(name).Set(float64(breaker.StateClosed))
	s.OnStateChange = func(target string, from, to breaker.State) {
		logger.Warn("circuit breaker state changed", "target", target, "from", from.String(), "to", to.String())
		obs.breakerChanged(target, from, to)
		if observe != nil {
			observe(target, from, to)
		}
	}
	b := breaker.New(s)
	if !cfg.Enabled {
		_ = b.Update(cfg) // a disabled Config always validates
	}
	p.breakers[name] = b
	return b
}

// UpdateBreakers applies new thresholds to the breaker of every target, and to those created later by
// Dial: the configcenter.Targets.Breaker callback. c is validated first and nothing changes when it is
// invalid; see breaker.Breaker.Update for what a running breaker keeps.
func (p *Platform) UpdateBreakers(c breaker.Config) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("update breakers: %w", err)
	}
	// Held throughout, so concurrent updates cannot leave breakers on different configs.
	p.mu.Lock()
	defer p.mu.Unlock()
	p.breakerCfg = c
	var errs []error
	for _, b := range p.breakers {
		errs = append(errs, b.Update(c))
	}
	return errors.Join(errs...)
}
