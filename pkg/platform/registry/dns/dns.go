// Package dns resolves logical target names through DNS, as used with Kubernetes headless services (one A
// record per ready pod). Kubernetes does the registering, so the Registry side does nothing.
//
// The resolver is our own rather than grpc's built-in "dns" one, which looks names up only when a
// connection fails (and then at most every 30 s): a pod added by a scale-up would get no traffic until
// some connection broke or reached the servers' 30-minute max age. This one looks the name up again
// every Refresh, and at once (at most every MinInterval) when grpc asks after a connection error.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/resolver"

	"github.com/shopmesh/shopmesh/pkg/platform/discovery"
)

// Scheme is the URI scheme of the targets Resolve returns. The builder is passed per connection
// (grpc.WithResolvers), so it takes precedence over grpc's own "dns" resolver there.
const Scheme = "dns"

// Defaults for the zero values of Config.Refresh and Config.MinInterval.
const (
	DefaultRefresh     = 30 * time.Second
	DefaultMinInterval = time.Second
)

// Config turns a name into "dns:///<name><Suffix>:<Port>".
type Config struct {
	// Suffix follows the name, e.g. ".shop.svc.cluster.local" ("" for names resolvable as they are).
	Suffix string `help:"DNS suffix after each target name, e.g. .shop.svc.cluster.local"`
	// Port is the gRPC port every service listens on.
	Port int `help:"gRPC port every service listens on"`
	// Refresh is how often every name is looked up again, so new instances get calls within it
	// (0: DefaultRefresh, 30 s).
	Refresh time.Duration `help:"how often every name is looked up again (0: 30s)"`
	// MinInterval is the least time between two lookups of a name when grpc asks for one after a
	// connection error (0: DefaultMinInterval, 1 s).
	MinInterval time.Duration `help:"least time between two lookups of a name after a connection error (0: 1s)"`
	// Server is the "host:port" of the DNS server to ask; "" uses the system's resolver configuration.
	Server string `help:"DNS server host:port; empty uses the system resolver configuration"`
}

// Validate names the fields that are wrong.
func (c Config) Validate() error {
	if c.Port <= 0 || c.Port > 65535 {
		return fmt.Errorf("port: must be within 1-65535, got %d", c.Port)
	}
	if strings.ContainsAny(c.Suffix, "/: ") {
		return fmt.Errorf("suffix: %q must be a DNS name suffix", c.Suffix)
	}
	if c.Refresh < 0 {
		return fmt.Errorf("refresh: must be >= 0, got %v", c.Refresh)
	}
	if c.MinInterval < 0 {
		return fmt.Errorf("min_interval: must be >= 0, got %v", c.MinInterval)
	}
	if c.Server != "" {
		if _, _, err := net.SplitHostPort(c.Server); err != nil {
			return fmt.Errorf("server: %q is not host:port", c.Server)
		}
	}
	return nil
}

// Resolver implements discovery.Resolver over DNS.
type Resolver struct {
	cfg    Config
	lookup func(ctx context.Context, host string) ([]string, error)
}

var _ discovery.Resolver = Resolver{}

// New validates cfg.
func New(cfg Config) (Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return Resolver{}, fmt.Errorf("dns resolver config: %w", err)
	}
	if cfg.Refresh == 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.MinInterval == 0 {
		cfg.MinInterval = DefaultMinInterval
	}
	r := net.DefaultResolver
	if cfg.Server != "" {
		var d net.Dialer
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, cfg.Server)
		}}
	}
	return Resolver{cfg: cfg, lookup: r.LookupHost}, nil
}

// Resolve returns the dns target of name and the builder that resolves it.
func (r Resolver) Resolve(name string) (string, resolver.Builder, error) {
	if name == "" || strings.ContainsAny(name, "/: ") {
		return "", nil, fmt.Errorf("dns resolve %q: not a service name", name)
	}
	return Scheme + ":///" + name + r.cfg.Suffix + ":" + strconv.Itoa(r.cfg.Port), builder{r}, nil
}

type builder struct{ r Resolver }

func (builder) Scheme() string { return Scheme }

func (b builder) Build(t resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	host, port, err := net.SplitHostPort(t.Endpoint())
	if err != nil {
		host, port = t.Endpoint(), strconv.Itoa(b.r.cfg.Port)
	}
	if host == "" {
		return nil, fmt.Errorf("dns resolver: target %q has no host", t.Endpoint())
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{r: b.r, cc: cc, host: host, port: port, now: make(chan struct{}, 1), cancel: cancel}
	w.wg.Go(func() { w.run(ctx) })
	return w, nil
}

// watcher keeps one connection's address list current.
type watcher struct {
	r          Resolver
	cc         resolver.ClientConn
	host, port string
	now        chan struct{}
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// lookupTimeout bounds one lookup; the system resolver has its own, shorter, per-server timeouts.
const lookupTimeout = 10 * time.Second

func (w *watcher) run(ctx context.Context) {
	var last []string
	failures := 0
	for {
		started := time.Now()
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		ips, err := w.r.lookup(lctx, w.host)
		cancel()
		if ctx.Err() != nil {
			return
		}
		wait := w.r.cfg.Refresh
		if err != nil {
			// The last good list stays: grpc keeps using the connections it has.
			w.cc.ReportError(fmt.Errorf("dns resolver: lookup %s: %w", w.host, err))
			if dnsErr := (*net.DNSError)(nil); errors.As(err, &dnsErr) && dnsErr.IsNotFound {
				// The name has no address yet (a headless Service with no ready pod, e.g. at a cold
				// start): the server answered, so look again every MinInterval, and the first pod gets
				// calls as soon as it is Ready instead of after a backoff grown while it started.
				failures = 0
				wait = min(w.r.cfg.MinInterval, w.r.cfg.Refresh)
			} else {
				failures++
				wait = min(w.r.cfg.MinInterval<<min(failures, 10), w.r.cfg.Refresh)
			}
		} else {
			failures = 0
			addrs := make([]string, 0, len(ips))
			for _, ip := range ips {
				addrs = append(addrs, net.JoinHostPort(ip, w.port))
			}
			slices.Sort(addrs)
			addrs = slices.Compact(addrs)
			if last == nil || !slices.Equal(addrs, last) {
				eps := make([]resolver.Endpoint, 0, len(addrs))
				for _, a := range addrs {
					eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
				}
				_ = w.cc.UpdateState(resolver.State{Endpoints: eps}) // an error asks for ResolveNow, which we honour
				last = addrs
			}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		case <-w.now:
			timer.Stop()
			// A connection failed: look again, but not more often than MinInterval.
			if d := w.r.cfg.MinInterval - time.Since(started); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
		}
	}
}

// ResolveNow asks for a lookup soon (grpc calls it when a connection fails).
func (w *watcher) ResolveNow(resolver.ResolveNowOptions) {
	select {
	case w.now <- struct{}{}:
	default:
	}
}

// Close stops the lookups.
func (w *watcher) Close() {
	w.cancel()
	w.wg.Wait()
}

// Registry is the no-op registry for platforms (Kubernetes) that register instances themselves.
type Registry struct{}

var _ discovery.Registry = Registry{}

// Register does nothing: readiness probes put the pod into the headless service.
func (Registry) Register(ctx context.Context, _ discovery.Instance) error { return ctxErr(ctx) }

// Deregister does nothing: the terminating pod leaves the endpoints; the drain delay covers the lag.
func (Registry) Deregister(ctx context.Context, _ discovery.Instance) error { return ctxErr(ctx) }

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}
