// Package outlier is the per-address outlier ejection of shopmesh client connections: a load-balancing
// policy that wraps round_robin (or least_request), measures every attempt per address — server-side
// failures, and the latency of unary calls — and, once per interval, ejects an address that fails or is
// slow while its peers are fine. An ejected address gets no new calls for a time that grows with each
// ejection in a row; never more than MaxEjectionPercent of the addresses are out at once, so a sole
// instance is never ejected.
//
// Why our own and not grpc-go's outlier_detection_experimental (gRFC A50): that policy is registered only
// by importing google.golang.org/grpc/xds (the whole xDS client, its protos and their dependencies, in
// every service binary), it judges failures only (no latency rule, so an instance 300 ms slower keeps
// its share), and its minimum_hosts defaults to 5 where shopmesh runs 2–3 replicas. This one is a few
// hundred lines over grpc's public balancer API.
package outlier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"
)

// Name is the policy's name in a service config's loadBalancingConfig.
const Name = "shopmesh_outlier"

// Config tunes the detection. Zero rules are off; Validate names what is wrong.
type Config struct {
	// Enabled wraps the connection's load-balancing policy with ejection.
	Enabled bool `help:"eject slow or failing addresses from load balancing"`
	// Interval is how often addresses are judged; the counts start afresh every interval.
	Interval time.Duration `help:"how often addresses are judged; counts start afresh every interval"`
	// MinRequests is how many attempts an address needs in one interval before it is judged.
	MinRequests uint32 `help:"attempts an address needs in one interval before it is judged"`
	// FailureRatio ejects an address whose attempts failed at least this often (UNAVAILABLE, INTERNAL,
	// UNKNOWN, DATA_LOSS, DEADLINE_EXCEEDED) while another address stays below it. 0 disables the rule.
	FailureRatio float64 `help:"eject an address failing at least this share of its attempts, 0-1 (0 disables the rule)"`
	// ConsecutiveFailures ejects an address at once, without waiting for the interval, when this many
	// attempts in a row failed on it while another address serves well. 0 disables the rule.
	ConsecutiveFailures uint32 `help:"eject an address at once after this many failures in a row (0 disables the rule)"`
	// LatencyFactor ejects an address whose mean unary latency is at least this multiple of its peers'
	// median, and at least LatencyMargin above it. 0 disables the rule.
	LatencyFactor float64       `help:"eject an address whose mean latency is this multiple of its peers' median (0 disables the rule)"`
	LatencyMargin time.Duration `help:"and that is at least this much above the peers' median"`
	// BaseEjection is the first ejection's length; the n-th ejection in a row lasts n × BaseEjection, at
	// most MaxEjection. Every interval an address serves well (on MinRequests calls) takes one off n.
	BaseEjection time.Duration `help:"first ejection length; the n-th in a row lasts n times it"`
	MaxEjection  time.Duration `help:"longest ejection"`
	// MaxEjectionPercent bounds the share of addresses ejected at once (1-100).
	MaxEjectionPercent int `help:"most addresses ejected at once, percent (1-100)"`
}

// Default is on, judging every second on at least 10 attempts: ejection for half the attempts failing,
// for 3 failures in a row, or for a mean latency 3× the peers' median and 100 ms above it; 10 s first
// ejection, 2 min at most, at most half the addresses out.
func Default() Config {
	return Config{
		Enabled:             true,
		Interval:            time.Second,
		MinRequests:         10,
		FailureRatio:        0.5,
		ConsecutiveFailures: 3,
		LatencyFactor:       3,
		LatencyMargin:       100 * time.Millisecond,
		BaseEjection:        10 * time.Second,
		MaxEjection:         2 * time.Minute,
		MaxEjectionPercent:  50,
	}
}

