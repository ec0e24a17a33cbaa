package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/openloop"
	"github.com/shopmesh/shopmesh/loadtest/stats"
)

// Load is an open-loop order load through the gateway's HTTP API: Rate orders/s whatever the answers,
// each with its own Idempotency-Key; a 503 or 429 is retried with the same key after its Retry-After,
// and a connection error before any answer after a short backoff (at most MaxAttempts attempts and
// Budget in all), so a retry never creates a second order.
type Load struct {
	// Base is the gateway URL ("http://127.0.0.1:8080").
	Base string
	Rate float64
	// Customers and SKUs bound the random choice of customer (cust-0001…) and product (SKU-0001…).
	Customers, SKUs int
	// KeyPrefix starts every idempotency key (unique per scenario).
	KeyPrefix string
	// MaxAttempts and Budget bound the retries of one order; AttemptTimeout bounds one HTTP call.
	MaxAttempts    int
	Budget         time.Duration
	AttemptTimeout time.Duration
	// MaxInFlight bounds the orders outstanding at once; a tick finding it full counts as "client-busy".
	MaxInFlight int

	client *http.Client
	tokens map[string]string
	rec    *Recorder
	seq    int
}

// Status labels of a final outcome besides the HTTP status codes.
const (
	StatusNetErr  = "net"         // connection refused / reset before an answer
	StatusTimeout = "timeout"     // no answer within AttemptTimeout
	StatusBusy    = "client-busy" // the load generator itself had MaxInFlight orders outstanding
)

// Prepare fetches a dev token per customer (retrying for up to a minute: the gateway may just have
// started) and resets the recorder.
func (l *Load) Prepare(ctx context.Context, t0 time.Time) error {
	if l.Customers <= 0 {
		l.Customers = 50
	}
	if l.SKUs <= 0 {
		l.SKUs = 24
	}
	if l.MaxAttempts <= 0 {
		l.MaxAttempts = 5
	}
	if l.Budget <= 0 {
		l.Budget = 30 * time.Second
	}
	if l.AttemptTimeout <= 0 {
		l.AttemptTimeout = 10 * time.Second
	}
	if l.MaxInFlight <= 0 {
		l.MaxInFlight = 2000
	}
	l.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}}
	l.rec = NewRecorder(t0)
	l.tokens = map[string]string{}
	deadline := time.Now().Add(time.Minute)
	for i := 1; i <= l.Customers; i++ {
		c := fmt.Sprintf("cust-%04d", i)
		for {
			tok, err := l.token(ctx, c)
			if err == nil {
				l.tokens[c] = tok
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("dev token for %s: %w", c, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	return nil
}

// Recorder returns the samples recorded so far.
func (l *Load) Recorder() *Recorder { return l.rec }

// Run sends orders at Rate until stop is closed (or ctx ends), then waits for the outstanding ones;
// ctx also bounds every request.
func (l *Load) Run(ctx context.Context, stop <-chan struct{}) {
	if l.Rate <= 0 {
		return
	}
	seq := l.seq
	l.seq += openloop.Schedule{Rate: l.Rate, Stop: stop, MaxInFlight: l.MaxInFlight}.Run(ctx,
		func(a openloop.Arrival) {
			l.rec.sent.Add(1)
			l.rec.Add(l.place(ctx, a.Due, l.key(seq+a.N+1)))
		},
		func(a openloop.Arrival) {
			l.rec.sent.Add(1)
			l.rec.Add(Sample{At: a.Due, Status: StatusBusy, Key: l.key(seq + a.N + 1)})
		})
	l.client.CloseIdleConnections()
}

// key is the idempotency key of the order with sequence number seq.
func (l *Load) key(seq int) string { return fmt.Sprintf("%s-%06d", l.KeyPrefix, seq) }

// place sends one order, retrying 503/429 and connection errors with the same key, and returns the final outcome. Latency
// is from the first attempt to the final answer.
func (l *Load) place(ctx context.Context, start time.Time, key string) Sample {
	c := fmt.Sprintf("cust-%04d", 1+rand.IntN(l.Customers))
	body := fmt.Appendf(nil, `{"items":[{"sku":"SKU-%04d","quantity":1}]}`, 1+rand.IntN(l.SKUs))
	s := Sample{At: start, Key: key}
	for attempt := 1; ; attempt++ {
		code, retryAfter, id, err := l.post(ctx, l.tokens[c], key, body)
		s.Attempts = attempt
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			s.Status = StatusTimeout
		case err != nil:
			s.Status = StatusNetErr
		default:
			s.Status = strconv.Itoa(code)
		}
		s.Latency = time.Since(start)
		if err == nil && (code == http.StatusCreated || code == http.StatusOK) && id != "" {
			s.Accepted, s.OrderID = true, id
			return s
		}
		// A connection refused or reset before any answer (the single gateway restarting) is retried
		// like a 503: the same key makes the retry safe, which is what the key is for. A timeout is not:
		// the order may still be running, and the client gives up.
		netErr := err != nil && s.Status == StatusNetErr
		retryable := netErr || (err == nil && (code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests))
		if !retryable || attempt >= l.MaxAttempts {
			return s
		}
		wait := max(retryAfter, 200*time.Millisecond)
		if netErr {
			wait = min(200*time.Millisecond<<(attempt-1), 2*time.Second) // 0.2, 0.4, 0.8, 1.6 s
		}
		if time.Since(start)+wait > l.Budget || ctx.Err() != nil {
			return s
		}
		time.Sleep(wait)
	}
}

func (l *Load) post(ctx context.Context, token, key string, body []byte) (code int, retryAfter time.Duration, id string, err error) {
	ctx, cancel := context.WithTimeout(ctx, l.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.Base+"/v1/orders", bytes.NewReader(body))
	if err != nil {
		return 0, 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", key)
	resp, err := l.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, "", context.DeadlineExceeded
		}
		return 0, 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(min(s, 10)) * time.Second
	}
	var o struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(data, &o)
	return resp.StatusCode, retryAfter, o.ID, nil
}

func (l *Load) token(ctx context.Context, customer string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.Base+"/v1/dev/token",
		bytes.NewReader(fmt.Appendf(nil, `{"customer_id":%q}`, customer)))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var t struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return "", fmt.Errorf("POST /v1/dev/token: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || t.Token == "" {
		return "", fmt.Errorf("POST /v1/dev/token: %s: no token", resp.Status)
	}
	return t.Token, nil
}

