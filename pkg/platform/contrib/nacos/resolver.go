package nacos

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nacos-group/nacos-sdk-go/v2/model"
	"github.com/nacos-group/nacos-sdk-go/v2/vo"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
)

// Scheme is the URI scheme of targets served by Client ("nacos:///inventory").
const Scheme = "nacos"

// Resolve returns "nacos:///name" and a builder bound to this client, for grpc.WithResolvers.
func (c *Client) Resolve(name string) (string, resolver.Builder, error) {
	if name == "" || strings.Contains(name, "/") {
		return "", nil, fmt.Errorf("nacos resolve %q: not a service name", name)
	}
	return Scheme + ":///" + name, builder{c}, nil
}

type weightKey struct{}

type metadataKey struct{}

// Weight returns the Nacos weight of an endpoint produced by the resolver (1 when absent).
func Weight(ep resolver.Endpoint) float64 {
	if w, ok := ep.Attributes.Value(weightKey{}).(float64); ok {
		return w
	}
	return 1
}

// Metadata returns the Nacos metadata of an endpoint produced by the resolver.
func Metadata(ep resolver.Endpoint) map[string]string {
	md, _ := ep.Attributes.Value(metadataKey{}).(meta)
	return md
}

// meta is comparable through Equal, as grpc's attributes require of values.
type meta map[string]string

func (m meta) Equal(o any) bool {
	om, ok := o.(meta)
	return ok && maps.Equal(m, om)
}

type builder struct{ c *Client }

func (b builder) Scheme() string { return Scheme }

func (b builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	name := strings.TrimPrefix(target.Endpoint(), "/")
	if name == "" {
		return nil, fmt.Errorf("nacos resolver: target %q names no service", target.URL.String())
	}
	r := &nacosResolver{cc: cc}
	w, err := b.c.watch(name)
	if err != nil {
		return nil, err
	}
	r.w = w
	w.add(r)
	return r, nil
}

type nacosResolver struct {
	cc resolver.ClientConn
	w  *watch
}

func (r *nacosResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *nacosResolver) Close() { r.w.remove(r) }

// watch is the one SDK subscription of a service, shared by every connection resolving it: the SDK keys
// subscriptions by service, and unsubscribing one of two callbacks would unsubscribe both.
type watch struct {
	c       *Client
	service string
	param   *vo.SubscribeParam

	pushMu sync.Mutex // orders pushes: a cache read must not overtake a server push
	mu     sync.Mutex
	eps    []resolver.Endpoint
	known  bool // eps holds a real instance set (pushed, subscribed or cached)
	subs   map[*nacosResolver]struct{}
	empty  timer // pending application of an empty set, see set
	gen    int   // counts sets, so a late grace timer cannot overwrite a newer set
	closed bool
	stop   chan struct{}
}

func (c *Client) watch(service string) (*watch, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("nacos resolver %q: client is closed", service)
	}
	if w, ok := c.watches[service]; ok {
		return w, nil
	}
	w := &watch{c: c, service: service, subs: map[*nacosResolver]struct{}{}, stop: make(chan struct{})}
	w.param = &vo.SubscribeParam{
		ServiceName: service, GroupName: c.cfg.GroupOrDefault(), Clusters: c.cfg.Clusters(),
		SubscribeCallback: func(hosts []model.Instance, err error) {
			if err != nil {
				c.logger.Warn("subscription error", "target", service, "err", err.Error())
				return
			}
			w.set(hosts, "push")
		},
	}
	c.watches[service] = w
	go w.start()
	return w, nil
}

