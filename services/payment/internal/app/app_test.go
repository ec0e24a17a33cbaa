package app_test

import (
	"testing"

	"github.com/shopmesh/shopmesh/services/payment/internal/app"
)

func TestNewNeedsAStore(t *testing.T) {
	t.Parallel()
	if _, err := app.New(app.Deps{}, app.Settings{}); err == nil {
		t.Fatal("New without a store: want an error")
	}
}
