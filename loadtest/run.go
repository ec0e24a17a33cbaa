package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

// Options bound one harness run.
type Options struct {
	Scenarios []Scenario
	// Duration overrides every scenario's own duration when > 0.
	Duration time.Duration
	// RateScale multiplies every scenario's rate (1 = as configured).
	RateScale float64
	// Progress receives one line per scenario as it finishes (nil = none).
	Progress io.Writer
}

// Report is what report.json holds.
type Report struct {
	Started  time.Time `json:"started"`
	Machine  string    `json:"machine"`
	Target   Target    `json:"target"`
	Results  []Result  `json:"results"`
	Duration float64   `json:"duration_s"`
}

// Run executes the scenarios one after the other against t.
func Run(ctx context.Context, t Target, o Options) (Report, error) {
	if o.RateScale <= 0 {
		o.RateScale = 1
	}
	rep := Report{Started: time.Now().UTC(), Machine: Machine(), Target: t}
	var orderID string
	var h *httpRun
	defer func() {
		if h != nil {
			h.close()
		}
	}()
	for _, sc := range o.Scenarios {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		d := sc.Duration
		if o.Duration > 0 {
			d = o.Duration
		}
		var r Result
		switch sc.Kind {
		case GRPC:
			if (sc.Name == "order-get" || sc.Name == "order-watch") && orderID == "" {
				id, err := createOrder(ctx, t)
				if err != nil {
					r = Result{Scenario: sc.Name, Kind: GRPC, Note: err.Error(), Codes: map[string]int{}}
					break
				}
				orderID = id
			}
			r = runGRPC(t, sc, d, o.RateScale, orderID)
		case HTTP:
			if t.GatewayURL == "" {
				r = Result{Scenario: sc.Name, Kind: HTTP, Note: "no gateway URL", Codes: map[string]int{}}
				break
			}
			if h == nil {
				var err error
				if h, err = newHTTPRun(ctx, t.GatewayURL); err != nil {
					return rep, fmt.Errorf("gateway: %w", err)
				}
			}
			r = runHTTP(ctx, h, sc, d, o.RateScale)
		}
		rep.Results = append(rep.Results, r)
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "%-24s %6d requests, %5.1f%% errors, p99 %.2f ms %s\n",
				r.Scenario, r.Requests, 100*r.ErrorRate, r.Latency.P99, r.Note)
		}
	}
	rep.Duration = time.Since(rep.Started).Seconds()
	return rep, nil
}

// Machine describes the host for reports.
func Machine() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s %s/%s, %d CPUs, %s", host, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
}

// WriteFiles writes dir/report.json and dir/report.html and returns their paths.
func WriteFiles(dir string, rep Report) (string, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return "", "", err
	}
	jp, hp := filepath.Join(dir, "report.json"), filepath.Join(dir, "report.html")
	if err := os.WriteFile(jp, append(data, '\n'), 0o644); err != nil {
		return "", "", err
	}
	f, err := os.Create(hp)
	if err != nil {
		return "", "", err
	}
	if err := WriteHTML(f, rep); err != nil {
		_ = f.Close()
		return "", "", err
	}
	return jp, hp, f.Close()
}