// Sample is the final outcome of one order.
type Sample struct {
	At       time.Time
	Status   string // "201", "503", StatusNetErr, ...
	Latency  time.Duration
	Attempts int
	Key      string
	Accepted bool
	OrderID  string
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// Recorder collects samples by the second their order was sent in.
type Recorder struct {
	t0      time.Time
	sent    atomic.Int64
	mu      sync.Mutex
	samples []Sample
	window  []Sample // completed since the last Window call
}

// Window returns the orders sent so far and the samples completed since the last call (progress).
func (r *Recorder) Window() (sent int64, done []Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	done, r.window = r.window, nil
	return r.sent.Load(), done
}

// NewRecorder starts the clock at t0.
func NewRecorder(t0 time.Time) *Recorder { return &Recorder{t0: t0} }

// Add records s.
func (r *Recorder) Add(s Sample) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
	r.window = append(r.window, s)
}

// Samples returns a copy of every sample, in the order they were sent.
func (r *Recorder) Samples() []Sample {
	r.mu.Lock()
	out := slices.Clone(r.samples)
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Sample) int { return a.At.Compare(b.At) })
	return out
}

// Second is one second of the load: orders sent in it and their outcomes.
type Second struct {
	T      int            `json:"t"` // seconds since the scenario's start
	Sent   int            `json:"sent"`
	OK     int            `json:"ok"`
	Errors map[string]int `json:"errors,omitempty"` // final status → count, for orders not accepted
	P50Ms  float64        `json:"p50_ms"`
	P99Ms  float64        `json:"p99_ms"`
}

// Seconds buckets the samples by the second they were sent in, from 0 to the last one.
func (r *Recorder) Seconds() []Second {
	ss := r.Samples()
	if len(ss) == 0 {
		return nil
	}
	n := int(ss[len(ss)-1].At.Sub(r.t0)/time.Second) + 1
	out := make([]Second, n)
	lat := make([][]float64, n)
	for i := range out {
		out[i].T = i
	}
	for _, s := range ss {
		i := max(0, int(s.At.Sub(r.t0)/time.Second))
		b := &out[i]
		b.Sent++
		if s.Accepted {
			b.OK++
		} else {
			if b.Errors == nil {
				b.Errors = map[string]int{}
			}
			b.Errors[s.Status]++
		}
		if s.Status != StatusBusy {
			lat[i] = append(lat[i], ms(s.Latency))
		}
	}
	for i := range out {
		slices.Sort(lat[i])
		out[i].P50Ms, out[i].P99Ms = stats.Percentile(lat[i], 50), stats.Percentile(lat[i], 99)
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
