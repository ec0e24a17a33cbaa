package loadtest

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/stats"
)

// Sample is one finished request (or journey).
type Sample struct {
	// At is when the request was sent, relative to the start of the scenario.
	At      time.Duration
	Latency time.Duration
	// Code is the gRPC status code name or the HTTP status ("200"); "" is a transport error.
	Code string
	OK   bool
}

// Latency holds percentiles in milliseconds.
type Latency struct {
	Mean float64 `json:"mean_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
}

// Point is one dot of the latency-over-time chart.
type Point struct {
	T  float64 `json:"t_s"`
	Ms float64 `json:"ms"`
	OK bool    `json:"ok"`
}

// Result is the outcome of one scenario.
type Result struct {
	Scenario string  `json:"scenario"`
	Kind     Kind    `json:"kind"`
	Target   string  `json:"target"`
	Rate     float64 `json:"rate_per_s"`
	// Duration is the wall time from the first send to the last response.
	Duration   float64        `json:"duration_s"`
	Requests   int            `json:"requests"`
	Errors     int            `json:"errors"`
	ErrorRate  float64        `json:"error_rate"`
	Throughput float64        `json:"throughput_per_s"`
	Latency    Latency        `json:"latency"`
	Codes      map[string]int `json:"codes"`
	// Series is at most maxPoints samples, evenly picked, for the chart.
	Series []Point `json:"series"`
	// Note explains a skipped or failed scenario.
	Note string `json:"note,omitempty"`
}

const maxPoints = 1500

// summarize turns samples into a Result.
func summarize(sc Scenario, target string, rate float64, samples []Sample) Result {
	r := Result{Scenario: sc.Name, Kind: sc.Kind, Target: target, Rate: rate, Codes: map[string]int{}}
	if len(samples) == 0 {
		r.Note = "no requests completed"
		return r
	}
	slices.SortFunc(samples, func(a, b Sample) int { return cmp.Compare(a.At, b.At) })
	lat := make([]time.Duration, len(samples))
	var sum time.Duration
	var end time.Duration
	for i, s := range samples {
		lat[i] = s.Latency
		sum += s.Latency
		end = max(end, s.At+s.Latency)
		code := s.Code
		if code == "" {
			code = "transport"
		}
		r.Codes[code]++
		if !s.OK {
			r.Errors++
		}
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	r.Requests = len(samples)
	r.ErrorRate = float64(r.Errors) / float64(r.Requests)
	r.Duration = (end - samples[0].At).Seconds()
	if r.Duration > 0 {
		r.Throughput = math.Round(float64(r.Requests-r.Errors)/r.Duration*10) / 10
	}
	r.Latency = Latency{
		Mean: ms(sum / time.Duration(len(lat))), P50: ms(stats.Percentile(lat, 50)), P90: ms(stats.Percentile(lat, 90)),
		P99: ms(stats.Percentile(lat, 99)), Max: ms(lat[len(lat)-1]),
	}
	step := max(1, len(samples)/maxPoints)
	for i := 0; i < len(samples); i += step {
		s := samples[i]
		r.Series = append(r.Series, Point{T: math.Round(s.At.Seconds()*1000) / 1000, Ms: ms(s.Latency), OK: s.OK})
	}
	return r
}

// PrintTable writes one line per result.
func PrintTable(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tkind\trate/s\treqs\terr%\tok/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\tcodes\t")
	for _, r := range results {
		codes := make([]string, 0, len(r.Codes))
		for _, k := range slices.Sorted(maps.Keys(r.Codes)) {
			codes = append(codes, fmt.Sprintf("%s:%d", k, r.Codes[k]))
		}
		c := strings.Join(codes, " ")
		if r.Note != "" {
			c += " (" + r.Note + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%d\t%.2f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t\n", r.Scenario, r.Kind, r.Rate,
			r.Requests, 100*r.ErrorRate, r.Throughput, r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max, c)
	}
	_ = tw.Flush()
}
