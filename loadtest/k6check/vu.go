package k6check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dop251/goja"
)

// vu is one virtual user: its own goja runtime (not safe for concurrent use) with the script loaded.
type vu struct {
	run     *run
	id      int
	rt      *goja.Runtime
	modules map[string]*goja.Object
	exports *goja.Object
	ctx     context.Context
	init    bool
	// iterating is true while the VU runs a scenario's function (sleep() is scaled there).
	iterating bool
	group     string
	scenario  string
	tags      map[string]string
	iter      int
	data      goja.Value
	// callback is the response callback set by http.setResponseCallback (nil: none, k6's null).
	callback *expectedStatuses
}

// newVU starts a runtime with the k6 globals and runs the script's init code in it.
func (r *run) newVU(id int, env map[string]string, scenario string) (*vu, error) {
	v := &vu{run: r, id: id, rt: goja.New(), modules: map[string]*goja.Object{}, ctx: context.Background(),
		init: true, scenario: scenario, callback: defaultExpected()}
	v.tags = map[string]string{}
	if scenario != "" {
		v.tags["scenario"] = scenario
	}
	vals := map[string]string{}
	maps.Copy(vals, r.opts.Env)
	maps.Copy(vals, env)
	envObj := v.rt.NewDynamicObject(&envObject{rt: v.rt, run: r, vals: vals})
	console := v.rt.NewObject()
	for _, level := range []string{"log", "info", "debug", "warn", "error"} {
		if err := console.Set(level, func(call goja.FunctionCall) goja.Value {
			parts := make([]string, len(call.Arguments))
			for i, a := range call.Arguments {
				parts[i] = a.String()
			}
			r.logf("[vu %d] %s: %s", id, level, strings.Join(parts, " "))
			return goja.Undefined()
		}); err != nil {
			return nil, err
		}
	}
	for k, val := range map[string]any{
		"__ENV": envObj, "__VU": id, "__ITER": 0, "console": console, "open": v.open,
	} {
		if err := v.rt.Set(k, val); err != nil {
			return nil, err
		}
	}
	exports, err := v.require("", r.script)
	if err != nil {
		return nil, err
	}
	v.exports = exports
	v.init = false
	return v, nil
}

// open reads a file in the init context, relative to the script's directory ("b": an ArrayBuffer).
func (v *vu) open(call goja.FunctionCall) goja.Value {
	if !v.init {
		panic(v.rt.NewGoError(errors.New("open() is only available in the init context")))
	}
	path := call.Argument(0).String()
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(v.run.script), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		panic(v.rt.NewGoError(err))
	}
	if call.Argument(1).String() == "b" {
		return v.rt.ToValue(v.rt.NewArrayBuffer(b))
	}
	return v.rt.ToValue(string(b))
}

// throw raises err as a JS exception in the VU (called from the shim's native functions).
func (v *vu) throw(format string, args ...any) {
	panic(v.rt.NewGoError(fmt.Errorf(format, args...)))
}

// callPhase runs setup() or teardown() with a time limit.
func (v *vu) callPhase(ctx context.Context, group string, limit time.Duration, fn goja.Callable, args ...goja.Value) (goja.Value, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { v.rt.Interrupt(fmt.Sprintf("%s: %v", strings.TrimPrefix(group, "::"), ctx.Err())) })
	defer func() {
		if !stop() {
			v.rt.ClearInterrupt() // fired as fn returned: do not let it hit the next phase
		}
	}()
	v.ctx, v.group = ctx, group
	defer func() { v.group = "" }()
	return fn(goja.Undefined(), args...)
}

