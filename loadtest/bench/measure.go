// Package bench measures shopmesh side by side: each case runs its variants (A/B, sometimes C) in
// interleaved rounds after a warm-up, with CPU time per request as the primary figure (getrusage of this
// process plus /proc CPU of the stack's processes when the variant drives one) and QPS, p50 and p99 as
// secondary ones, and writes one Go-benchmark-format file per variant so benchstat can compare them.
package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shopmesh/shopmesh/loadtest"
	"github.com/shopmesh/shopmesh/loadtest/openloop"
	"github.com/shopmesh/shopmesh/loadtest/stats"
)

// Op is one request.
type Op func(ctx context.Context) error

// Stats is one measured run of one variant.
type Stats struct {
	Ops, Errors int
	Wall        time.Duration
	// CPU is user+sys time of this process and of the variant's extra processes during the run.
	CPU time.Duration
	// PidsCPU is the part of CPU spent by the variant's extra processes (a server in its own process).
	PidsCPU       time.Duration
	P50, P99, Max time.Duration
}

// PidsCPUPerOp is PidsCPU per request.
func (s Stats) PidsCPUPerOp() float64 { return float64(s.PidsCPU) / float64(max(1, s.Ops)) }

func pidsCPU(pids []int) time.Duration {
	var d time.Duration
	for _, p := range pids {
		d += procCPU(p)
	}
	return d
}

// CPUPerOp is the primary figure.
func (s Stats) CPUPerOp() float64 { return float64(s.CPU) / float64(max(1, s.Ops)) }

// QPS is successful requests per second.
func (s Stats) QPS() float64 { return float64(s.Ops-s.Errors) / s.Wall.Seconds() }

// cpuNow returns the user+sys CPU of this process plus that of pids (from /proc; missing ones count 0).
func cpuNow(pids []int) time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	d := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, p := range pids {
		d += procCPU(p)
	}
	return d
}

// procCPU reads utime+stime of a process from /proc/<pid>/stat (clock ticks of 10 ms: USER_HZ is 100
// on Linux).
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the ")" closing the command name: state is field 3, utime 14, stime 15.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// ClosedLoop runs op from conc goroutines back to back for d and measures it.
func ClosedLoop(ctx context.Context, op Op, conc int, d time.Duration, pids []int) Stats {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lats := make([][]time.Duration, conc)
	errs := make([]int, conc)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	cpu0, p0, t0 := cpuNow(pids), pidsCPU(pids), time.Now()
	for g := range conc {
		wg.Go(func() {
			l := make([]time.Duration, 0, 4096)
			for {
				select {
				case <-stop:
					lats[g] = l
					return
				default:
				}
				s := time.Now()
				if err := op(ctx); err != nil {
					errs[g]++
				}
				l = append(l, time.Since(s))
			}
		})
	}
	time.Sleep(d)
	close(stop)
	wg.Wait()
	wall, cpu := time.Since(t0), cpuNow(pids)-cpu0
	var all []time.Duration
	st := Stats{Wall: wall, CPU: cpu, PidsCPU: pidsCPU(pids) - p0}
	for g := range conc {
		all = append(all, lats[g]...)
		st.Errors += errs[g]
	}
	return withPercentiles(st, all)
}

// OpenLoop sends op at a constant rate for d (each arrival in its own goroutine) and measures it.
func OpenLoop(ctx context.Context, op Op, rate float64, d time.Duration, pids []int) Stats {
	var mu sync.Mutex
	var all []time.Duration
	errs := 0
	cpu0, t0 := cpuNow(pids), time.Now()
	openloop.Schedule{Rate: rate, Duration: d}.Run(ctx, func(openloop.Arrival) {
		s := time.Now()
		err := op(ctx)
		l := time.Since(s)
		mu.Lock()
		all = append(all, l)
		if err != nil {
			errs++
		}
		mu.Unlock()
	}, nil)
	st := Stats{Wall: time.Since(t0), CPU: cpuNow(pids) - cpu0, Errors: errs}
	return withPercentiles(st, all)
}

func withPercentiles(st Stats, all []time.Duration) Stats {
	slices.Sort(all)
	st.Ops = len(all)
	st.P50, st.P99 = stats.Percentile(all, 50), stats.Percentile(all, 99)
	if len(all) > 0 {
		st.Max = all[len(all)-1]
	}
	return st
}

// Machine describes the host.
func Machine() string { return loadtest.Machine() }
