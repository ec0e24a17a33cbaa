package k6check_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/loadtest/k6check"
)

// TestShippedScripts runs every script of loadtest/k6 as its header command says against the stack of
// `make run` — its settings, the gateway's per-client rate limit included — started on free ports: each
// script's setup(), a few seconds of its scenario at its own rate, teardown() and its thresholds. It
// fails on what a user running k6 would see fail (read_mix.js used to abort in setup() with a 429 after
// 100 dev tokens). Durations are printed, not asserted.
func TestShippedScripts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the make run stack (-short)")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	url, stop, err := k6check.StartStack(t.Context(), root, os.Environ(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	results, err := k6check.RunShipped(t.Context(), root, url, k6check.Options{MaxDuration: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 3 {
		t.Errorf("%d scripts ran, want every script of loadtest/k6 (3 today)", len(results))
	}
	for _, r := range results {
		var out strings.Builder
		k6check.Print(&out, r)
		t.Log("\n" + out.String())
		if !r.OK() {
			t.Errorf("%s failed: %s", r.Script, strings.Join(r.Problems, "; "))
		}
	}
}
