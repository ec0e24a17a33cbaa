// Package migrations embeds the order service's schema (SQLite and PostgreSQL alike).
package migrations

import "embed"

// FS holds the NNNN_name.up.sql / .down.sql files.
//
//go:embed *.sql
var FS embed.FS
