// Package migrations embeds the inventory schema, the same SQL for SQLite and PostgreSQL. The service
// command applies it after the platform's outbox and inbox schemas (migrate.UpAll).
package migrations

import "embed"

// FS holds NNNN_name.up.sql / .down.sql at its root.
//
//go:embed *.sql
var FS embed.FS
