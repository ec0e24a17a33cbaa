// Package k6check runs shopmesh's k6 scripts without k6 (AGPL, not a dependency): each script's init
// code, setup(), its scenarios' functions at their own rate for a bounded time, and teardown() run in
// goja over a small shim of the k6 APIs the scripts use (k6, k6/http, k6/metrics, k6/data, __ENV,
// open), and the script's thresholds are evaluated over what the shim recorded. A run fails on a
// setup, iteration or teardown error, a failed check, a response the script does not expect (k6's
// http_req_failed) or a crossed threshold; thresholds on durations are reported and fail only with
// Options.Timing (figures on a shared machine are not asserted).
package k6check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dop251/goja"
)

// Options bound and configure one run of a script.
type Options struct {
	// Env is the script's __ENV (k6's -e KEY=VALUE); the process environment is not passed.
	Env map[string]string
	// MaxDuration caps each scenario's duration (default 5 s); the scenario's own rate and VUs apply.
	MaxDuration time.Duration
	// MaxIterations caps the iterations each scenario starts (0: no cap besides MaxDuration).
	MaxIterations int
	// SleepScale multiplies the seconds of sleep() in iterations (default 0.1: think time shortened);
	// setup() and teardown() sleep as written, since there a sleep paces requests against a limit.
	SleepScale float64
	// Timing makes crossed thresholds on durations fail the run too (a quiet machine).
	Timing bool
	// Client sends the scripts' requests (default: a client with keep-alive for many VUs).
	Client *http.Client
	// Log receives console.* output of the scripts (default discarded).
	Log io.Writer
}

// Result is what one run of a script found.
type Result struct {
	Script    string
	Elapsed   time.Duration
	Scenarios []ScenarioResult
	// SetupError and TeardownError are the exception of setup() and teardown(), "" when they passed.
	SetupError, TeardownError string
	// IterationErrors counts iterations that ended with an exception (fail(), a thrown error);
	// FirstErrors keeps a few distinct messages.
	IterationErrors int
	FirstErrors     []string
	Checks          []CheckResult
	Requests        []RequestResult
	Thresholds      []Threshold
	// EnvRead lists the __ENV variables the script looked at.
	EnvRead []string
	// Problems lists every reason the run failed; empty means the script passed.
	Problems []string
}

// OK reports whether the script passed.
func (r Result) OK() bool { return len(r.Problems) == 0 }

// ScenarioResult is one scenario's execution.
type ScenarioResult struct {
	Name, Executor string
	// Duration is how long iterations were started (the scenario's own, capped by MaxDuration).
	Duration                time.Duration
	Iterations, Dropped     int
	VUs, Interrupted        int
	Rate                    float64
	TimeUnit                time.Duration
	PreAllocatedVUs, MaxVUs int
}

// CheckResult counts one named check.
type CheckResult struct {
	Name          string
	Passes, Fails int
}

// RequestResult counts the responses of one request name (the name tag, else the URL) by status.
type RequestResult struct {
	Name, Method string
	Status       int
	Count        int
	// Expected is false for a response k6 counts in http_req_failed (by default status 0 or >= 400).
	Expected bool
	// Error is the transport error of a status-0 response.
	Error string
}

const (
	defaultMaxDuration  = 5 * time.Second
	defaultSleepScale   = 0.1
	defaultGracefulStop = 30 * time.Second
	defaultSetupTimeout = 60 * time.Second
	maxFirstErrors      = 5
)

// run is the state one script's VUs share.
type run struct {
	opts     Options
	script   string
	programs programs
	reg      *registry
	client   *http.Client

	mu         sync.Mutex
	checks     map[string]*CheckResult
	checkOrder []string
	requests   map[RequestResult]int
	iterErrs   int
	firstErrs  []string
	shared     map[string]string
	envRead    map[string]bool
	logMu      sync.Mutex
	// nextVU numbers the VUs of every scenario (__VU; 0 is the one running init, setup and teardown).
	nextVU atomic.Int64
}

