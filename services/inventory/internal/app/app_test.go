package app_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/shopmesh/shopmesh/services/inventory/internal/app"
	"github.com/shopmesh/shopmesh/services/inventory/internal/domain"
	"github.com/shopmesh/shopmesh/services/inventory/internal/store"
)

type noFeed struct{}

func (noFeed) Watch(context.Context, []string) (<-chan domain.StockLevel, error) { return nil, nil }

// New refuses a missing dependency or an unnamed inbox instead of failing on first use.
func TestNewChecksDepsAndSettings(t *testing.T) {
	t.Parallel()
	st := &store.Store{} // never called: only its type matters here
	log := slog.New(slog.DiscardHandler)
	full := app.Deps{Stock: st, Effects: st, Feed: noFeed{}, Logger: log}
	if _, err := app.New(full, app.Settings{Consumer: "inventory"}); err != nil {
		t.Fatalf("complete deps: %v", err)
	}
	for name, tt := range map[string]struct {
		deps app.Deps
		s    app.Settings
		want string
	}{
		"no stock":    {app.Deps{Effects: st, Feed: noFeed{}, Logger: log}, app.Settings{Consumer: "inventory"}, "stock"},
		"no feed":     {app.Deps{Stock: st, Effects: st, Logger: log}, app.Settings{Consumer: "inventory"}, "feed"},
		"no logger":   {app.Deps{Stock: st, Effects: st, Feed: noFeed{}}, app.Settings{Consumer: "inventory"}, "logger"},
		"no consumer": {full, app.Settings{}, "consumer"},
	} {
		if _, err := app.New(tt.deps, tt.s); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one naming %s", name, err, tt.want)
		}
	}
}
