package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of a Dependency's polling.
const (
	DefaultDependencyInterval  = 2 * time.Second
	DefaultDependencyTimeout   = time.Second
	DefaultDependencyFailAfter = 2
)

// Dependency is a server the service needs (its database, a broker), checked by Serve while it serves.
type Dependency struct {
	// Name labels the metric (shopmesh_dependency_up{dependency}) and the logs: "database", "kafka".
	Name string
	// Check returns nil while the dependency is usable. Its context ends after Timeout.
	Check func(ctx context.Context) error
	// Required: while the dependency is down, the whole server reports NOT_SERVING (health service "",
	// every registered service, /readyz), so health-checking clients and load balancers send this
	// instance nothing; the process stays live (LivenessService, /healthz). Leave it false for what the
	// service can do without for a while, e.g. a broker behind an outbox: it is then only reported.
	Required bool
	// Interval between checks (DefaultDependencyInterval when 0), Timeout of one check
	// (DefaultDependencyTimeout) and FailAfter, the consecutive failures that make the dependency down
	// (DefaultDependencyFailAfter); a single success makes it up again.
	Interval  time.Duration
	Timeout   time.Duration
	FailAfter int
}

// dependency is a Dependency with its state.
type dependency struct {
	Dependency
	up      bool
	fails   int
	lastErr string
}

// AddDependencies registers dependencies: Serve checks each every Interval from the start of serving
// until shutdown begins, and exports shopmesh_dependency_up{dependency}. A dependency starts up (the
// service reached it while starting). Call it before Serve.
func (p *Platform) AddDependencies(ds ...Dependency) error {
	for _, d := range ds {
		if err := p.addDependency(d); err != nil {
			return err
		}
	}
	return nil
}

func (p *Platform) addDependency(d Dependency) error {
	if d.Name == "" || d.Check == nil {
		return errors.New("platform: a dependency needs a name and a check")
	}
	if d.Interval <= 0 {
		d.Interval = DefaultDependencyInterval
	}
	if d.Timeout <= 0 {
		d.Timeout = DefaultDependencyTimeout
	}
	if d.FailAfter <= 0 {
		d.FailAfter = DefaultDependencyFailAfter
	}
	h := p.health
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, x := range h.deps {
		if x.Name == d.Name {
			return fmt.Errorf("platform: dependency %q added twice", d.Name)
		}
	}
	if h.up == nil {
		up := prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shopmesh_dependency_up",
			Help: "1 while the dependency's readiness check passes, 0 once it failed FailAfter times in a row.",
		}, []string{"dependency"})
		if err := p.Metrics().Register(up); err != nil {
			return fmt.Errorf("dependency metrics: %w", err)
		}
		h.up = up
	}
	h.deps = append(h.deps, &dependency{Dependency: d, up: true})
	h.up.WithLabelValues(d.Name).Set(1)
	return nil
}

// runDependencies checks every dependency on its interval until ctx ends; the returned function cancels
// and waits.
func (h *Health) runDependencies(ctx context.Context, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	h.mu.Lock()
	deps := slices.Clone(h.deps)
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, d := range deps {
		wg.Go(func() {
			t := time.NewTicker(d.Interval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				cctx, ccancel := context.WithTimeout(ctx, d.Timeout)
				err := d.Check(cctx)
				ccancel()
				if ctx.Err() != nil {
					return // shutting down: the outcome says nothing about the dependency
				}
				h.record(d, err, log)
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}

// record applies one check outcome, with hysteresis: FailAfter failures in a row to go down, one
// success to come back.
func (h *Health) record(d *dependency, err error, log *slog.Logger) {
	h.mu.Lock()
	was := d.up
	if err == nil {
		d.fails, d.up, d.lastErr = 0, true, ""
	} else {
		d.fails++
		d.lastErr = err.Error()
		if d.fails >= d.FailAfter {
			d.up = false
		}
	}
	var down []string
	for _, x := range h.deps {
		if x.Required && !x.up {
			down = append(down, x.Name)
		}
	}
	sort.Strings(down)
	if d.up != was {
		v := 0.0
		if d.up {
			v = 1
		}
		h.up.WithLabelValues(d.Name).Set(v)
	}
	h.setDownLocked(down)
	h.mu.Unlock()
	if d.up != was {
		if d.up {
			log.Info("dependency up", "dependency", d.Name, "required", d.Required)
		} else {
			log.Warn("dependency down", "dependency", d.Name, "required", d.Required, "failures", d.fails, "err", err)
		}
	}
}

// DependencyReport says, one line per dependency, whether it is up and the last error: the body of
// /readyz?verbose.
func (h *Health) DependencyReport() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, d := range h.deps {
		state := "up"
		if !d.up {
			state = "down"
		}
		kind := "optional"
		if d.Required {
			kind = "required"
		}
		fmt.Fprintf(&b, "%s %s %s", d.Name, kind, state)
		if d.lastErr != "" {
			fmt.Fprintf(&b, " (%d failed: %s)", d.fails, d.lastErr)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
