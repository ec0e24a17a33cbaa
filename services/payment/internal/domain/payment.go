// Package domain is the payment model: customer accounts that hold, release and debit funds, and one
// authorization per order moving through AUTHORIZED → CAPTURED | VOIDED (or DECLINED from the start).
// It imports only the standard library; persistence and transport live in adapters.
package domain

import (
	"fmt"
	"time"
)

// Status is the lifecycle state of an order's authorization.
type Status string

// The statuses. DECLINED, CAPTURED and VOIDED are terminal.
const (
	StatusAuthorized Status = "AUTHORIZED"
	StatusDeclined   Status = "DECLINED"
	StatusCaptured   Status = "CAPTURED"
	StatusVoided     Status = "VOIDED"
)

// DeclineReason explains a DECLINED authorization; empty otherwise.
type DeclineReason string

// The decline reasons.
const (
	DeclineNone              DeclineReason = ""
	DeclineInsufficientFunds DeclineReason = "INSUFFICIENT_FUNDS"
	DeclineAccountNotFound   DeclineReason = "ACCOUNT_NOT_FOUND"
	DeclineCurrencyMismatch  DeclineReason = "CURRENCY_MISMATCH"
)

// Account is a customer's wallet. Balance is the total funds, holds included; Held is what open
// authorizations hold; Available = Balance - Held is what a new authorization can use.
type Account struct {
	CustomerID string
	Balance    int64
	Held       int64
	Currency   string
}

// Available is what a new authorization can hold.
func (a Account) Available() int64 { return a.Balance - a.Held }

// Valid reports whether the account's figures make sense: nothing negative, nothing held beyond the
// balance.
func (a Account) Valid() bool {
	return a.Balance >= 0 && a.Held >= 0 && a.Held <= a.Balance
}

// AuthorizeRequest asks to hold Amount for OrderID on CustomerID's account.
type AuthorizeRequest struct {
	OrderID    string
	CustomerID string
	Amount     int64
	Currency   string
}

// Validate rejects requests no account could ever accept.
func (r AuthorizeRequest) Validate() error {
	switch {
	case r.OrderID == "":
		return fmt.Errorf("order id is empty: %w", ErrInvalidRequest)
	case r.CustomerID == "":
		return fmt.Errorf("customer id is empty: %w", ErrInvalidRequest)
	case r.Amount <= 0:
		return fmt.Errorf("amount %d is not positive: %w", r.Amount, ErrInvalidRequest)
	case r.Currency == "":
		return fmt.Errorf("currency is empty: %w", ErrInvalidRequest)
	}
	return nil
}

// Authorization is the payment of one order. Version starts at 1 and grows by one on every status
// change; it is the aggregate version of the event that announced the change.
type Authorization struct {
	OrderID       string
	CustomerID    string
	Amount        int64
	Currency      string
	Status        Status
	DeclineReason DeclineReason
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Version       int64
}

// Matches reports whether req is a retry of the request that created a: the same order must always
// mean the same payment.
func (a Authorization) Matches(req AuthorizeRequest) bool {
	return a.OrderID == req.OrderID && a.CustomerID == req.CustomerID && a.Amount == req.Amount &&
		a.Currency == req.Currency
}

// EntryKind is one kind of money movement on an account.
type EntryKind string

// The movements: a hold moves funds from available to held, a release moves them back, a debit takes
// held funds out of the balance.
const (
	EntryHold    EntryKind = "HOLD"
	EntryRelease EntryKind = "RELEASE"
	EntryDebit   EntryKind = "DEBIT"
)

// Entry records one movement of an order's money; each kind happens at most once per order.
type Entry struct {
	OrderID    string
	CustomerID string
	Kind       EntryKind
	Amount     int64
	At         time.Time
}

// EventType names what happened to an authorization.
type EventType string

// The event types, one per status change.
const (
	EventAuthorized EventType = "PaymentAuthorized"
	EventDeclined   EventType = "PaymentDeclined"
	EventCaptured   EventType = "PaymentCaptured"
	EventVoided     EventType = "PaymentVoided"
)

// Event announces a status change; Authorization is the state right after it.
type Event struct {
	Type          EventType
	Authorization Authorization
}

// Change is what one use case did: the authorization's new state and, when money moved, the account
// after the movement and the ledger entry. Event is always set for a change that must be persisted.
type Change struct {
	Authorization Authorization
	// Created is true when the authorization is new (insert rather than update).
	Created bool
	// Account is nil when no account was touched (a decline).
	Account *Account
	Entry   *Entry
	Event   Event
}