// Validate names the fields that are wrong.
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval: must be > 0, got %v", c.Interval))
	}
	if c.MinRequests == 0 {
		errs = append(errs, errors.New("min_requests: must be > 0"))
	}
	if c.FailureRatio < 0 || c.FailureRatio > 1 || math.IsNaN(c.FailureRatio) {
		errs = append(errs, fmt.Errorf("failure_ratio: must be within 0-1, got %v", c.FailureRatio))
	}
	if c.LatencyFactor != 0 && (c.LatencyFactor < 1 || math.IsInf(c.LatencyFactor, 0) || math.IsNaN(c.LatencyFactor)) {
		errs = append(errs, fmt.Errorf("latency_factor: must be 0 (off) or >= 1, got %v", c.LatencyFactor))
	}
	if c.LatencyMargin < 0 {
		errs = append(errs, fmt.Errorf("latency_margin: must be >= 0, got %v", c.LatencyMargin))
	}
	if c.FailureRatio == 0 && c.LatencyFactor == 0 && c.ConsecutiveFailures == 0 {
		errs = append(errs, errors.New("failure_ratio, consecutive_failures or latency_factor: at least one rule is needed"))
	}
	if c.BaseEjection <= 0 {
		errs = append(errs, fmt.Errorf("base_ejection: must be > 0, got %v", c.BaseEjection))
	}
	if c.MaxEjection < c.BaseEjection {
		errs = append(errs, fmt.Errorf("max_ejection: must be >= base_ejection (%v), got %v", c.BaseEjection, c.MaxEjection))
	}
	if c.MaxEjectionPercent < 1 || c.MaxEjectionPercent > 100 {
		errs = append(errs, fmt.Errorf("max_ejection_percent: must be within 1-100, got %d", c.MaxEjectionPercent))
	}
	return errors.Join(errs...)
}

// LBConfig renders the loadBalancingConfig entry wrapping child (e.g. {"round_robin":{}}).
func (c Config) LBConfig(child map[string]any) map[string]any {
	return map[string]any{Name: jsonConfig{
		Child:              []map[string]any{child},
		IntervalMs:         c.Interval.Milliseconds(),
		MinRequests:        c.MinRequests,
		FailureRatio:       c.FailureRatio,
		Consecutive:        c.ConsecutiveFailures,
		LatencyFactor:      c.LatencyFactor,
		LatencyMarginMs:    c.LatencyMargin.Milliseconds(),
		BaseEjectionMs:     c.BaseEjection.Milliseconds(),
		MaxEjectionMs:      c.MaxEjection.Milliseconds(),
		MaxEjectionPercent: c.MaxEjectionPercent,
	}}
}

type jsonConfig struct {
	Child              []map[string]any `json:"childPolicy"`
	IntervalMs         int64            `json:"intervalMs"`
	MinRequests        uint32           `json:"minRequests"`
	FailureRatio       float64          `json:"failureRatio"`
	Consecutive        uint32           `json:"consecutiveFailures"`
	LatencyFactor      float64          `json:"latencyFactor"`
	LatencyMarginMs    int64            `json:"latencyMarginMs"`
	BaseEjectionMs     int64            `json:"baseEjectionMs"`
	MaxEjectionMs      int64            `json:"maxEjectionMs"`
	MaxEjectionPercent int              `json:"maxEjectionPercent"`
}

type lbConfig struct {
	serviceconfig.LoadBalancingConfig
	cfg         Config
	child       balancer.Builder
	childConfig serviceconfig.LoadBalancingConfig
}

var registerOnce sync.Once

// Register makes the policy known to grpc (whose balancer registry is process-wide); Dial calls it, so
// nothing runs at package init.
func Register() { registerOnce.Do(func() { balancer.Register(builder{}) }) }

type builder struct{}

func (builder) Name() string { return Name }

