// Package chaos is the fault campaign of `make chaos`: for each scenario of the fault matrix it starts
// the stack on the real servers (deploy/localstack with Infra), runs an open-loop order load through
// the gateway, injects the fault, heals it, waits until the system settles, audits the databases
// (loadtest/audit) and writes a report with one picture per scenario.
package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go/sasl"

	"github.com/shopmesh/shopmesh/deploy/localstack"
	"github.com/shopmesh/shopmesh/loadtest/audit"
	"github.com/shopmesh/shopmesh/loadtest/stats"
)

// Options configure a campaign.
type Options struct {
	// Root is the repository root; Infra the servers (read from InfraEnv, .run/infra.env).
	Root     string
	InfraEnv string
	Infra    localstack.InfraEndpoints
	// KafkaSASL is how the campaign's own Kafka clients (backlog, audit, R7's topic) authenticate
	// (pkg/platform/kafkaauth): the admin's credential on an authenticating set; nil: they do not.
	KafkaSASL sasl.Mechanism
	// OutDir receives report.{json,md,html} and run/<scenario>/ (stack.json, logs).
	OutDir string
	Rate   float64
	// Warmup and Recovery are the load before the fault and after it is healed; Fault, when > 0,
	// replaces every scenario's own fault duration.
	Warmup, Fault, Recovery time.Duration
	// SettleTimeout bounds the wait for no PENDING order, no unsent outbox row and no consumer lag.
	SettleTimeout time.Duration
	// Ctl runs infra.sh <verb> <component> on the servers of Infra (see InfraCtl).
	Ctl func(ctx context.Context, verb, component string) error
	// Progress receives one line per second; Logger the stack's own log.
	Progress io.Writer
	Logger   *slog.Logger
	Command  string
}

// Run runs the scenarios one after the other and returns the report (also when some failed).
func Run(ctx context.Context, o Options, scenarios []Scenario) Report {
	rep := Report{Started: time.Now().UTC(), Machine: machine(), Command: o.Command, Rate: o.Rate,
		Warmup: o.Warmup.String(), Recovery: o.Recovery.String()}
	if o.Fault > 0 {
		rep.Fault = o.Fault.String()
	}
	// The binaries are built once (by the first stack that starts) into a directory of the campaign:
	// services edited meanwhile do not change the campaign half-way.
	built := false
	for _, sc := range scenarios {
		if ctx.Err() != nil {
			break
		}
		r := runScenario(ctx, o, sc, &built)
		fmt.Fprintf(o.Progress, "%s\n", r.Summary())
		rep.Results = append(rep.Results, r)
	}
	rep.Finished = time.Now().UTC()
	return rep
}

