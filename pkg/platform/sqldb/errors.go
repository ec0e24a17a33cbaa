package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
)

// Unavailable reports whether err says the database cannot serve right now, so that the same call may
// well succeed later: it could not be reached or connected to (refused, reset, the connect timing out),
// dropped the connection, is shutting down or starting up, has no connection slot left, or refused
// with a transient condition (serialization failure, deadlock, lock not available; SQLite busy or
// locked). Services answer these with UNAVAILABLE and a retry delay, never INTERNAL.
//
// A caller's cancellation is not unavailability, and neither is its deadline expiring once connected
// (that is DEADLINE_EXCEEDED); a deadline that expires while connecting is.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var connect *pgconn.ConnectError
	if errors.As(err, &connect) {
		return true
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return transientSQLState(pg.Code)
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) {
		switch lite.Code() & 0xff { // the primary result code
		case 5, 6: // SQLITE_BUSY, SQLITE_LOCKED
			return true
		}
		return false
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) ||
		pgconn.SafeToRetry(err) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	// database/sql's own, unexported: a DB closed under a call (the service is stopping).
	return strings.Contains(err.Error(), "sql: database is closed")
}

// transientSQLState tells the SQLSTATEs after which the same statement may succeed later.
func transientSQLState(code string) bool {
	switch code {
	case "40001", // serialization_failure
		"40P01", // deadlock_detected
		"55P03", // lock_not_available
		"57P01", // admin_shutdown
		"57P02", // crash_shutdown
		"57P03", // cannot_connect_now (starting up, shutting down, in recovery)
		"25006": // read_only_sql_transaction: a fail-over left us on a standby
		return true
	}
	switch {
	case strings.HasPrefix(code, "08"), // connection_exception
		strings.HasPrefix(code, "53"): // insufficient_resources: too many connections, out of memory, disk full
		return true
	}
	return false
}