// Run executes the script at path as `k6 run` would, bounded by opts, and reports what it found. An
// error means the run could not happen at all (the file is missing); everything a script does wrong
// is in Result.Problems.
func Run(ctx context.Context, path string, opts Options) (Result, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Result{}, err
	}
	if opts.MaxDuration <= 0 {
		opts.MaxDuration = defaultMaxDuration
	}
	if opts.SleepScale <= 0 {
		opts.SleepScale = defaultSleepScale
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	client := opts.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 512
		client = &http.Client{Transport: tr}
		defer tr.CloseIdleConnections()
	}
	r := &run{opts: opts, script: abs, reg: newRegistry(), client: client,
		checks: map[string]*CheckResult{}, requests: map[RequestResult]int{}, shared: map[string]string{},
		envRead: map[string]bool{}}
	res := Result{Script: path}
	start := time.Now()
	r.execute(ctx, &res)
	res.Elapsed = time.Since(start)
	r.collect(&res)
	return res, nil
}

func (r *run) execute(ctx context.Context, res *Result) {
	v0, err := r.newVU(0, nil, "")
	if err != nil {
		res.Problems = append(res.Problems, "init: "+errText(err))
		return
	}
	o, err := readOptions(v0)
	if err != nil {
		res.Problems = append(res.Problems, "options: "+err.Error())
		return
	}
	scenarios, err := o.plan(r.opts)
	if err != nil {
		res.Problems = append(res.Problems, "options: "+err.Error())
		return
	}
	for _, s := range scenarios {
		if _, ok := goja.AssertFunction(v0.exports.Get(s.exec)); !ok {
			res.Problems = append(res.Problems, fmt.Sprintf("scenario %s: the script exports no function %q", s.name, s.exec))
		}
	}
	if len(res.Problems) > 0 {
		return
	}

	// setup() once, its result handed to every VU as JSON (k6 copies it the same way).
	dataJSON := ""
	if fn, ok := goja.AssertFunction(v0.exports.Get("setup")); ok {
		val, err := v0.callPhase(ctx, "::setup", o.setupTimeout, fn)
		if err != nil {
			res.SetupError = errText(err)
			res.Problems = append(res.Problems, "setup: "+res.SetupError)
			return
		}
		if dataJSON, err = v0.stringify(val); err != nil {
			res.SetupError = "setup data: " + err.Error()
			res.Problems = append(res.Problems, res.SetupError)
			return
		}
	}

	var wg sync.WaitGroup
	results := make([]ScenarioResult, len(scenarios))
	for i, s := range scenarios {
		wg.Go(func() { results[i] = r.runScenario(ctx, s, dataJSON) })
	}
	wg.Wait()
	res.Scenarios = results

	if fn, ok := goja.AssertFunction(v0.exports.Get("teardown")); ok {
		data, err := v0.parseData(dataJSON)
		if err == nil {
			_, err = v0.callPhase(ctx, "::teardown", o.teardownTimeout, fn, data)
		}
		if err != nil {
			res.TeardownError = errText(err)
			res.Problems = append(res.Problems, "teardown: "+res.TeardownError)
		}
	}

	for _, key := range slices.Sorted(mapKeys(o.Thresholds)) {
		for _, expr := range o.Thresholds[key] {
			t, err := r.reg.evaluate(key, expr)
			if err != nil {
				res.Problems = append(res.Problems, err.Error())
				continue
			}
			res.Thresholds = append(res.Thresholds, t)
			switch {
			case t.Note != "" && !t.OK:
				res.Problems = append(res.Problems, fmt.Sprintf("threshold %s %s: %s", t.Metric, t.Expr, t.Note))
			case !t.OK && (!t.Timing || r.opts.Timing):
				res.Problems = append(res.Problems, fmt.Sprintf("threshold %s %s crossed: %s over %d samples",
					t.Metric, t.Expr, formatValue(t), t.Samples))
			}
		}
	}
}

