// Package migrations embeds the payment schema, applied at start by migrate.Up and by the `migrate`
// subcommand. The SQL runs unchanged on SQLite and PostgreSQL.
package migrations

import "embed"

// FS holds the NNNN_name.up.sql / .down.sql files.
//
//go:embed *.sql
var FS embed.FS
