package domain

import (
	"fmt"
	"time"
)

// Authorize decides a new authorization for req on acct (nil when the customer has no account). It
// holds the amount when the account can afford it and declines otherwise; a decline is an outcome,
// not an error. The change always creates the authorization and carries its event.
func Authorize(req AuthorizeRequest, acct *Account, now time.Time) (Change, error) {
	if err := req.Validate(); err != nil {
		return Change{}, err
	}
	a := Authorization{
		OrderID:    req.OrderID,
		CustomerID: req.CustomerID,
		Amount:     req.Amount,
		Currency:   req.Currency,
		CreatedAt:  now,
		UpdatedAt:  now,
		Version:    1,
	}
	switch {
	case acct == nil:
		a.DeclineReason = DeclineAccountNotFound
	case acct.CustomerID != req.CustomerID:
		return Change{}, fmt.Errorf("account %s for customer %s: %w", acct.CustomerID, req.CustomerID, ErrInconsistent)
	case acct.Currency != req.Currency:
		a.DeclineReason = DeclineCurrencyMismatch
	case acct.Available() < req.Amount:
		a.DeclineReason = DeclineInsufficientFunds
	}
	if a.DeclineReason != DeclineNone {
		a.Status = StatusDeclined
		return Change{Authorization: a, Created: true, Event: Event{Type: EventDeclined, Authorization: a}}, nil
	}
	a.Status = StatusAuthorized
	held := *acct
	held.Held += req.Amount
	if !held.Valid() {
		return Change{}, fmt.Errorf("hold %d on %s: %w", req.Amount, acct.CustomerID, ErrInconsistent)
	}
	return Change{
		Authorization: a,
		Created:       true,
		Account:       &held,
		Entry:         &Entry{OrderID: a.OrderID, CustomerID: a.CustomerID, Kind: EntryHold, Amount: a.Amount, At: now},
		Event:         Event{Type: EventAuthorized, Authorization: a},
	}, nil
}

// Capture decides the capture of a: the held amount leaves the account (balance and held both drop).
// acct is the authorization's account, needed only while a is AUTHORIZED. changed is false when a was
// already captured (a retry); capturing a declined or voided authorization is ErrInvalidTransition.
func Capture(a Authorization, acct *Account, now time.Time) (c Change, changed bool, err error) {
	switch a.Status {
	case StatusCaptured:
		return Change{Authorization: a}, false, nil
	case StatusAuthorized:
	default:
		return Change{}, false, fmt.Errorf("capture %s authorization of order %s: %w", a.Status, a.OrderID, ErrInvalidTransition)
	}
	next, err := move(a, acct, "capture", func(acc *Account) {
		acc.Balance -= a.Amount
		acc.Held -= a.Amount
	})
	if err != nil {
		return Change{}, false, err
	}
	return transition(a, StatusCaptured, EventCaptured, EntryDebit, next, now), true, nil
}

// Void decides the release of a's hold (saga compensation). changed is false when there is nothing to
// release: a is already voided, or was declined. Voiding a captured authorization is
// ErrInvalidTransition: the money is gone and only a refund (not modelled) could return it.
func Void(a Authorization, acct *Account, now time.Time) (c Change, changed bool, err error) {
	switch a.Status {
	case StatusVoided, StatusDeclined:
		return Change{Authorization: a}, false, nil
	case StatusAuthorized:
	default:
		return Change{}, false, fmt.Errorf("void %s authorization of order %s: %w", a.Status, a.OrderID, ErrInvalidTransition)
	}
	next, err := move(a, acct, "void", func(acc *Account) { acc.Held -= a.Amount })
	if err != nil {
		return Change{}, false, err
	}
	return transition(a, StatusVoided, EventVoided, EntryRelease, next, now), true, nil
}

// move applies f to a copy of a's account and checks the result still makes sense.
func move(a Authorization, acct *Account, op string, f func(*Account)) (Account, error) {
	if acct == nil || acct.CustomerID != a.CustomerID {
		return Account{}, fmt.Errorf("%s order %s: account of %s missing: %w", op, a.OrderID, a.CustomerID, ErrInconsistent)
	}
	next := *acct
	if next.Held < a.Amount {
		return Account{}, fmt.Errorf("%s order %s: %d held < %d: %w", op, a.OrderID, next.Held, a.Amount, ErrInconsistent)
	}
	f(&next)
	if !next.Valid() {
		return Account{}, fmt.Errorf("%s order %s on %s: %w", op, a.OrderID, a.CustomerID, ErrInconsistent)
	}
	return next, nil
}

func transition(a Authorization, to Status, ev EventType, kind EntryKind, acct Account, now time.Time) Change {
	a.Status = to
	a.UpdatedAt = now
	a.Version++
	return Change{
		Authorization: a,
		Account:       &acct,
		Entry:         &Entry{OrderID: a.OrderID, CustomerID: a.CustomerID, Kind: kind, Amount: a.Amount, At: now},
		Event:         Event{Type: ev, Authorization: a},
	}
}
