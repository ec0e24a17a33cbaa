package config

// Database is the setting of a service that owns a database; a service config embeds it
// (<P>_DSN), and the service command migrates and opens it.
type Database struct {
	DSN string `help:"database: postgres://user:pass@host:5432/db?sslmode=... or sqlite:<file> (make run)"`
}

// DatabaseDSN returns the data source name.
func (d Database) DatabaseDSN() string { return d.DSN }
