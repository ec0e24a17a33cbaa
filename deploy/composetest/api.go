package composetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// API is the gateway's HTTP API as a customer uses it.
type API struct {
	// Base is the gateway URL ("http://127.0.0.1:8080").
	Base string
	// Token returns the bearer token of customer.
	Token func(customer string) (string, error)
	// AttemptTimeout bounds one HTTP call.
	AttemptTimeout time.Duration
	Client         *http.Client
}

// Order is the part of the API's order the harness reads.
type Order struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	CancelReason string `json:"cancel_reason"`
}

// Answer is one HTTP answer to an order placement.
type Answer struct {
	Code       int
	RetryAfter time.Duration
	Order      Order
}

func (a *API) client() *http.Client {
	if a.Client != nil {
		return a.Client
	}
	return http.DefaultClient
}

func (a *API) timeout() time.Duration {
	if a.AttemptTimeout > 0 {
		return a.AttemptTimeout
	}
	return 10 * time.Second
}

// do sends one request with the customer's token (none when customer is "") and decodes a JSON answer
// into out when the status is 2xx.
func (a *API) do(ctx context.Context, method, path, customer string, header http.Header, body []byte, out any) (int, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.Base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if customer != "" {
		tok, err := a.Token(customer)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := a.client().Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, fmt.Errorf("%s %s: %w", method, path, context.DeadlineExceeded)
		}
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, resp.Header, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, resp.Header, fmt.Errorf("%s %s: %s: %w", method, path, resp.Status, err)
		}
	}
	return resp.StatusCode, resp.Header, nil
}

// PlaceOnce sends one POST /v1/orders with the idempotency key (and extra headers, e.g. traceparent).
func (a *API) PlaceOnce(ctx context.Context, customer, key, sku string, qty int, extra http.Header) (Answer, error) {
	h := http.Header{}
	for k, v := range extra {
		h[k] = v
	}
	h.Set("Idempotency-Key", key)
	body := fmt.Appendf(nil, `{"items":[{"sku":%q,"quantity":%d}]}`, sku, qty)
	var ans Answer
	code, header, err := a.do(ctx, http.MethodPost, "/v1/orders", customer, h, body, &ans.Order)
	ans.Code = code
	if header != nil {
		if s, perr := strconv.Atoi(header.Get("Retry-After")); perr == nil && s > 0 {
			ans.RetryAfter = time.Duration(min(s, 10)) * time.Second
		}
	}
	return ans, err
}

// GetOrder reads one order of customer.
func (a *API) GetOrder(ctx context.Context, customer, id string) (Order, error) {
	var o Order
	code, _, err := a.do(ctx, http.MethodGet, "/v1/orders/"+id, customer, nil, nil, &o)
	if err != nil {
		return o, err
	}
	if code != http.StatusOK {
		return o, fmt.Errorf("GET /v1/orders/%s: status %d", id, code)
	}
	return o, nil
}

// WaitStatus polls the order until its status is final (not PENDING) or ctx ends, and returns it.
func (a *API) WaitStatus(ctx context.Context, customer, id string) (Order, error) {
	var last Order
	var lastErr error
	for {
		o, err := a.GetOrder(ctx, customer, id)
		if err == nil {
			last = o
			if o.Status != "" && o.Status != "PENDING" {
				return o, nil
			}
		}
		lastErr = err
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return last, lastErr
			}
			return last, fmt.Errorf("order %s still %s: %w", id, last.Status, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Outcome is the final outcome of one order placed with retries.
type Outcome struct {
	Key      string
	Customer string
	Attempts int
	// Status is the final HTTP status ("201") or "net" / "timeout".
	Status   string
	Accepted bool
	OrderID  string
	Latency  time.Duration
	At       time.Time
}

// Retry is the client's retry policy: loadtest/chaos.Load's (503 and 429 after Retry-After, at least
// 200 ms; a connection error before any answer after 0.2, 0.4, 0.8, 1.6 s; a timeout is not retried:
// the order may still be running), at most MaxAttempts attempts within Budget, always with the same key.
type Retry struct {
	MaxAttempts int
	Budget      time.Duration
}

// Place places one order with the retry policy and returns its final outcome.
func (a *API) Place(ctx context.Context, r Retry, customer, key, sku string, qty int) Outcome {
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 5
	}
	if r.Budget <= 0 {
		r.Budget = 30 * time.Second
	}
	start := time.Now()
	out := Outcome{Key: key, Customer: customer, At: start}
	for attempt := 1; ; attempt++ {
		ans, err := a.PlaceOnce(ctx, customer, key, sku, qty, nil)
		out.Attempts = attempt
		out.Latency = time.Since(start)
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			out.Status = "timeout"
		case err != nil && ans.Code == 0:
			out.Status = "net"
		default:
			out.Status = strconv.Itoa(ans.Code)
		}
		if err == nil && (ans.Code == http.StatusCreated || ans.Code == http.StatusOK) && ans.Order.ID != "" {
			out.Accepted, out.OrderID = true, ans.Order.ID
			return out
		}
		netErr := out.Status == "net"
		retryable := netErr || ans.Code == http.StatusServiceUnavailable || ans.Code == http.StatusTooManyRequests
		if !retryable || attempt >= r.MaxAttempts {
			return out
		}
		wait := max(ans.RetryAfter, 200*time.Millisecond)
		if netErr {
			wait = min(200*time.Millisecond<<(attempt-1), 2*time.Second)
		}
		if time.Since(start)+wait > r.Budget || ctx.Err() != nil {
			return out
		}
		select {
		case <-ctx.Done():
			return out
		case <-time.After(wait):
		}
	}
}

// Settle waits (8 at a time, within ctx) for every accepted order of outs to leave PENDING and counts
// the final statuses; an order whose status could not be read counts as "unknown".
func (a *API) Settle(ctx context.Context, outs []Outcome) map[string]int {
	var mu sync.Mutex
	final := map[string]int{}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, o := range outs {
		if !o.Accepted {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			got, err := a.WaitStatus(ctx, o.Customer, o.OrderID)
			st := got.Status
			if err != nil {
				st = "unknown"
			}
			mu.Lock()
			final[st]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return final
}