// collect copies the shared counters into res and adds the problems they show.
func (r *run) collect(res *Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range r.checkOrder {
		c := *r.checks[name]
		res.Checks = append(res.Checks, c)
		if c.Fails > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("check %q failed %d of %d times", c.Name, c.Fails, c.Passes+c.Fails))
		}
	}
	for k, n := range r.requests {
		k.Count = n
		res.Requests = append(res.Requests, k)
	}
	sort.Slice(res.Requests, func(i, j int) bool {
		a, b := res.Requests[i], res.Requests[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Status < b.Status
	})
	for _, q := range res.Requests {
		if !q.Expected {
			what := strconv.Itoa(q.Status)
			if q.Error != "" {
				what += " (" + q.Error + ")"
			}
			res.Problems = append(res.Problems, fmt.Sprintf("%d unexpected responses %s to %s %s", q.Count, what, q.Method, q.Name))
		}
	}
	res.IterationErrors, res.FirstErrors = r.iterErrs, r.firstErrs
	res.EnvRead = slices.Sorted(mapKeys(r.envRead))
	if r.iterErrs > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d iterations ended with an exception, e.g. %s", r.iterErrs, r.firstErrs[0]))
	}
	for _, s := range res.Scenarios {
		if s.Iterations == 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("scenario %s completed no iteration", s.Name))
		}
	}
}

func (r *run) recordCheck(name string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, found := r.checks[name]
	if !found {
		c = &CheckResult{Name: name}
		r.checks[name] = c
		r.checkOrder = append(r.checkOrder, name)
	}
	if ok {
		c.Passes++
	} else {
		c.Fails++
	}
}

func (r *run) recordRequest(q RequestResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[q]++
}

func (r *run) recordIterationError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.iterErrs++
	msg := errText(err)
	if len(r.firstErrs) < maxFirstErrors && !slices.Contains(r.firstErrs, msg) {
		r.firstErrs = append(r.firstErrs, msg)
	}
}

func (r *run) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	_, _ = fmt.Fprintf(r.opts.Log, format+"\n", args...)
}

// errText is the first line of an error (a goja exception carries its JS stack after it).
func errText(err error) string {
	var ex *goja.Exception
	msg := err.Error()
	if errors.As(err, &ex) {
		msg = ex.Value().String()
		if frames := ex.String(); frames != "" {
			// The first stack line names where it was thrown.
			if _, rest, ok := strings.Cut(frames, "\n"); ok {
				if at, _, _ := strings.Cut(strings.TrimSpace(rest), "\n"); at != "" && !strings.HasSuffix(at, "(native)") {
					msg += " (" + at + ")"
				}
			}
		}
	}
	first, _, _ := strings.Cut(msg, "\n")
	return first
}

func formatValue(t Threshold) string {
	if t.Timing {
		return fmt.Sprintf("%.1f ms", t.Value)
	}
	return strconv.FormatFloat(t.Value, 'g', 4, 64)
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// stringify is JSON.stringify in the VU's runtime ("" for undefined).
func (v *vu) stringify(val goja.Value) (string, error) {
	if val == nil || goja.IsUndefined(val) {
		return "", nil
	}
	fn, _ := goja.AssertFunction(v.rt.Get("JSON").ToObject(v.rt).Get("stringify"))
	out, err := fn(goja.Undefined(), val)
	if err != nil {
		return "", err
	}
	if goja.IsUndefined(out) {
		return "", nil
	}
	return out.String(), nil
}

// parseData is setup()'s result as this VU sees it (undefined when setup returned nothing).
func (v *vu) parseData(dataJSON string) (goja.Value, error) {
	if dataJSON == "" {
		return goja.Undefined(), nil
	}
	parse, _ := goja.AssertFunction(v.rt.Get("JSON").ToObject(v.rt).Get("parse"))
	return parse(goja.Undefined(), v.rt.ToValue(dataJSON))
}
