// Package stats holds the one percentile every loadtest report uses, so the harness, the benchmarks
// and the chaos campaign compute p50/p90/p99 the same way.
package stats

import (
	"cmp"
	"math"
)

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by nearest rank: the smallest value
// such that at least p% of the values are at or below it. It returns the zero value for no values.
func Percentile[T cmp.Ordered](sorted []T, p float64) T {
	if len(sorted) == 0 {
		var zero T
		return zero
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
