package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/shopmesh/shopmesh/loadtest/openloop"
)

// customers is how many dev accounts (cust-0001 …) the HTTP scenarios spread their load over.
const customers = 200

// httpRun holds what the HTTP scenarios share: a client and tokens minted once.
type httpRun struct {
	base   string
	client *http.Client
	tokens []string
	admin  string
}

func newHTTPRun(ctx context.Context, base string) (*httpRun, error) {
	tr := &http.Transport{MaxIdleConns: 2000, MaxIdleConnsPerHost: 2000, IdleConnTimeout: 30 * time.Second}
	h := &httpRun{base: strings.TrimRight(base, "/"), client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	for i := 1; i <= customers; i++ {
		tok, err := h.token(ctx, fmt.Sprintf("cust-%04d", i), nil)
		if err != nil {
			return nil, err
		}
		h.tokens = append(h.tokens, tok)
	}
	var err error
	h.admin, err = h.token(ctx, "loadtest-admin", []string{"admin"})
	return h, err
}

func (h *httpRun) close() { h.client.CloseIdleConnections() }

// token mints a dev bearer token (POST /v1/dev/token; dev profile only).
func (h *httpRun) token(ctx context.Context, customer string, scopes []string) (string, error) {
	body, _ := json.Marshal(map[string]any{"customer_id": customer, "scopes": scopes})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.base+"/v1/dev/token", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("dev token: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		return "", fmt.Errorf("dev token: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK || tok.Token == "" {
		return "", fmt.Errorf("dev token: %s: no token", resp.Status)
	}
	return tok.Token, nil
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// runHTTP runs an HTTP scenario for d at sc.Rate × scale.
func runHTTP(ctx context.Context, h *httpRun, sc Scenario, d time.Duration, scale float64) Result {
	rate := max(1, sc.Rate*scale)
	switch sc.Name {
	case OrderPlacement:
		return summarize(sc, h.base, rate, openLoop(ctx, rate, d, h.journey))
	case ReadMix:
		var n atomic.Uint64
		return vegetaRun(sc, h, rate, d, func(t *vegeta.Target) error {
			i := n.Add(1)
			tok := h.tokens[i%uint64(len(h.tokens))]
			t.Method, t.Header = http.MethodGet, bearer(tok)
			switch r := i % 20; {
			case r < 12:
				t.URL = fmt.Sprintf("%s/v1/products/SKU-%04d", h.base, 1+i%24)
			case r < 17:
				t.URL = h.base + "/v1/products"
			default:
				t.URL = h.base + "/v1/accounts/me"
			}
			return nil
		})
	case StockImport:
		body := importBody(50)
		return vegetaRun(sc, h, rate, d, func(t *vegeta.Target) error {
			t.Method, t.URL, t.Body = http.MethodPost, h.base+"/v1/stock:import", body
			t.Header = bearer(h.admin)
			t.Header.Set("Content-Type", "application/x-ndjson")
			return nil
		})
	}
	return Result{Scenario: sc.Name, Kind: HTTP, Note: "unknown HTTP scenario", Codes: map[string]int{}}
}

// importBody is n NDJSON lines adding one unit to existing SKUs.
func importBody(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "{\"sku\":\"SKU-%04d\",\"quantity\":1}\n", 1+i%24)
	}
	return b.Bytes()
}

func vegetaRun(sc Scenario, h *httpRun, rate float64, d time.Duration, tr vegeta.Targeter) Result {
	atk := vegeta.NewAttacker(vegeta.Client(h.client), vegeta.Timeout(10*time.Second), vegeta.MaxBody(1<<20))
	pacer := vegeta.ConstantPacer{Freq: int(rate), Per: time.Second}
	var results []*vegeta.Result
	var start time.Time
	for res := range atk.Attack(tr, pacer, d, sc.Name) {
		if start.IsZero() || res.Timestamp.Before(start) {
			start = res.Timestamp
		}
		results = append(results, res)
	}
	samples := make([]Sample, 0, len(results))
	for _, res := range results {
		code := ""
		if res.Code != 0 {
			code = strconv.Itoa(int(res.Code))
		}
		samples = append(samples, Sample{At: res.Timestamp.Sub(start), Latency: res.Latency, Code: code,
			OK: res.Error == "" && res.Code >= 200 && res.Code < 300})
	}
	return summarize(sc, h.base, rate, samples)
}

// openLoop starts fn at a constant arrival rate for d, independently of how long each call takes
// (bounded at maxInFlight outstanding calls; an arrival beyond that counts as a "dropped" error), and
// returns one sample per arrival.
func openLoop(ctx context.Context, rate float64, d time.Duration, fn func(context.Context) (string, bool)) []Sample {
	const maxInFlight = 2000
	start := time.Now()
	var mu sync.Mutex
	var samples []Sample
	add := func(s Sample) {
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}
	openloop.Schedule{Rate: rate, Duration: d, MaxInFlight: maxInFlight}.Run(ctx,
		func(openloop.Arrival) {
			t0 := time.Now()
			code, ok := fn(ctx)
			add(Sample{At: t0.Sub(start), Latency: time.Since(t0), Code: code, OK: ok})
		},
		func(a openloop.Arrival) { add(Sample{At: a.At, Code: "dropped"}) })
	return samples
}

// journey is one customer placing an order through the gateway: mint a token, list the products,
// place an order for one unit, follow its SSE stream until CONFIRMED or CANCELLED. The code is the
// terminal status, or "<step>:<HTTP status>" of the step that failed.
func (h *httpRun) journey(ctx context.Context) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cust := fmt.Sprintf("cust-%04d", 1+rand.IntN(1000))
	tok, err := h.token(ctx, cust, nil)
	if err != nil {
		return "token", false
	}
	if code := h.do(ctx, http.MethodGet, "/v1/products", tok, nil, nil, nil); code != http.StatusOK {
		return fmt.Sprintf("products:%d", code), false
	}
	var order struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	body := fmt.Appendf(nil, `{"items":[{"sku":"SKU-%04d","quantity":1}]}`, 1+rand.IntN(24))
	hdr := http.Header{"Idempotency-Key": {uuid.NewString()}, "Content-Type": {"application/json"}}
	if code := h.do(ctx, http.MethodPost, "/v1/orders", tok, hdr, body, &order); code != http.StatusCreated {
		return fmt.Sprintf("order:%d", code), false
	}
	status, err := h.follow(ctx, tok, order.ID)
	if err != nil {
		return "events", false
	}
	return status, status == "CONFIRMED"
}

// do sends one request and decodes a JSON answer into out; it returns the HTTP status (0 = transport).
func (h *httpRun) do(ctx context.Context, method, path, tok string, hdr http.Header, body []byte, out any) int {
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, bytes.NewReader(body))
	if err != nil {
		return 0
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := h.client.Do(req)
	if err != nil {
		return 0
	}
	defer func() { _ = resp.Body.Close() }()
	if out != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return 0
		}
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return resp.StatusCode
}

// follow reads GET /v1/orders/{id}/events until a terminal status and returns it.
func (h *httpRun) follow(ctx context.Context, tok, id string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/v1/orders/"+id+"/events", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := h.client.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("events: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	last := ""
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok {
			continue
		}
		var o struct {
			Status string `json:"status"`
		}
		if json.Unmarshal([]byte(strings.TrimSpace(data)), &o) == nil {
			last = o.Status
			if last == "CONFIRMED" || last == "CANCELLED" {
				return last, nil
			}
		}
	}
	if last == "" {
		if err := sc.Err(); err != nil {
			return "", fmt.Errorf("events: stream ended without a status: %w", err)
		}
		return "", errors.New("events: stream ended without a status")
	}
	return last, nil
}
