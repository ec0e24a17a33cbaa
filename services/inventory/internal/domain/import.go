package domain

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"regexp"
	"time"
)

// ImportLine adds Quantity units to a SKU, creating or updating its catalogue entry. ImportID and Seq
// identify the line: it is applied at most once per (ImportID, Seq), however often and wherever it is
// sent again.
type ImportLine struct {
	ImportID   string
	Seq        int64
	SKU        string
	Quantity   int64
	Name       *string
	PriceCents *int64
	Currency   *string
}

// Bounds of an import line.
const (
	MaxImportQuantity = 1_000_000
	MaxImportIDLen    = 128
)

var importIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)

// ValidImportID reports whether id can name an import: 1..128 letters, digits and ._:- starting with a
// letter or digit (a UUID, an HTTP Idempotency-Key of that alphabet, "delivery-2026-12-06").
func ValidImportID(id string) bool {
	return len(id) <= MaxImportIDLen && importIDPattern.MatchString(id)
}

// ValidateKey checks the line's identity, without which it cannot be applied exactly once.
func (l ImportLine) ValidateKey() error {
	switch {
	case !ValidImportID(l.ImportID):
		return invalid("import_id", "must be 1 to 128 letters, digits or ._:- starting with a letter or digit")
	case l.Seq < 1:
		return invalid("seq", "must be at least 1")
	}
	return nil
}

// Validate checks the line on its own; whether a new SKU has what it needs is checked by NewProduct.
func (l ImportLine) Validate() error {
	if err := l.ValidateKey(); err != nil {
		return err
	}
	switch {
	case !ValidSKU(l.SKU):
		return invalid("sku", "must match ^[A-Z0-9][A-Z0-9-]{1,31}$")
	case l.Quantity < 1 || l.Quantity > MaxImportQuantity:
		return invalid("quantity", "must be between 1 and 1000000")
	case l.Name != nil && (*l.Name == "" || len(*l.Name) > 200):
		return invalid("name", "must be 1 to 200 characters")
	case l.PriceCents != nil && (*l.PriceCents <= 0 || *l.PriceCents > 100_000_000):
		return invalid("price_cents", "must be between 1 and 100000000")
	case (l.PriceCents == nil) != (l.Currency == nil):
		return invalid("currency", "required with price_cents, and only with it")
	case l.Currency != nil && !currencyPattern.MatchString(*l.Currency):
		return invalid("currency", "must be an ISO 4217 code like EUR")
	}
	return nil
}

// NewProduct builds the product a line creates for an unknown SKU.
func (l ImportLine) NewProduct(now time.Time) (Product, error) {
	if err := l.Validate(); err != nil {
		return Product{}, err
	}
	if l.Name == nil || l.PriceCents == nil {
		return Product{}, invalid("sku", "new SKU needs name and price_cents")
	}
	return Product{SKU: l.SKU, Name: *l.Name, PriceCents: *l.PriceCents, Currency: *l.Currency,
		OnHand: l.Quantity, Version: 1, UpdatedAt: now}, nil
}

// Fingerprint digests what the line asks for (not its identity). A resend must carry the same content
// under the same (ImportID, Seq); a different fingerprint means the key was reused for another line.
func (l ImportLine) Fingerprint() string {
	h := sha256.New()
	field := func(set bool, b []byte) {
		var hdr [9]byte
		if set {
			hdr[0] = 1
		}
		binary.BigEndian.PutUint64(hdr[1:], uint64(len(b)))
		h.Write(hdr[:])
		h.Write(b)
	}
	num := func(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
	field(true, []byte(l.SKU))
	field(true, num(l.Quantity))
	field(l.Name != nil, []byte(deref(l.Name)))
	field(l.PriceCents != nil, num(deref(l.PriceCents)))
	field(l.Currency != nil, []byte(deref(l.Currency)))
	return hex.EncodeToString(h.Sum(nil))
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// ImportResult is what became of one import line that was not rejected.
type ImportResult struct {
	// Skipped: an earlier stream of the same import had applied the line; nothing changed now.
	Skipped bool
	// Product is the product after the line; set when the line was applied now.
	Product Product
}

// ImportReused is the reason a line is refused when its (ImportID, Seq) was already used for a line
// with other content.
const ImportReused = "was already used in this import for a line with other content"
