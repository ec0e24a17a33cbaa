package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/shopmesh/shopmesh/services/payment/internal/domain"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func acct(balance, held int64) *domain.Account {
	return &domain.Account{CustomerID: "c1", Balance: balance, Held: held, Currency: "EUR"}
}

func req(amount int64) domain.AuthorizeRequest {
	return domain.AuthorizeRequest{OrderID: "o1", CustomerID: "c1", Amount: amount, Currency: "EUR"}
}

func TestAuthorize(t *testing.T) {
	t.Parallel()
	usd := acct(1000, 0)
	usd.Currency = "USD"
	tests := []struct {
		name       string
		req        domain.AuthorizeRequest
		acct       *domain.Account
		wantErr    error
		wantStatus domain.Status
		wantReason domain.DeclineReason
		wantHeld   int64
	}{
		{name: "holds when available", req: req(300), acct: acct(1000, 500), wantStatus: domain.StatusAuthorized, wantHeld: 800},
		{name: "holds exactly the available", req: req(500), acct: acct(1000, 500), wantStatus: domain.StatusAuthorized, wantHeld: 1000},
		{name: "declines one cent over", req: req(501), acct: acct(1000, 500), wantStatus: domain.StatusDeclined, wantReason: domain.DeclineInsufficientFunds},
		{name: "declines an empty account", req: req(1), acct: acct(0, 0), wantStatus: domain.StatusDeclined, wantReason: domain.DeclineInsufficientFunds},
		{name: "declines an unknown account", req: req(1), acct: nil, wantStatus: domain.StatusDeclined, wantReason: domain.DeclineAccountNotFound},
		{name: "declines another currency", req: req(1), acct: usd, wantStatus: domain.StatusDeclined, wantReason: domain.DeclineCurrencyMismatch},
		{name: "rejects a zero amount", req: req(0), acct: acct(1000, 0), wantErr: domain.ErrInvalidRequest},
		{name: "rejects a negative amount", req: req(-5), acct: acct(1000, 0), wantErr: domain.ErrInvalidRequest},
		{name: "rejects an empty order", req: domain.AuthorizeRequest{CustomerID: "c1", Amount: 1, Currency: "EUR"}, acct: acct(1, 0), wantErr: domain.ErrInvalidRequest},
		{name: "refuses another customer's account", req: domain.AuthorizeRequest{OrderID: "o1", CustomerID: "c2", Amount: 1, Currency: "EUR"}, acct: acct(1, 0), wantErr: domain.ErrInconsistent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := domain.Authorize(tt.req, tt.acct, now)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			a := c.Authorization
			if !c.Created || a.Status != tt.wantStatus || a.DeclineReason != tt.wantReason || a.Version != 1 {
				t.Fatalf("got created=%v %s/%q v%d, want %s/%q v1", c.Created, a.Status, a.DeclineReason, a.Version, tt.wantStatus, tt.wantReason)
			}
			if !a.Matches(tt.req) {
				t.Errorf("authorization %+v does not match its request", a)
			}
			wantEvent := domain.EventAuthorized
			if tt.wantStatus == domain.StatusDeclined {
				wantEvent = domain.EventDeclined
				if c.Account != nil || c.Entry != nil {
					t.Errorf("a decline moved money: account %+v entry %+v", c.Account, c.Entry)
				}
			} else {
				if c.Account == nil || c.Account.Held != tt.wantHeld || c.Account.Balance != tt.acct.Balance {
					t.Errorf("account after = %+v, want held %d balance %d", c.Account, tt.wantHeld, tt.acct.Balance)
				}
				if c.Entry == nil || c.Entry.Kind != domain.EntryHold || c.Entry.Amount != tt.req.Amount {
					t.Errorf("entry = %+v, want HOLD %d", c.Entry, tt.req.Amount)
				}
				if tt.acct.Held == c.Account.Held {
					t.Errorf("the input account was not copied")
				}
			}
			if c.Event.Type != wantEvent || c.Event.Authorization != a {
				t.Errorf("event = %+v, want %s of the new state", c.Event, wantEvent)
			}
		})
	}
}

func authorization(status domain.Status) domain.Authorization {
	return domain.Authorization{OrderID: "o1", CustomerID: "c1", Amount: 300, Currency: "EUR", Status: status, Version: 1}
}