func (builder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	var j jsonConfig
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	c := Config{
		Enabled: true, Interval: time.Duration(j.IntervalMs) * time.Millisecond, MinRequests: j.MinRequests,
		FailureRatio: j.FailureRatio, ConsecutiveFailures: j.Consecutive, LatencyFactor: j.LatencyFactor, LatencyMargin: time.Duration(j.LatencyMarginMs) * time.Millisecond,
		BaseEjection: time.Duration(j.BaseEjectionMs) * time.Millisecond, MaxEjection: time.Duration(j.MaxEjectionMs) * time.Millisecond,
		MaxEjectionPercent: j.MaxEjectionPercent,
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	if len(j.Child) != 1 || len(j.Child[0]) != 1 {
		return nil, fmt.Errorf("%s: childPolicy must hold exactly one policy", Name)
	}
	out := &lbConfig{cfg: c}
	for name, childRaw := range j.Child[0] {
		out.child = balancer.Get(name)
		if out.child == nil {
			return nil, fmt.Errorf("%s: child policy %q is not registered", Name, name)
		}
		if p, ok := out.child.(balancer.ConfigParser); ok {
			b, err := json.Marshal(childRaw)
			if err != nil {
				return nil, fmt.Errorf("%s: child config: %w", Name, err)
			}
			if out.childConfig, err = p.ParseConfig(b); err != nil {
				return nil, fmt.Errorf("%s: child config: %w", Name, err)
			}
		}
	}
	return out, nil
}

func (builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	return &ejecting{cc: cc, opts: opts, addrs: map[string]*addrState{}, subConns: map[balancer.SubConn]*addrState{}}
}

// addrState is what is known about one address. The counters are written by every call's Done.
type addrState struct {
	addr    string
	owner   *ejecting
	ejected atomic.Bool
	// consecutive counts failed attempts in a row.
	consecutive atomic.Uint32
	// probation is set while an address is back from an ejection and has not yet served an interval
	// well: its first failure ejects it again, so a still-sick instance costs one failed attempt per
	// return, not ConsecutiveFailures plus those in flight.
	probation atomic.Bool

	calls, failures, latencyCount, latencyNanos atomic.Uint64

	// Owned by the evaluation (under ejecting.mu).
	until     time.Time
	ejections int
	healthy   bool // verdict of the last interval: traffic and failures below the ratio
}

type ejecting struct {
	cc   balancer.ClientConn
	opts balancer.BuildOptions

	consecutiveLimit atomic.Uint32 // cfg.ConsecutiveFailures, read by every failed call

	mu        sync.Mutex
	cfg       Config
	childName string
	child     balancer.Balancer
	addrs     map[string]*addrState // the resolver's current addresses
	subConns  map[balancer.SubConn]*addrState
	timer     *time.Timer
	link      *Link
	closed    bool
}

func (b *ejecting) UpdateClientConnState(s balancer.ClientConnState) error {
	lc, ok := s.BalancerConfig.(*lbConfig)
	if !ok {
		return fmt.Errorf("%s: unexpected config %T", Name, s.BalancerConfig)
	}
	b.mu.Lock()
	old := b.child
	replace := old == nil || b.childName != lc.child.Name()
	b.mu.Unlock()
	if replace {
		// Outside the lock: the child may call back into childCC.
		if old != nil {
			old.Close()
		}
		child := lc.child.Build(&childCC{ClientConn: b.cc, b: b}, b.opts)
		b.mu.Lock()
		b.child, b.childName = child, lc.child.Name()
		b.mu.Unlock()
	}
	b.mu.Lock()
	b.cfg = lc.cfg
	b.consecutiveLimit.Store(lc.cfg.ConsecutiveFailures)
	seen := map[string]bool{}
	add := func(a resolver.Address) {
		seen[a.Addr] = true
		if b.addrs[a.Addr] == nil {
			b.addrs[a.Addr] = &addrState{addr: a.Addr, owner: b}
		}
	}
	for _, ep := range s.ResolverState.Endpoints {
		for _, a := range ep.Addresses {
			add(a)
		}
	}
	for _, a := range s.ResolverState.Addresses {
		add(a)
	}
	for a := range b.addrs {
		if !seen[a] {
			delete(b.addrs, a)
		}
	}
	if l := linkFrom(s.ResolverState); l != b.link {
		if b.link != nil {
			b.link.detach(b)
		}
		b.link = l
		if l != nil {
			l.attach(b)
		}
	}
	if b.timer == nil && !b.closed {
		b.timer = time.AfterFunc(b.cfg.Interval, b.tick)
	}
	child, childCfg := b.child, lc.childConfig
	b.mu.Unlock()
	// Outside the lock: the child calls back into childCC.
	return child.UpdateClientConnState(balancer.ClientConnState{ResolverState: s.ResolverState, BalancerConfig: childCfg})
}

func (b *ejecting) ResolverError(err error) {
	if c := b.getChild(); c != nil {
		c.ResolverError(err)
	}
}

// UpdateSubConnState is never called: every SubConn is created with a StateListener.
func (b *ejecting) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}