// iterate runs one iteration of exec.
func (v *vu) iterate(ctx context.Context, exec string) error {
	v.ctx = ctx
	if err := v.rt.Set("__ITER", v.iter); err != nil {
		return err
	}
	v.iter++
	fn, _ := goja.AssertFunction(v.exports.Get(exec))
	start := time.Now()
	v.iterating = true
	_, err := fn(goja.Undefined(), v.data)
	v.iterating = false
	v.run.reg.add("iterations", 1, v.tags)
	v.run.reg.add("iteration_duration", ms(time.Since(start)), v.tags)
	return err
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// options is the part of the script's exported options that k6check reads.
type options struct {
	Scenarios       map[string]scenarioOptions `json:"scenarios"`
	VUs             int                        `json:"vus"`
	Iterations      int                        `json:"iterations"`
	Duration        any                        `json:"duration"`
	Stages          []any                      `json:"stages"`
	SetupTimeout    any                        `json:"setupTimeout"`
	TeardownTimeout any                        `json:"teardownTimeout"`
	RawThresholds   map[string]json.RawMessage `json:"thresholds"`

	Thresholds      map[string][]string `json:"-"`
	setupTimeout    time.Duration
	teardownTimeout time.Duration
}

type scenarioOptions struct {
	Executor        string            `json:"executor"`
	Rate            float64           `json:"rate"`
	TimeUnit        any               `json:"timeUnit"`
	Duration        any               `json:"duration"`
	MaxDuration     any               `json:"maxDuration"`
	PreAllocatedVUs int               `json:"preAllocatedVUs"`
	MaxVUs          int               `json:"maxVUs"`
	VUs             int               `json:"vus"`
	Iterations      int               `json:"iterations"`
	Exec            string            `json:"exec"`
	Env             map[string]string `json:"env"`
	Tags            map[string]string `json:"tags"`
	GracefulStop    any               `json:"gracefulStop"`
	StartTime       any               `json:"startTime"`
}

// scenario is a scenario as it will run: defaults filled and bounds applied.
type scenario struct {
	name, executor, exec string
	rate                 float64
	timeUnit, duration   time.Duration
	gracefulStop         time.Duration
	preAllocated, maxVUs int
	vus, iterations      int
	maxIterations        int
	env, tags            map[string]string
}

func readOptions(v0 *vu) (options, error) {
	var o options
	val := v0.exports.Get("options")
	if val != nil && !goja.IsUndefined(val) && !goja.IsNull(val) {
		s, err := v0.stringify(val)
		if err != nil {
			return o, err
		}
		if err := json.Unmarshal([]byte(s), &o); err != nil {
			return o, err
		}
	}
	o.Thresholds = map[string][]string{}
	for k, raw := range o.RawThresholds {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return o, fmt.Errorf("thresholds %s: want an array: %w", k, err)
		}
		for _, it := range items {
			var s string
			if json.Unmarshal(it, &s) == nil {
				o.Thresholds[k] = append(o.Thresholds[k], s)
				continue
			}
			var obj struct {
				Threshold string `json:"threshold"`
			}
			if err := json.Unmarshal(it, &obj); err != nil || obj.Threshold == "" {
				return o, fmt.Errorf("thresholds %s: %s: want a string or {threshold: ...}", k, it)
			}
			o.Thresholds[k] = append(o.Thresholds[k], obj.Threshold)
		}
	}
	var err error
	if o.setupTimeout, err = duration(o.SetupTimeout, defaultSetupTimeout); err != nil {
		return o, fmt.Errorf("setupTimeout: %w", err)
	}
	if o.teardownTimeout, err = duration(o.TeardownTimeout, defaultSetupTimeout); err != nil {
		return o, fmt.Errorf("teardownTimeout: %w", err)
	}
	return o, nil
}

// plan turns the options into scenarios, as k6 does for its shortcuts (vus/duration/iterations), and
// applies the run's bounds.
func (o options) plan(run Options) ([]scenario, error) {
	raw := o.Scenarios
	if len(raw) == 0 {
		if len(o.Stages) > 0 {
			return nil, errors.New("stages (ramping-vus) are not supported by k6check")
		}
		vus := max(o.VUs, 1)
		switch {
		case o.Iterations > 0:
			raw = map[string]scenarioOptions{"default": {Executor: "shared-iterations", VUs: vus, Iterations: o.Iterations}}
		case o.Duration != nil:
			raw = map[string]scenarioOptions{"default": {Executor: "constant-vus", VUs: vus, Duration: o.Duration}}
		default:
			raw = map[string]scenarioOptions{"default": {Executor: "per-vu-iterations", VUs: vus, Iterations: 1}}
		}
	}
	var out []scenario
	for _, name := range slices.Sorted(mapKeys(raw)) {
		so := raw[name]
		s := scenario{name: name, executor: so.Executor, exec: so.Exec, rate: so.Rate, env: so.Env, tags: so.Tags,
			preAllocated: so.PreAllocatedVUs, maxVUs: so.MaxVUs, vus: max(so.VUs, 1), iterations: so.Iterations,
			maxIterations: run.MaxIterations}
		if s.exec == "" {
			s.exec = "default"
		}
		var err error
		if s.timeUnit, err = duration(so.TimeUnit, time.Second); err != nil {
			return nil, fmt.Errorf("scenario %s: timeUnit: %w", name, err)
		}
		if s.gracefulStop, err = duration(so.GracefulStop, defaultGracefulStop); err != nil {
			return nil, fmt.Errorf("scenario %s: gracefulStop: %w", name, err)
		}
		durVal := so.Duration
		switch s.executor {
		case "constant-arrival-rate":
			if s.rate <= 0 || so.PreAllocatedVUs <= 0 {
				return nil, fmt.Errorf("scenario %s: constant-arrival-rate needs rate and preAllocatedVUs", name)
			}
			s.maxVUs = max(s.maxVUs, s.preAllocated)
		case "constant-vus":
		case "per-vu-iterations", "shared-iterations":
			s.iterations = max(s.iterations, 1)
			durVal = so.MaxDuration
			if durVal == nil {
				durVal = "10m"
			}
		default:
			return nil, fmt.Errorf("scenario %s: executor %q is not supported by k6check (constant-arrival-rate, constant-vus, per-vu-iterations, shared-iterations)", name, s.executor)
		}
		if s.duration, err = duration(durVal, 0); err != nil {
			return nil, fmt.Errorf("scenario %s: duration: %w", name, err)
		}
		if s.duration <= 0 {
			return nil, fmt.Errorf("scenario %s: duration %v: want a positive duration", name, durVal)
		}
		s.duration = min(s.duration, run.MaxDuration)
		out = append(out, s)
	}
	return out, nil
}

