package stats_test

import (
	"slices"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/stats"
)

func TestPercentileNearestRank(t *testing.T) {
	t.Parallel()
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	cases := []struct {
		name string
		xs   []int
		p    float64
		want int
	}{
		{"empty", nil, 50, 0},
		{"one value", []int{7}, 99, 7},
		{"median of odd", []int{1, 2, 3}, 50, 2},
		{"median of even takes the lower", []int{1, 2, 3, 4}, 50, 2},
		{"p99 of 100", hundred, 99, 99},
		{"p90 of 100", hundred, 90, 90},
		{"p100 is the max", hundred, 100, 100},
		{"p99 of 10 is the max", hundred[:10], 99, 10},
		{"tiny p is the min", hundred, 0.001, 1},
		{"p0 clamps to the min", hundred, 0, 1},
	}
	for _, c := range cases {
		if got := stats.Percentile(c.xs, c.p); got != c.want {
			t.Errorf("%s: Percentile(p%v) = %d, want %d", c.name, c.p, got, c.want)
		}
	}
}

// TestPercentileRankIsExact: the rank is ceil(p/100·n) even where p/100·n is not exact in floating
// point, for the percentiles the reports print, over sample counts of real runs.
func TestPercentileRankIsExact(t *testing.T) {
	t.Parallel()
	all := make([]int, 100000) // all[i] = i+1, so a value is its rank
	for i := range all {
		all[i] = i + 1
	}
	for _, p := range []int{50, 90, 99} {
		for n := 1; n <= len(all); n++ {
			want := (p*n + 99) / 100 // ceil(p·n/100) in integers
			if got := stats.Percentile(all[:n], float64(p)); got != want {
				t.Fatalf("p%d of %d values: rank %d, want %d", p, n, got, want)
			}
		}
	}
}

func TestPercentileOfDurationsAndFloats(t *testing.T) {
	t.Parallel()
	d := []time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond}
	slices.Sort(d)
	if got := stats.Percentile(d, 50); got != 2*time.Millisecond {
		t.Fatalf("p50 %v", got)
	}
	f := []float64{0.5, 9.25, 1.5, 4}
	slices.Sort(f)
	if got := stats.Percentile(f, 99); got != 9.25 {
		t.Fatalf("p99 %v", got)
	}
}