func (b *ejecting) ExitIdle() {
	if c := b.getChild(); c != nil {
		c.ExitIdle()
	}
}

func (b *ejecting) Close() {
	b.mu.Lock()
	b.closed = true
	if b.timer != nil {
		b.timer.Stop()
	}
	if b.link != nil {
		b.link.detach(b)
		b.link = nil
	}
	c := b.child
	b.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

func (b *ejecting) getChild() balancer.Balancer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.child
}

// childCC is the ClientConn the child sees: it learns which SubConn serves which address, and wraps the
// child's pickers.
type childCC struct {
	balancer.ClientConn
	b *ejecting
}

func (c *childCC) NewSubConn(addrs []resolver.Address, opts balancer.NewSubConnOptions) (balancer.SubConn, error) {
	b := c.b
	var sc balancer.SubConn
	listener := opts.StateListener
	opts.StateListener = func(s balancer.SubConnState) {
		if s.ConnectivityState == connectivity.Shutdown {
			b.mu.Lock()
			delete(b.subConns, sc)
			b.mu.Unlock()
		}
		if listener != nil {
			listener(s)
		}
	}
	// Both directives (golangci-lint's and the standalone staticcheck's) say the same:
	//lint:ignore SA1019 the child creates its SubConns through us (one address each); we only watch them
	sc, err := c.ClientConn.NewSubConn(addrs, opts) //nolint:staticcheck // SA1019: see the line above
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return sc, nil
	}
	b.mu.Lock()
	st := b.addrs[addrs[0].Addr]
	if st == nil {
		// An address the resolver no longer lists: measured, never judged.
		st = &addrState{addr: addrs[0].Addr, owner: b}
	}
	b.subConns[sc] = st
	b.mu.Unlock()
	return sc, nil
}

func (c *childCC) UpdateState(s balancer.State) {
	b := c.b
	b.mu.Lock()
	p := b.wrap(s.Picker)
	b.mu.Unlock()
	c.ClientConn.UpdateState(balancer.State{ConnectivityState: s.ConnectivityState, Picker: p})
}

// wrap returns a picker over child that skips ejected addresses. Called with b.mu held.
func (b *ejecting) wrap(child balancer.Picker) balancer.Picker {
	if child == nil {
		return nil
	}
	subs := make(map[balancer.SubConn]*addrState, len(b.subConns))
	for sc, st := range b.subConns {
		subs[sc] = st
	}
	// Concurrent callers share the child's round-robin position, so a caller's next pick is not
	// necessarily the next address: allow enough tries that landing on ejected ones every time is
	// negligible (1 in 2^16 for two addresses), not just one per address.
	return &picker{child: child, subs: subs, tries: 4*len(subs) + 8}
}

type picker struct {
	child balancer.Picker
	subs  map[balancer.SubConn]*addrState
	tries int
}

