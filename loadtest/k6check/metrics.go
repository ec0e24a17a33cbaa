package k6check

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/stats"
)

// Kind is a k6 metric type.
type Kind string

// The four k6 metric types (k6/metrics).
const (
	Counter Kind = "counter"
	Gauge   Kind = "gauge"
	Rate    Kind = "rate"
	Trend   Kind = "trend"
)

type metric struct {
	kind    Kind
	isTime  bool
	samples []sample
}

type sample struct {
	value float64
	tags  map[string]string
}

// builtin are k6's own metrics: a threshold may name them. The ones marked recorded are the ones the
// shim measures; a threshold on another is reported as not evaluated.
var builtin = map[string]struct {
	kind     Kind
	isTime   bool
	recorded bool
}{
	"checks":                   {Rate, false, true},
	"http_reqs":                {Counter, false, true},
	"http_req_failed":          {Rate, false, true},
	"http_req_duration":        {Trend, true, true},
	"http_req_waiting":         {Trend, true, true},
	"http_req_receiving":       {Trend, true, true},
	"iterations":               {Counter, false, true},
	"iteration_duration":       {Trend, true, true},
	"dropped_iterations":       {Counter, false, true},
	"group_duration":           {Trend, true, true},
	"data_received":            {Counter, false, true},
	"data_sent":                {Counter, false, true},
	"http_req_blocked":         {Trend, true, false},
	"http_req_connecting":      {Trend, true, false},
	"http_req_tls_handshaking": {Trend, true, false},
	"http_req_sending":         {Trend, true, false},
	"vus":                      {Gauge, false, false},
	"vus_max":                  {Gauge, false, false},
}

// registry holds every sample of one run; every VU adds to it.
type registry struct {
	mu      sync.Mutex
	metrics map[string]*metric
	started time.Time
}

func newRegistry() *registry {
	r := &registry{metrics: map[string]*metric{}, started: time.Now()}
	for name, b := range builtin {
		r.metrics[name] = &metric{kind: b.kind, isTime: b.isTime}
	}
	return r
}

// define registers a custom metric (new Trend(name, isTime) in a script's init code, once per VU).
func (r *registry) define(name string, kind Kind, isTime bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.metrics[name]; ok {
		if m.kind != kind || m.isTime != isTime {
			return fmt.Errorf("metric %q is already a %s (isTime %v)", name, m.kind, m.isTime)
		}
		return nil
	}
	r.metrics[name] = &metric{kind: kind, isTime: isTime}
	return nil
}

func (r *registry) add(name string, value float64, tags map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.metrics[name]
	if !ok {
		return
	}
	m.samples = append(m.samples, sample{value: value, tags: tags})
}

// Threshold is one threshold expression of a script's options and its outcome.
type Threshold struct {
	// Metric is the key of options.thresholds, e.g. "http_req_duration{name:createOrder}".
	Metric string
	// Expr is the expression, e.g. "p(99)<250".
	Expr string
	// Value is the aggregate the expression compared; Samples how many samples it covered.
	Value   float64
	Samples int
	// Timing is true for a threshold on a time metric (a duration): on a shared machine it is reported,
	// and fails the check only when Options.Timing is set.
	Timing bool
	// OK is the outcome; Note says why a threshold could not be evaluated.
	OK   bool
	Note string
}