// start subscribes, then makes sure a state is known even when the subscription fails (Nacos down):
// the SDK keeps the subscription for redo on reconnect, and its cache (loaded from disk) is used
// meanwhile. Callbacks only fire on changes, so an unchanged cached set must be read explicitly.
func (w *watch) start() {
	c := w.c
	if err := c.naming.Subscribe(w.param); err != nil {
		c.logger.Warn("subscribe failed; the SDK redoes it on reconnect, the disk cache is used meanwhile",
			"target", w.service, "err", err.Error())
	}
	backoff := 200 * time.Millisecond
	for {
		w.mu.Lock()
		done := w.known || w.closed
		w.mu.Unlock()
		if done {
			return
		}
		svc, err := c.naming.GetService(vo.GetServiceParam{ServiceName: w.service, GroupName: c.cfg.GroupOrDefault(), Clusters: c.cfg.Clusters()})
		if err == nil {
			w.set(svc.Hosts, "cache")
			continue
		}
		c.logger.Warn("no instance set yet", "target", w.service, "err", err.Error(), "retry_in", backoff)
		select {
		case <-w.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (w *watch) set(hosts []model.Instance, source string) { w.setGen(hosts, source, 0) }

func (w *watch) setGen(hosts []model.Instance, source string, gen int) {
	eps := endpoints(hosts)
	w.pushMu.Lock()
	defer w.pushMu.Unlock()
	w.mu.Lock()
	if w.closed || (source == "cache" && w.known) || (source == "push-after-grace" && gen != w.gen) {
		w.mu.Unlock()
		return
	}
	w.gen++
	if w.empty != nil {
		w.empty.Stop()
		w.empty = nil
	}
	if len(eps) == 0 && len(w.eps) > 0 && source == "push" {
		// When Nacos restarts it forgets ephemeral instances until their owners re-register, and a
		// resubscribe in between reports none: hold the last set for EmptyGrace, then believe it.
		grace := w.c.cfg.EmptyGrace
		mine := w.gen
		w.empty = w.c.afterFunc(grace, func() { w.setGen(hosts, "push-after-grace", mine) })
		w.mu.Unlock()
		w.c.logger.Warn("empty instance set; keeping the last one for the grace period", "target", w.service, "grace", grace)
		return
	}
	w.eps, w.known = eps, true
	subs := make([]*nacosResolver, 0, len(w.subs))
	for r := range w.subs {
		subs = append(subs, r)
	}
	w.mu.Unlock()
	w.c.logger.Info("instances updated", "target", w.service, "source", source, "healthy", len(eps), "total", len(hosts))
	for _, r := range subs {
		w.push(r, eps)
	}
}

func (w *watch) push(r *nacosResolver, eps []resolver.Endpoint) {
	// An empty set is pushed too: the balancer then fails calls fast instead of using gone instances.
	if err := r.cc.UpdateState(resolver.State{Endpoints: eps}); err != nil && len(eps) > 0 {
		w.c.logger.Warn("update state", "target", w.service, "err", err)
	}
}

func (w *watch) add(r *nacosResolver) {
	w.pushMu.Lock()
	defer w.pushMu.Unlock()
	w.mu.Lock()
	w.subs[r] = struct{}{}
	known, eps := w.known, w.eps
	w.mu.Unlock()
	if known {
		w.push(r, eps)
	}
}

func (w *watch) remove(r *nacosResolver) {
	w.mu.Lock()
	delete(w.subs, r)
	last := len(w.subs) == 0
	w.mu.Unlock()
	if !last {
		return
	}
	c := w.c
	c.mu.Lock()
	if c.watches[w.service] == w {
		w.mu.Lock()
		last = len(w.subs) == 0 // a Build may have joined meanwhile
		w.mu.Unlock()
		if last {
			delete(c.watches, w.service)
		}
	}
	c.mu.Unlock()
	if last {
		w.close()
	}
}

func (w *watch) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	close(w.stop)
	if w.empty != nil {
		w.empty.Stop()
	}
	w.mu.Unlock()
	if err := w.c.naming.Unsubscribe(w.param); err != nil {
		w.c.logger.Debug("unsubscribe", "target", w.service, "err", err.Error())
	}
}

// endpoints keeps the instances that may receive calls, in a stable order.
func endpoints(hosts []model.Instance) []resolver.Endpoint {
	hosts = slices.Clone(hosts)
	slices.SortFunc(hosts, func(a, b model.Instance) int {
		if c := strings.Compare(a.Ip, b.Ip); c != 0 {
			return c
		}
		return int(a.Port) - int(b.Port)
	})
	eps := make([]resolver.Endpoint, 0, len(hosts))
	for _, h := range hosts {
		if !h.Healthy || !h.Enable || h.Weight <= 0 || h.Port == 0 {
			continue
		}
		addr := net.JoinHostPort(h.Ip, strconv.FormatUint(h.Port, 10))
		attrs := attributes.New(weightKey{}, h.Weight).WithValue(metadataKey{}, meta(maps.Clone(h.Metadata)))
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: addr}}, Attributes: attrs})
	}
	return eps
}