// Pick asks the child until it offers an address that is not ejected (nor, for a retry, the address that
// failed the previous attempt). The child spreads its picks (round robin, or two random choices), so a
// few tries find one; if they do not, the last pick stands.
func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	call, unary := callOf(info.Ctx) // assigned once: the Done closure captures them by value
	var avoid *addrState
	if call != nil {
		avoid = call.failed.Load()
	}
	for i := 0; ; i++ {
		r, err := p.child.Pick(info)
		if err != nil {
			return r, err
		}
		st := p.subs[r.SubConn]
		if st == nil {
			return r, nil
		}
		if (st.ejected.Load() || st == avoid) && i < p.tries-1 {
			if r.Done != nil {
				r.Done(balancer.DoneInfo{}) // the child's bookkeeping (least_request counts picks in flight)
			}
			continue
		}
		start := time.Now()
		done := r.Done
		r.Done = func(d balancer.DoneInfo) {
			if st.record(d.Err, time.Since(start), unary) && call != nil {
				call.failed.Store(st)
			}
			if done != nil {
				done(d)
			}
		}
		return r, nil
	}
}

// record counts one attempt and reports whether it failed.
func (st *addrState) record(err error, took time.Duration, unary bool) (failed bool) {
	if err != nil {
		switch status.Code(err) {
		case codes.Canceled:
			return false // the caller left; says nothing about the address
		case codes.Unavailable, codes.Internal, codes.Unknown, codes.DataLoss, codes.DeadlineExceeded:
			failed = true
		}
	}
	st.calls.Add(1)
	if failed {
		st.failures.Add(1)
		// Every limit-th failure in a row asks (not every one: while ejection is refused, e.g. because
		// every address fails, failures should not all take the balancer's lock).
		n, limit := st.consecutive.Add(1), st.owner.consecutiveLimit.Load()
		if ((limit > 0 && n%limit == 0) || st.probation.Load()) && !st.ejected.Load() {
			st.owner.ejectNow(st)
		}
	} else if st.consecutive.Load() != 0 {
		st.consecutive.Store(0) // only when set: every call writing it would bounce its cache line between cores
	}
	if unary {
		st.latencyCount.Add(1)
		st.latencyNanos.Add(uint64(took))
	}
	return failed
}

func (b *ejecting) tick() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.evaluate(time.Now())
	b.timer.Reset(b.cfg.Interval)
}

type sample struct {
	st                    *addrState
	calls, failures, latN uint64
	meanLatency           time.Duration
}