var (
	metricKey = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_.]*)(?:\{(.*)\})?$`)
	exprRe    = regexp.MustCompile(`^\s*(avg|min|max|med|count|rate|value|p\((\d+(?:\.\d+)?)\))\s*(<=|>=|<|>|===|==|!==|!=)\s*(-?\d+(?:\.\d+)?)\s*$`)
)

// parseSelector splits "name{tag:value,tag2:value}" into the name and the tag filter.
func parseSelector(key string) (string, map[string]string, error) {
	m := metricKey.FindStringSubmatch(strings.TrimSpace(key))
	if m == nil {
		return "", nil, fmt.Errorf("threshold %q: not a metric name with an optional {tag:value} filter", key)
	}
	filter := map[string]string{}
	if m[2] != "" {
		for kv := range strings.SplitSeq(m[2], ",") {
			k, v, ok := strings.Cut(kv, ":")
			if !ok {
				return "", nil, fmt.Errorf("threshold %q: tag filter %q: want tag:value", key, kv)
			}
			filter[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return m[1], filter, nil
}

// evaluate computes one threshold over the recorded samples.
func (r *registry) evaluate(key, expr string) (Threshold, error) {
	t := Threshold{Metric: key, Expr: expr}
	name, filter, err := parseSelector(key)
	if err != nil {
		return t, err
	}
	e := exprRe.FindStringSubmatch(expr)
	if e == nil {
		return t, fmt.Errorf("threshold %s: expression %q: want AGG OP NUMBER (avg, min, max, med, count, rate, value, p(N))", key, expr)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.metrics[name]
	if !ok {
		return t, fmt.Errorf("threshold %s: no metric %q (neither k6's own nor one the script defines)", key, name)
	}
	t.Timing = m.isTime
	agg := e[1]
	if !aggregationFits(m.kind, agg) {
		return t, fmt.Errorf("threshold %s: %s does not apply to a %s", key, agg, m.kind)
	}
	if b, ok := builtin[name]; ok && !b.recorded {
		t.OK, t.Note = true, "not recorded by k6check"
		return t, nil
	}
	var values []float64
	for _, s := range m.samples {
		if matches(s.tags, filter) {
			values = append(values, s.value)
		}
	}
	t.Samples = len(values)
	if len(values) == 0 {
		t.Note = "no samples: the run never recorded this metric (a misspelt name or tag?)"
		return t, nil
	}
	t.Value = aggregate(m.kind, agg, e[2], values, time.Since(r.started))
	limit, _ := strconv.ParseFloat(e[4], 64)
	t.OK = compare(t.Value, e[3], limit)
	return t, nil
}

func aggregationFits(kind Kind, agg string) bool {
	switch kind {
	case Counter:
		return agg == "count" || agg == "rate"
	case Gauge:
		return agg == "value"
	case Rate:
		return agg == "rate"
	default:
		return agg != "count" && agg != "rate" && agg != "value"
	}
}

func matches(tags, filter map[string]string) bool {
	for k, v := range filter {
		if tags[k] != v {
			return false
		}
	}
	return true
}

// aggregate computes agg over values: a Counter's rate is per second of the run, a Rate's the share of
// non-zero samples.
func aggregate(kind Kind, agg, pct string, values []float64, elapsed time.Duration) float64 {
	sum := 0.0
	for _, v := range values {
		sum += v
	}
	switch agg {
	case "count":
		return sum
	case "rate":
		if kind == Counter {
			return sum / max(elapsed.Seconds(), 1e-9)
		}
		return sum / float64(len(values))
	case "value":
		return values[len(values)-1]
	case "avg":
		return sum / float64(len(values))
	}
	sorted := slices.Sorted(slices.Values(values))
	switch agg {
	case "min":
		return sorted[0]
	case "max":
		return sorted[len(sorted)-1]
	case "med":
		return stats.Percentile(sorted, 50)
	}
	p, _ := strconv.ParseFloat(pct, 64)
	return stats.Percentile(sorted, p)
}

func compare(v float64, op string, limit float64) bool {
	switch op {
	case "<":
		return v < limit
	case "<=":
		return v <= limit
	case ">":
		return v > limit
	case ">=":
		return v >= limit
	case "==", "===":
		return v == limit
	default:
		return v != limit
	}
}

// tagsWith returns a copy of base with extra added.
func tagsWith(base map[string]string, extra map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(extra))
	maps.Copy(out, base)
	maps.Copy(out, extra)
	return out
}