func runScenario(ctx context.Context, o Options, sc Scenario, built *bool) (res Result) {
	res = Result{ID: sc.ID, Title: sc.Title, Started: time.Now().UTC(), Errors: map[string]int{}, RecoverS: -1}
	faultLen := sc.Fault
	if o.Fault > 0 {
		faultLen = o.Fault
	}
	res.FaultS = faultLen.Seconds()
	failf := func(format string, args ...any) { res.Failures = append(res.Failures, fmt.Sprintf(format, args...)) }
	logf := func(format string, args ...any) {
		fmt.Fprintf(o.Progress, "%s  %s\n", sc.ID, fmt.Sprintf(format, args...))
	}

	// Addresses first, so proxies can stand between order and the instances.
	cfg := localstack.Default(o.Root)
	dir := filepath.Join(o.OutDir, "run", sc.ID)
	_ = os.RemoveAll(dir)
	cfg.RunDir, cfg.DataDir, cfg.BinDir = dir, filepath.Join(dir, "data"), filepath.Join(o.OutDir, "bin")
	cfg.SkipBuild = *built
	// Every service of the list on free ports; inventory and payment get theirs now (below).
	cfg.FreePorts = true
	cfg.Env = os.Environ()
	cfg.Logger = o.Logger
	cfg.StopTimeout = 20 * time.Second
	inf := o.Infra
	inf.DBPrefix = "chaos_" + strings.ToLower(sc.ID)
	inf.NacosNamespace = fmt.Sprintf("chaos-%s-%d", strings.ToLower(sc.ID), time.Now().Unix())
	// Kept after the run for a post-mortem; the next run of the scenario drops and recreates them.
	inf.KeepDatabases = true
	cfg.Infra = &inf
	cfg.Instances = map[string][]string{}
	var err error
	for _, svc := range []string{localstack.Inventory, localstack.Payment} {
		if cfg.Instances[svc], err = freeAddrs(2); err != nil {
			break
		}
	}
	if err != nil {
		failf("addresses: %v", err)
		return res
	}
	env := &Env{Infra: inf, KafkaSASL: o.KafkaSASL, Proxies: map[string]*Proxy{}, Ctl: o.Ctl, logf: logf}
	defer func() {
		for _, p := range env.Proxies {
			_ = p.Close()
		}
	}()
	proxied := func(svc string, addrs []string) ([]string, error) {
		var out []string
		for i, a := range addrs {
			p, err := NewProxy("127.0.0.1:0", a)
			if err != nil {
				return nil, err
			}
			env.Proxies[fmt.Sprintf("%s-%d", svc, i+1)] = p
			out = append(out, p.Addr())
		}
		return out, nil
	}
	if sc.ProxyPayment || sc.ProxyInventory {
		inv, pay := cfg.Instances[localstack.Inventory], cfg.Instances[localstack.Payment]
		if sc.ProxyInventory {
			inv, err = proxied(localstack.Inventory, inv)
		}
		if err == nil && sc.ProxyPayment {
			pay, err = proxied(localstack.Payment, pay)
		}
		if err != nil {
			failf("proxies: %v", err)
			return res
		}
		// The order service finds its dependencies through the proxies (static discovery). The registry
		// backend covers registration too, so order is not in Nacos: the gateway gets static discovery
		// as well (the stack gives it every instance's address). Inventory and payment still register.
		cfg.ServiceEnv = map[string][]string{
			localstack.Order: {
				"ORDER_REGISTRY_BACKEND=static",
				"ORDER_TARGETS_INVENTORY_ADDRESSES=" + strings.Join(inv, ","),
				"ORDER_TARGETS_PAYMENT_ADDRESSES=" + strings.Join(pay, ","),
			},
			localstack.Gateway: {"GATEWAY_REGISTRY_BACKEND=static"},
		}
		res.Notes = append(res.Notes, "order reaches "+map[bool]string{true: "inventory", false: "payment"}[sc.ProxyInventory]+
			" through loopback proxies (static discovery for order and the gateway in this scenario)")
	}

	if inf.NacosAddr == "" {
		logf("starting the stack on the real servers (databases %s_*; no Nacos: static discovery)", inf.DBPrefix)
	} else {
		logf("starting the stack on the real servers (databases %s_*, Nacos namespace %s)", inf.DBPrefix, inf.NacosNamespace)
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	stack, err := localstack.Start(sctx, cfg)
	cancel()
	if err != nil {
		failf("start the stack: %v", err)
		return res
	}
	env.Stack = stack
	*built = true
	defer stack.Stop()
	for _, c := range sc.Servers {
		// Whatever happens, the server is started again before the next scenario.
		defer func() { //nolint:gocritic // deferInLoop: each server is started again when the scenario ends
			hctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if err := o.Ctl(hctx, "start", c); err != nil {
				failf("start %s again: %v", c, err)
			}
		}()
	}

	t0 := time.Now()
	load := &Load{Base: stack.Info().GatewayURL, Rate: o.Rate, KeyPrefix: fmt.Sprintf("chaos-%s-%d", strings.ToLower(sc.ID), t0.Unix())}
	if err := load.Prepare(ctx, t0); err != nil {
		failf("load: %v", err)
		return res
	}
	t0 = time.Now()
	load.rec.t0 = t0
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); load.Run(ctx, stop) }()
	var phase atomic.Value
	phase.Store("warm-up")
	progDone := make(chan struct{})
	progStop := make(chan struct{})
	go func() { defer close(progDone); progress(o.Progress, sc.ID, t0, load.rec, &phase, progStop) }()
	endLoad := func() {
		if !isClosed(stop) {
			close(stop)
		}
		<-loadDone
		close(progStop)
		<-progDone
	}

	sleep(ctx, o.Warmup)
	if admin := adminAddr(stack, "order-1"); admin != "" {
		if n, err := goroutines(ctx, admin); err == nil {
			env.baseline = n
		}
	}
	phase.Store("fault")
	res.FaultStartS = time.Since(t0).Seconds()
	logf("fault: %s", sc.Title)
	if err := sc.inject(ctx, env); err != nil {
		failf("inject: %v", err)
	}
	sleep(ctx, time.Until(t0.Add(time.Duration(res.FaultStartS*float64(time.Second))+faultLen)))
	logf("healing")
	if err := sc.heal(ctx, env); err != nil {
		failf("heal: %v", err)
	}
	res.FaultEndS = time.Since(t0).Seconds()
	phase.Store("recovery")
	sleep(ctx, o.Recovery)
	endLoad()
	res.EndS = time.Since(t0).Seconds()

	// Settle: nothing pending, every outbox row sent, consumers caught up.
	logf("settling (up to %v)", o.SettleTimeout)
	st := time.Now()
	var last backlog
	var lastErr error
	for {
		last, lastErr = readBacklog(ctx, inf, o.KafkaSASL, stack.Info().Infra.Databases)
		if lastErr == nil && last.zero() {
			res.Settled = true
			break
		}
		if time.Since(st) > o.SettleTimeout || ctx.Err() != nil {
			break
		}
		sleep(ctx, time.Second)
	}
	res.SettleS = time.Since(st).Seconds()
	if !res.Settled {
		msg := fmt.Sprintf("not settled within %v: %s", o.SettleTimeout, last)
		if lastErr != nil {
			msg += " (" + lastErr.Error() + ")"
		}
		res.Notes = append(res.Notes, msg)
	}
	if sc.check != nil {
		fail, notes := sc.check(ctx, env)
		res.Failures = append(res.Failures, fail...)
		res.Notes = append(res.Notes, notes...)
	}
	if c := stack.Crashed(); len(c) > 0 {
		res.Notes = append(res.Notes, "instances that exited on their own: "+strings.Join(c, ", "))
	}

	samples := load.rec.Samples()
	var keys []string
	for _, s := range samples {
		if s.Accepted {
			keys = append(keys, s.Key)
		}
	}
	actx, acancel := context.WithTimeout(ctx, 3*time.Minute)
	ar, err := audit.Run(actx, audit.Config{
		Order: inf.DSN(localstack.Order), Inventory: inf.DSN(localstack.Inventory), Payment: inf.DSN(localstack.Payment),
		Kafka: inf.KafkaBrokers, KafkaSASL: o.KafkaSASL, AcceptedKeys: keys, OpeningBalances: audit.DevOpeningBalances(),
		// Only the services' dead letters, and only this scenario's: the Kafka is shared with the
		// other scenarios and, in CI, with test suites that dead-letter on purpose.
		DLQTopics: []string{"shopmesh.order.events.dlq", "shopmesh.payment.events.dlq", "shopmesh.inventory.events.dlq"},
		DLQSince:  res.Started,
	})
	acancel()
	if err != nil {
		failf("audit: %v", err)
	} else {
		res.Audit = &ar
		if !ar.OK() {
			failf("audit: %s", ar.Line())
		}
	}
	res.measure(samples, load.rec.Seconds(), t0)
	// A stack that did not serve before the fault measures nothing about the fault.
	if warm, ok := res.warmup(samples, t0); warm == 0 || ok*2 < warm {
		failf("the stack did not serve before the fault: %d of %d warm-up orders accepted", ok, warm)
	}
	if n := res.Errors["500"]; n > 0 {
		failf("%d orders answered 500", n)
	}
	if n := res.Errors[StatusTimeout]; n > 0 && sc.AnswerInTime {
		failf("%d orders got no answer within the client's %v timeout (a call outlived its deadline)", n, load.AttemptTimeout)
	}
	return res
}