// evaluate judges the interval that just ended. Called with b.mu held.
func (b *ejecting) evaluate(now time.Time) {
	c := b.cfg
	var samples []sample
	ejected := 0
	for _, st := range b.addrs {
		s := sample{st: st, calls: st.calls.Swap(0), failures: st.failures.Swap(0), latN: st.latencyCount.Swap(0)}
		nanos := st.latencyNanos.Swap(0)
		if s.latN > 0 {
			s.meanLatency = time.Duration(nanos / s.latN)
		}
		if st.ejected.Load() {
			if now.Before(st.until) {
				ejected++
				st.healthy = false
				continue
			}
			st.ejected.Store(false) // back in; judged again from the next interval on
			b.notify(Event{Addr: st.addr, Reason: "ejection time over"})
			st.consecutive.Store(0) // failures of calls still in flight when it was ejected do not count
			st.probation.Store(true)
			st.healthy = false
			continue
		}
		st.healthy = s.calls > 0 && (c.FailureRatio == 0 || float64(s.failures) < c.FailureRatio*float64(s.calls))
		samples = append(samples, s)
	}
	// Candidates, worst first.
	type candidate struct {
		st     *addrState
		failed bool // failures go before slowness
		score  float64
		reason string
	}
	var cands []candidate
	for i, s := range samples {
		if s.calls < uint64(c.MinRequests) {
			continue
		}
		if c.FailureRatio > 0 {
			ratio := float64(s.failures) / float64(s.calls)
			if ratio >= c.FailureRatio && anyPeer(samples, i, func(p sample) bool {
				return p.calls > 0 && float64(p.failures) < c.FailureRatio*float64(p.calls)
			}) {
				cands = append(cands, candidate{s.st, true, ratio,
					fmt.Sprintf("%d of %d attempts failed in %v", s.failures, s.calls, c.Interval)})
				continue
			}
		}
		if c.LatencyFactor > 0 && s.latN >= uint64(c.MinRequests) {
			var peers []time.Duration
			for j, p := range samples {
				if j != i && p.latN > 0 {
					peers = append(peers, p.meanLatency)
				}
			}
			if len(peers) == 0 {
				continue
			}
			slices.Sort(peers)
			median := peers[(len(peers)-1)/2]
			if float64(s.meanLatency) >= c.LatencyFactor*float64(median) && s.meanLatency-median >= c.LatencyMargin {
				cands = append(cands, candidate{s.st, false, float64(s.meanLatency) / float64(max(median, 1)),
					fmt.Sprintf("mean latency %v over %d calls, peers' median %v", s.meanLatency.Round(time.Microsecond), s.latN, median.Round(time.Microsecond))})
			}
		}
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].failed != cands[j].failed {
			return cands[i].failed
		}
		return cands[i].score > cands[j].score
	})
	bad := map[*addrState]bool{}
	for _, cd := range cands {
		bad[cd.st] = true
		if (ejected+1)*100 > c.MaxEjectionPercent*len(b.addrs) {
			continue
		}
		b.eject(cd.st, now, cd.reason)
		ejected++
	}
	// An interval served well, on enough calls to tell, takes one step off the next ejection's length.
	for _, s := range samples {
		if !bad[s.st] && s.calls >= uint64(c.MinRequests) && s.failures*2 < s.calls {
			s.st.probation.Store(false)
			if s.st.ejections > 0 {
				s.st.ejections--
			}
		}
	}
}

// eject takes st out for a time growing with its ejections in a row. Called with b.mu held.
func (b *ejecting) eject(st *addrState, now time.Time, reason string) {
	st.ejections++
	d := time.Duration(st.ejections) * b.cfg.BaseEjection
	if d > b.cfg.MaxEjection || d <= 0 {
		d = b.cfg.MaxEjection
	}
	st.until = now.Add(d)
	st.ejected.Store(true)
	st.healthy = false
	st.consecutive.Store(0)
	b.notify(Event{Addr: st.addr, Ejected: true, For: d, Reason: reason})
}

// notify tells the link's observer. Called with b.mu held.
func (b *ejecting) notify(e Event) {
	if b.link != nil && b.link.observe != nil {
		b.link.observe(e)
	}
}

// ejectNow applies the consecutive-failures rule as soon as it fires: st is ejected if it is still
// listed, the ejection bound allows it and another address serves well (so a failure of the whole
// service ejects nothing).
func (b *ejecting) ejectNow(st *addrState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || st.ejected.Load() || b.addrs[st.addr] != st {
		return
	}
	ejected := 0
	peerOK := false
	for _, o := range b.addrs {
		switch {
		case o.ejected.Load():
			ejected++
		case o != st && o.servesWell(b.cfg.FailureRatio):
			peerOK = true
		}
	}
	if !peerOK || (ejected+1)*100 > b.cfg.MaxEjectionPercent*len(b.addrs) {
		return
	}
	reason := fmt.Sprintf("%d attempts in a row failed", b.cfg.ConsecutiveFailures)
	if st.probation.Load() {
		reason = "failed again after its ejection"
	}
	b.eject(st, time.Now(), reason)
}

// servesWell: the last interval's verdict, or calls so far in this one mostly succeed.
func (st *addrState) servesWell(ratio float64) bool {
	if ratio == 0 {
		ratio = 0.5
	}
	if st.healthy {
		return true
	}
	calls, failures := st.calls.Load(), st.failures.Load()
	return calls > failures && float64(failures) < ratio*float64(calls)
}