// duration reads a k6 duration: a string such as "1m30s" or a number of milliseconds.
func duration(v any, def time.Duration) (time.Duration, error) {
	switch x := v.(type) {
	case nil:
		return def, nil
	case float64:
		return time.Duration(x * float64(time.Millisecond)), nil
	case string:
		if n, err := strconv.ParseFloat(x, 64); err == nil {
			return time.Duration(n * float64(time.Millisecond)), nil
		}
		if d, ok := strings.CutSuffix(x, "d"); ok {
			n, err := strconv.ParseFloat(d, 64)
			return time.Duration(n * 24 * float64(time.Hour)), err
		}
		return time.ParseDuration(x)
	}
	return 0, fmt.Errorf("%v: not a duration", v)
}

// pool hands out a scenario's VUs: idle ones first, new ones up to max.
type pool struct {
	r        *run
	s        scenario
	dataJSON string
	idle     chan *vu
	mu       sync.Mutex
	all      []*vu
}

func (p *pool) add() (*vu, error) {
	v, err := p.r.newVU(int(p.r.nextVU.Add(1)), p.s.env, p.s.name)
	if err != nil {
		return nil, err
	}
	for k, val := range p.s.tags {
		v.tags[k] = val
	}
	if v.data, err = v.parseData(p.dataJSON); err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.all = append(p.all, v)
	p.mu.Unlock()
	return v, nil
}

// interruptAll stops every VU's JavaScript (the hard stop after gracefulStop).
func (p *pool) interruptAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range p.all {
		v.rt.Interrupt("the scenario's gracefulStop ran out")
	}
}

// runScenario runs one scenario: its executor starts iterations until its (bounded) duration ends,
// then waits gracefulStop for the ones in flight.
func (r *run) runScenario(ctx context.Context, s scenario, dataJSON string) ScenarioResult {
	res := ScenarioResult{Name: s.name, Executor: s.executor, Duration: s.duration, Rate: s.rate, TimeUnit: s.timeUnit,
		PreAllocatedVUs: s.preAllocated, MaxVUs: s.maxVUs}
	p := &pool{r: r, s: s, dataJSON: dataJSON}
	initial := s.vus
	if s.executor == "constant-arrival-rate" {
		initial = s.preAllocated
		p.idle = make(chan *vu, s.maxVUs)
	} else {
		p.idle = make(chan *vu, s.vus)
	}
	for range initial {
		v, err := p.add()
		if err != nil {
			r.recordIterationError(fmt.Errorf("init of a VU: %w", err))
			return res
		}
		p.idle <- v
	}

	iterCtx, cancelIters := context.WithCancel(ctx)
	defer cancelIters()
	var (
		wg                              sync.WaitGroup
		started, completed, interrupted atomic.Int64
		dropped                         int
	)
	one := func(v *vu) bool {
		err := v.iterate(iterCtx, s.exec)
		var ie *goja.InterruptedError
		switch {
		case errors.As(err, &ie) || (err != nil && iterCtx.Err() != nil):
			interrupted.Add(1)
			return false
		case err != nil:
			r.recordIterationError(err)
		}
		completed.Add(1)
		return true
	}
	capped := func() bool { return s.maxIterations > 0 && started.Load() >= int64(s.maxIterations) }
	startTime := time.Now()
	deadline := startTime.Add(s.duration)

	switch s.executor {
	case "constant-arrival-rate":
		interval := time.Duration(float64(s.timeUnit) / s.rate)
		for i := 0; ; i++ {
			at := startTime.Add(time.Duration(i) * interval)
			if !at.Before(deadline) || capped() || ctx.Err() != nil {
				break
			}
			if d := time.Until(at); d > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			}
			var v *vu
			select {
			case v = <-p.idle:
			default:
				if len(p.all) < s.maxVUs {
					nv, err := p.add()
					if err != nil {
						r.recordIterationError(fmt.Errorf("init of a VU: %w", err))
						dropped++
						continue
					}
					v = nv
				}
			}
			if v == nil {
				dropped++
				r.reg.add("dropped_iterations", 1, map[string]string{"scenario": s.name})
				continue
			}
			started.Add(1)
			wg.Go(func() {
				if one(v) {
					p.idle <- v
				}
			})
		}
	default:
		var shared atomic.Int64 // shared-iterations: the next iteration number
		for range s.vus {
			v := <-p.idle
			wg.Go(func() {
				for n := 0; time.Now().Before(deadline) && ctx.Err() == nil && !capped(); n++ {
					switch s.executor {
					case "per-vu-iterations":
						if n >= s.iterations {
							return
						}
					case "shared-iterations":
						if shared.Add(1) > int64(s.iterations) {
							return
						}
					}
					started.Add(1)
					if !one(v) {
						return
					}
				}
			})
		}
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(deadline) + s.gracefulStop):
		cancelIters()
		p.interruptAll()
		<-done
	}
	res.Iterations = int(completed.Load())
	res.Interrupted = int(interrupted.Load())
	res.Dropped = dropped
	res.VUs = len(p.all)
	return res
}