// progress prints one line per second: orders sent, answers completed in that second by status, p99.
func progress(w io.Writer, id string, t0 time.Time, rec *Recorder, phase *atomic.Value, stop <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var prevSent int64
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		sent, done := rec.Window()
		ok := 0
		errs := map[string]int{}
		var lat []float64
		for _, s := range done {
			if s.Accepted {
				ok++
			} else {
				errs[s.Status]++
			}
			lat = append(lat, ms(s.Latency))
		}
		var e []string
		for _, k := range slices.Sorted(maps.Keys(errs)) {
			e = append(e, fmt.Sprintf("%s:%d", k, errs[k]))
		}
		es := "0"
		if len(e) > 0 {
			es = strings.Join(e, " ")
		}
		slices.Sort(lat)
		fmt.Fprintf(w, "%-4s %-8s t=%3.0fs  sent %4d  ok %4d  errors %-24s p99 %7.1f ms\n",
			id, phase.Load(), time.Since(t0).Seconds(), sent-prevSent, ok, es, stats.Percentile(lat, 99))
		prevSent = sent
	}
}

// measure fills the figures from the samples.
func (r *Result) measure(samples []Sample, secs []Second, t0 time.Time) {
	r.Seconds = secs
	var warm, fault []float64
	for _, s := range samples {
		r.Sent++
		if s.Accepted {
			r.Accepted++
		} else {
			r.Errors[s.Status]++
		}
		at := s.At.Sub(t0).Seconds()
		l := ms(s.Latency)
		r.MaxMs = max(r.MaxMs, l)
		switch {
		case at < r.FaultStartS:
			warm = append(warm, l)
		case at < r.FaultEndS:
			fault = append(fault, l)
		}
	}
	slices.Sort(warm)
	slices.Sort(fault)
	r.WarmupP99Ms = stats.Percentile(warm, 99)
	r.FaultP50Ms, r.FaultP99Ms = stats.Percentile(fault, 50), stats.Percentile(fault, 99)
	// Time to recover: the first second after the fault ends from which every second has no error and
	// a p99 under twice the warm-up's.
	end := int(r.FaultEndS)
	rec := -1
	for i := len(secs) - 1; i >= end && i >= 0; i-- {
		s := secs[i]
		if s.Sent == 0 {
			continue
		}
		good := len(s.Errors) == 0 && (r.WarmupP99Ms == 0 || s.P99Ms < 2*r.WarmupP99Ms)
		if !good {
			break
		}
		rec = i
	}
	if rec >= 0 {
		r.RecoverS = max(0, float64(rec)-r.FaultEndS)
	}
	if r.Audit != nil {
		r.Lost, r.Duplicated, r.Stuck = r.Audit.Lost, r.Audit.Duplicated, r.Audit.Stuck
	}
	sort.Strings(r.Failures)
}

// warmup counts the orders sent before the fault and those accepted.
func (r *Result) warmup(samples []Sample, t0 time.Time) (sent, ok int) {
	for _, s := range samples {
		if s.At.Sub(t0).Seconds() < r.FaultStartS {
			sent++
			if s.Accepted {
				ok++
			}
		}
	}
	return sent, ok
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

// freeAddrs picks n free loopback ports (the stack checks them again at start).
func freeAddrs(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}