func anyPeer(samples []sample, self int, ok func(sample) bool) bool {
	for i, s := range samples {
		if i != self && ok(s) {
			return true
		}
	}
	return false
}

// healthy reports whether some address that is not ejected served calls without failing too often,
// in the last interval or so far in this one.
func (b *ejecting) healthy() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, st := range b.addrs {
		if !st.ejected.Load() && st.servesWell(b.cfg.FailureRatio) {
			return true
		}
	}
	return false
}

// Link connects the ejecting balancers of the connections dialed for one target to that target's
// circuit breaker: the breaker asks Healthy before it opens. The dialer hands it to the balancer through
// the resolver state's attributes, since grpc builds balancers from a process-wide registry.
type Link struct {
	mu      sync.Mutex
	bals    map[*ejecting]struct{}
	observe func(Event)
}

// Event is an address leaving (Ejected, for For) or rejoining the rotation.
type Event struct {
	Addr    string
	Ejected bool
	For     time.Duration
	Reason  string
}

// NewLink returns a Link no balancer uses yet; observe (may be nil) is told of every ejection and
// return, with the balancer's lock held: keep it short (a log line).
func NewLink(observe func(Event)) *Link {
	return &Link{bals: map[*ejecting]struct{}{}, observe: observe}
}

// Healthy reports whether any connection of the link still has an address that is not ejected and
// serves calls without failing too often. While one does, failures are confined to outliers, which
// ejection handles, and the target as a whole is not failing.
func (l *Link) Healthy() bool {
	l.mu.Lock()
	bals := make([]*ejecting, 0, len(l.bals))
	for b := range l.bals {
		bals = append(bals, b)
	}
	l.mu.Unlock()
	for _, b := range bals {
		if b.healthy() {
			return true
		}
	}
	return false
}

func (l *Link) attach(b *ejecting) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bals[b] = struct{}{}
}

func (l *Link) detach(b *ejecting) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.bals, b)
}

type linkKey struct{}

// Attach returns s carrying l, for the balancer to find.
func (l *Link) Attach(s resolver.State) resolver.State {
	s.Attributes = s.Attributes.WithValue(linkKey{}, l)
	return s
}

func linkFrom(s resolver.State) *Link {
	l, _ := s.Attributes.Value(linkKey{}).(*Link)
	return l
}

// callKey's value in a call's context is its *callCtx (RetryElsewhere) or, for a stream, streamMark.
type callKey struct{}

// streamMark is the callKey value of a stream's context (MarkStream).
type streamMark struct{}

// callCtx is a call's context carrying what its attempts learned: the address whose attempt failed, so
// that a retry goes to another one.
type callCtx struct {
	context.Context
	failed atomic.Pointer[addrState]
}

func (c *callCtx) Value(key any) any {
	if key == (callKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// callOf returns the call's *callCtx (nil without RetryElsewhere) and whether it is a unary call (not
// MarkStream), in one context lookup: a miss walks the whole context chain.
func callOf(ctx context.Context) (*callCtx, bool) {
	switch v := ctx.Value(callKey{}).(type) {
	case *callCtx:
		return v, true
	case streamMark:
		return nil, false
	}
	return nil, true
}

// RetryElsewhere returns ctx for one call whose retries should avoid the address of the attempt that
// failed before (grpc-go's retries pick again from the balancer, which may offer the same one). The
// dialer uses it for the methods it retries.
func RetryElsewhere(ctx context.Context) context.Context { return &callCtx{Context: ctx} }

// MarkStream marks ctx as a stream's: its attempt's duration is how long the stream lived, not a latency,
// so it counts for failures only. The dialer's stream interceptor calls it.
func MarkStream(ctx context.Context) context.Context {
	return context.WithValue(ctx, callKey{}, streamMark{})
}
