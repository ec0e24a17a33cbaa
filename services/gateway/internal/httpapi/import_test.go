package httpapi_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStockImportRetriedWithSameKeyAddsOnce: an upload repeated with its Idempotency-Key adds nothing
// again, an upload dropped after two lines and resent in full adds only the rest, and another key is
// another import.
func TestStockImportRetriedWithSameKeyAddsOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	admin := h.token("ops-1", "admin")
	lines := []string{
		`{"sku":"SKU-1","quantity":5}`,
		`{"sku":"SKU-2","quantity":`,
		`{"sku":"SKU-1","quantity":3}`,
		`{"sku":"SKU-3","quantity":4}`,
		`{"sku":"SKU-1","quantity":1}`,
	}
	body := strings.Join(lines, "\n")
	upload := func(key string) map[string]any {
		t.Helper()
		r := h.do("POST", "/v1/stock:import", admin, str(body), "Content-Type: application/x-ndjson", "Idempotency-Key: "+key)
		if r.status != http.StatusOK || r.header.Get("Idempotency-Key") != key {
			t.Fatalf("status %d, Idempotency-Key %q: %s", r.status, r.header.Get("Idempotency-Key"), r.body)
		}
		m := r.json(t)
		if m["import_id"] != key {
			t.Fatalf("import_id %v, want %s", m["import_id"], key)
		}
		return m
	}
	want := func(m map[string]any, applied, skipped, units float64) {
		t.Helper()
		if m["lines_received"] != 5.0 || m["lines_applied"] != applied || m["lines_skipped"] != skipped ||
			m["lines_rejected"] != 1.0 || m["units_added"] != units {
			t.Fatalf("summary %v; want %v applied, %v skipped, 1 rejected, %v units", m, applied, skipped, units)
		}
	}

	want(upload("delivery-2026-12-06"), 4, 0, 13)
	want(upload("delivery-2026-12-06"), 0, 4, 0) // e.g. the first answer was lost
	if got := h.fakes.Inventory.OnHand("SKU-1"); got != 10+9 {
		t.Fatalf("SKU-1 on hand %d, want 19 (added once)", got)
	}

	// The connection drops after two lines; the full upload is sent again with the same key.
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/v1/stock:import", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Idempotency-Key", "dropped-1")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
		}
	}()
	received := h.fakes.Inventory.Received()
	_, _ = io.WriteString(pw, lines[0]+"\n"+lines[2]+"\n")
	eventually(t, "inventory to receive the first two lines", func() bool { return h.fakes.Inventory.Received() == received+2 })
	pw.CloseWithError(errors.New("connection dropped"))
	<-done
	r := h.do("POST", "/v1/stock:import", admin, str(lines[0]+"\n"+lines[2]+"\n"+strings.Join(lines[3:], "\n")), "Idempotency-Key: dropped-1")
	if m := r.json(t); r.status != http.StatusOK || m["lines_applied"] != 2.0 || m["lines_skipped"] != 2.0 || m["units_added"] != 5.0 {
		t.Fatalf("resent after the drop: %d %s; want 2 applied, 2 skipped, 5 units", r.status, r.body)
	}
	if got := h.fakes.Inventory.OnHand("SKU-1"); got != 19+9 {
		t.Fatalf("SKU-1 on hand %d, want 28", got)
	}

	want(upload("delivery-2026-12-07"), 4, 0, 13) // another key, another import
}

// TestStockImportWithoutKeyGetsOne: without an Idempotency-Key every upload is a new import under an id
// the gateway makes up and returns, so the client can repeat it safely.
func TestStockImportWithoutKeyGetsOne(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	admin := h.token("ops-1", "admin")
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	var ids []string
	for range 2 {
		r := h.do("POST", "/v1/stock:import", admin, str(`{"sku":"SKU-4","quantity":2}`))
		id := r.header.Get("Idempotency-Key")
		if m := r.json(t); r.status != http.StatusOK || !uuid.MatchString(id) || m["import_id"] != id || m["lines_applied"] != 1.0 {
			t.Fatalf("%d, Idempotency-Key %q: %s", r.status, id, r.body)
		}
		ids = append(ids, id)
	}
	if ids[0] == ids[1] {
		t.Fatalf("two uploads got the same import id %s", ids[0])
	}
	if got := h.fakes.Inventory.OnHand("SKU-4"); got != 14 {
		t.Fatalf("SKU-4 on hand %d, want 14", got)
	}
	// Repeating with the returned key is a retry of that import.
	r := h.do("POST", "/v1/stock:import", admin, str(`{"sku":"SKU-4","quantity":2}`), "Idempotency-Key: "+ids[0])
	if m := r.json(t); r.status != http.StatusOK || m["lines_skipped"] != 1.0 || m["lines_applied"] != 0.0 {
		t.Fatalf("retry: %d %s", r.status, r.body)
	}
}

// TestStockImportRefusesBadKey: a key inventory cannot use is refused before anything is sent, naming
// the header.
func TestStockImportRefusesBadKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	admin := h.token("ops-1", "admin")
	for _, key := range []string{"two words", "-leading-dash", strings.Repeat("k", 129), "ключ"} {
		m := wantError(t, h.do("POST", "/v1/stock:import", admin, str(`{"sku":"SKU-1","quantity":1}`), "Idempotency-Key: "+key),
			http.StatusBadRequest, "VALIDATION_ERROR")
		details, _ := m["details"].([]any)
		if len(details) != 1 || details[0].(map[string]any)["field"] != "Idempotency-Key" {
			t.Fatalf("key %q: details %v, want one naming Idempotency-Key", key, m["details"])
		}
	}
	if n := h.fakes.Inventory.Calls("ImportStock"); n != 0 {
		t.Fatalf("ImportStock reached the backend %d times", n)
	}
}
