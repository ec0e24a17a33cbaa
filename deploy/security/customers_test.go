package security

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// placeOrder places an order for customer through the gateway with idempotency key key and returns its
// id (the control that the customer's own requests work).
func placeOrder(t *testing.T, f *stackFixture, c *http.Client, customer, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.info.GatewayURL+"/v1/orders",
		strings.NewReader(`{"items":[{"sku":"SKU-0001","quantity":1}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+validToken(f, customer))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var o struct{ ID, Status string }
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil || resp.StatusCode != http.StatusCreated || o.ID == "" {
		t.Fatalf("control: %s places an order: %d %+v %v", customer, resp.StatusCode, o, err)
	}
	return o.ID
}

// TestOtherCustomersOrders: a customer with a valid token reaches for another customer's order by id
// (read, watch, cancel), replays the other's Idempotency-Key, and calls the admin route.
func TestOtherCustomersOrders(t *testing.T) {
	f := stack(t)
	c := client(140)
	const owner, intruder = "cust-0601", "cust-0602"
	key := "security-idor-1"
	id := placeOrder(t, f, c, owner, key)
	orderURL := f.info.GatewayURL + "/v1/orders/" + id
	if code, body, err := do(c, http.MethodGet, orderURL, validToken(f, owner), nil); err != nil || code != http.StatusOK {
		t.Fatalf("control: the owner reads the order: %d %s %v", code, body, err)
	}
	tok := validToken(f, intruder)

	a := attack(t, "HTTP another customer's order read by id", "404 (same as a missing order)")
	for range httpTries {
		a.try(func() (bool, error) {
			code, body, err := do(c, http.MethodGet, orderURL, tok, nil)
			if err != nil {
				return false, err
			}
			a.saw(fmt.Sprint(code))
			return code != http.StatusNotFound || strings.Contains(body, id), nil
		})
	}

	a = attack(t, "HTTP another customer's order watched (SSE)", "404")
	for range httpTries {
		a.try(func() (bool, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, orderURL+"/events", nil)
			if err != nil {
				return false, err
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := c.Do(req)
			if err != nil {
				return false, err
			}
			_ = resp.Body.Close() // the status is the verdict; an open stream is not read
			a.saw(fmt.Sprint(resp.StatusCode))
			return resp.StatusCode != http.StatusNotFound, nil
		})
	}

	a = attack(t, "HTTP another customer's order cancelled", "404; the order stays as it was")
	for range httpTries {
		a.try(func() (bool, error) {
			code, _, err := do(c, http.MethodPost, orderURL+":cancel", tok, strings.NewReader(`{}`))
			if err != nil {
				return false, err
			}
			a.saw(fmt.Sprint(code))
			return code < 300, nil
		})
	}
	code, body, err := do(c, http.MethodGet, orderURL, validToken(f, owner), nil)
	if err != nil || code != http.StatusOK || strings.Contains(body, `"CANCELLED"`) {
		t.Fatalf("after the cancel attempts the owner's order is: %d %s %v", code, body, err)
	}

	a = attack(t, "HTTP another customer's Idempotency-Key replayed", "a new order of the intruder's own, never the owner's")
	for range httpTries {
		a.try(func() (bool, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.info.GatewayURL+"/v1/orders",
				strings.NewReader(`{"items":[{"sku":"SKU-0001","quantity":1}]}`))
			if err != nil {
				return false, err
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", key)
			resp, err := c.Do(req)
			if err != nil {
				return false, err
			}
			defer func() { _ = resp.Body.Close() }()
			var o struct{ ID string }
			_ = json.NewDecoder(resp.Body).Decode(&o)
			a.saw(fmt.Sprint(resp.StatusCode))
			return o.ID == id, nil
		})
	}

	a = attack(t, "HTTP customer token on the admin route (POST /v1/stock:import)", "403")
	for range httpTries {
		a.try(func() (bool, error) {
			code, _, err := doCT(c, http.MethodPost, f.info.GatewayURL+"/v1/stock:import", tok, "application/x-ndjson",
				strings.NewReader(`{"sku":"SKU-0001","quantity":1000}`+"\n"))
			if err != nil {
				return false, err
			}
			a.saw(fmt.Sprint(code))
			return code < 300, nil
		})
	}
}
