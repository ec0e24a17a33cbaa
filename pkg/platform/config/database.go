package config

import (
	"errors"
	"fmt"

	"github.com/shopmesh/shopmesh/pkg/platform/sqldb"
)

// Database is the setting of a service that owns a database; a service config embeds it
// (<P>_DSN), and the service command migrates and opens it.
type Database struct {
	DSN string `help:"database: postgres://user:pass@host:5432/db?sslmode=... or sqlite:<file> (make run)"`
}

// DatabaseDSN returns the data source name.
func (d Database) DatabaseDSN() string { return d.DSN }

// Validate reports a DSN the service could not open: empty, or of a scheme sqldb does not know. It
// never quotes the DSN, which may hold a password.
func (d Database) Validate() error {
	if d.DSN == "" {
		return errors.New("dsn: must be set (postgres://... or sqlite:<file>)")
	}
	if _, err := sqldb.ParseDialect(d.DSN); err != nil {
		return fmt.Errorf("dsn: %w", err)
	}
	return nil
}
