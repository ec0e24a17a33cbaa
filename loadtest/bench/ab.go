package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Variant is one side of a comparison.
type Variant struct {
	Name string
	Op   Op
	// Pids are extra processes whose CPU belongs to this variant's requests (a stack's services).
	Pids []int
}

// Case is one comparison: the same load on every variant.
type Case struct {
	// Name is the Go benchmark name without "Benchmark" ("Chain/conc=50").
	Name     string
	Conc     int
	Variants []Variant
	// ServerProcess says the variants' Pids are the server, in its own process: the log then also
	// gives the server's CPU per request and the rate one core sustains at that cost.
	ServerProcess bool
}

// Rounds configures the interleaving.
type Rounds struct {
	N      int
	Warmup time.Duration
	Each   time.Duration
}

// Outcome holds every round of every variant of a case.
type Outcome struct {
	Case   string
	Stats  map[string][]Stats
	Order  []string
	Header string
}

// RunCase warms every variant up, then runs N rounds; each round measures every variant once, the
// order rotating each round so neither side always runs first (thermal, GC and cache effects).
func RunCase(ctx context.Context, c Case, r Rounds, log io.Writer) Outcome {
	out := Outcome{Case: c.Name, Stats: map[string][]Stats{}}
	for _, v := range c.Variants {
		out.Order = append(out.Order, v.Name)
		ClosedLoop(ctx, v.Op, c.Conc, r.Warmup, v.Pids)
	}
	for i := range r.N {
		for j := range c.Variants {
			v := c.Variants[(i+j)%len(c.Variants)]
			runtime.GC()
			st := ClosedLoop(ctx, v.Op, c.Conc, r.Each, v.Pids)
			out.Stats[v.Name] = append(out.Stats[v.Name], st)
			if log != nil {
				fmt.Fprintf(log, "  %-28s round %d %-16s %8.0f req/s  cpu %7.1f µs/req  p50 %6.3f ms  p99 %6.3f ms  errors %d\n",
					c.Name, i+1, v.Name, st.QPS(), st.CPUPerOp()/1e3, ms(st.P50), ms(st.P99), st.Errors)
				if c.ServerProcess && st.PidsCPU > 0 {
					fmt.Fprintf(log, "  %-28s         %-16s server process %7.1f µs/req → %.0f req/s per core (server side alone)\n",
						"", v.Name, st.PidsCPUPerOp()/1e3, 1e9/st.PidsCPUPerOp())
				}
			}
		}
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// Line is one Go benchmark result line for st.
func Line(name string, st Stats) string {
	return fmt.Sprintf("Benchmark%s-%d\t%d\t%.0f cpu-ns/op\t%.1f req/s\t%d p50-ns\t%d p99-ns\t%d errors\n",
		name, runtime.GOMAXPROCS(0), st.Ops, st.CPUPerOp(), st.QPS(), st.P50.Nanoseconds(), st.P99.Nanoseconds(), st.Errors)
}

// Header is the benchstat configuration block.
func Header(pkg string) string {
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("goos: %s\ngoarch: %s\npkg: %s\ncpu: %s\n", runtime.GOOS, runtime.GOARCH, pkg, cpu)
}

// AppendFiles appends every round of every variant to dir/<file>-<variant>.txt (one file per variant,
// the same benchmark names in each, so `benchstat file-a.txt file-b.txt` compares them).
func AppendFiles(dir, file string, o Outcome) ([]string, error) {
	var paths []string
	for _, v := range o.Order {
		p := filepath.Join(dir, file+"-"+v+".txt")
		_, statErr := os.Stat(p)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		if statErr != nil {
			b.WriteString(Header("github.com/shopmesh/shopmesh/loadtest/bench"))
		}
		for _, st := range o.Stats[v] {
			b.WriteString(Line(o.Case, st))
		}
		_, err = f.WriteString(b.String())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// Summary is the median of each figure over the rounds.
type Summary struct {
	Variant          string
	CPUPerOp, QPS    float64
	P50, P99         time.Duration
	Errors, Requests int
}

// Summarize returns per-variant medians.
func Summarize(o Outcome) []Summary {
	var out []Summary
	for _, v := range o.Order {
		sts := o.Stats[v]
		s := Summary{Variant: v}
		s.CPUPerOp = median(sts, func(x Stats) float64 { return x.CPUPerOp() })
		s.QPS = median(sts, func(x Stats) float64 { return x.QPS() })
		s.P50 = time.Duration(median(sts, func(x Stats) float64 { return float64(x.P50) }))
		s.P99 = time.Duration(median(sts, func(x Stats) float64 { return float64(x.P99) }))
		for _, x := range sts {
			s.Errors += x.Errors
			s.Requests += x.Ops
		}
		out = append(out, s)
	}
	return out
}

func median(sts []Stats, f func(Stats) float64) float64 {
	if len(sts) == 0 {
		return 0
	}
	v := make([]float64, len(sts))
	for i, s := range sts {
		v[i] = f(s)
	}
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Ensure dir exists.
func Ensure(dir string) error { return os.MkdirAll(dir, 0o755) }
