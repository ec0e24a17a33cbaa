// Package migrations embeds the payment schema, applied after the outbox and inbox schemas by
// migrate.UpAll: at start and by `payment migrate up`. The SQL runs unchanged on SQLite and PostgreSQL.
package migrations

import "embed"

// FS holds the NNNN_name.up.sql / .down.sql files.
//
//go:embed *.sql
var FS embed.FS