func TestCaptureAndVoid(t *testing.T) {
	t.Parallel()
	type op func(domain.Authorization, *domain.Account, time.Time) (domain.Change, bool, error)
	tests := []struct {
		name        string
		op          op
		auth        domain.Authorization
		acct        *domain.Account
		wantErr     error
		wantChanged bool
		wantStatus  domain.Status
		wantBalance int64
		wantHeld    int64
		wantEntry   domain.EntryKind
		wantEvent   domain.EventType
	}{
		{name: "capture debits the hold", op: domain.Capture, auth: authorization(domain.StatusAuthorized), acct: acct(1000, 500),
			wantChanged: true, wantStatus: domain.StatusCaptured, wantBalance: 700, wantHeld: 200, wantEntry: domain.EntryDebit, wantEvent: domain.EventCaptured},
		{name: "capture again is a no-op", op: domain.Capture, auth: authorization(domain.StatusCaptured), wantStatus: domain.StatusCaptured},
		{name: "capture voided fails", op: domain.Capture, auth: authorization(domain.StatusVoided), wantErr: domain.ErrInvalidTransition},
		{name: "capture declined fails", op: domain.Capture, auth: authorization(domain.StatusDeclined), wantErr: domain.ErrInvalidTransition},
		{name: "capture without the held funds is inconsistent", op: domain.Capture, auth: authorization(domain.StatusAuthorized), acct: acct(1000, 100), wantErr: domain.ErrInconsistent},
		{name: "capture without account is inconsistent", op: domain.Capture, auth: authorization(domain.StatusAuthorized), wantErr: domain.ErrInconsistent},
		{name: "void releases the hold", op: domain.Void, auth: authorization(domain.StatusAuthorized), acct: acct(1000, 500),
			wantChanged: true, wantStatus: domain.StatusVoided, wantBalance: 1000, wantHeld: 200, wantEntry: domain.EntryRelease, wantEvent: domain.EventVoided},
		{name: "void again is a no-op", op: domain.Void, auth: authorization(domain.StatusVoided), wantStatus: domain.StatusVoided},
		{name: "void declined is a no-op", op: domain.Void, auth: authorization(domain.StatusDeclined), wantStatus: domain.StatusDeclined},
		{name: "void captured fails", op: domain.Void, auth: authorization(domain.StatusCaptured), wantErr: domain.ErrInvalidTransition},
		{name: "void without the held funds is inconsistent", op: domain.Void, auth: authorization(domain.StatusAuthorized), acct: acct(1000, 0), wantErr: domain.ErrInconsistent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, changed, err := tt.op(tt.auth, tt.acct, now)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			a := c.Authorization
			if changed != tt.wantChanged || a.Status != tt.wantStatus {
				t.Fatalf("changed=%v status=%s, want %v %s", changed, a.Status, tt.wantChanged, tt.wantStatus)
			}
			if !changed {
				if a != tt.auth {
					t.Errorf("no-op changed the authorization: %+v", a)
				}
				return
			}
			if a.Version != tt.auth.Version+1 || !a.UpdatedAt.Equal(now) {
				t.Errorf("version %d updated %v, want %d %v", a.Version, a.UpdatedAt, tt.auth.Version+1, now)
			}
			if c.Account.Balance != tt.wantBalance || c.Account.Held != tt.wantHeld {
				t.Errorf("account = %+v, want balance %d held %d", c.Account, tt.wantBalance, tt.wantHeld)
			}
			if c.Entry.Kind != tt.wantEntry || c.Entry.Amount != tt.auth.Amount || c.Event.Type != tt.wantEvent {
				t.Errorf("entry %+v event %s, want %s %d %s", c.Entry, c.Event.Type, tt.wantEntry, tt.auth.Amount, tt.wantEvent)
			}
		})
	}
}

func TestMatches(t *testing.T) {
	t.Parallel()
	a := authorization(domain.StatusAuthorized)
	base := domain.AuthorizeRequest{OrderID: "o1", CustomerID: "c1", Amount: 300, Currency: "EUR"}
	tests := []struct {
		name string
		edit func(*domain.AuthorizeRequest)
		want bool
	}{
		{"same request", func(*domain.AuthorizeRequest) {}, true},
		{"other amount", func(r *domain.AuthorizeRequest) { r.Amount = 301 }, false},
		{"other customer", func(r *domain.AuthorizeRequest) { r.CustomerID = "c2" }, false},
		{"other currency", func(r *domain.AuthorizeRequest) { r.Currency = "USD" }, false},
	}
	for _, tt := range tests {
		r := base
		tt.edit(&r)
		if got := a.Matches(r); got != tt.want {
			t.Errorf("%s: Matches = %v, want %v", tt.name, got, tt.want)
		}
	}
}
