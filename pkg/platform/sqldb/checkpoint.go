package sqldb

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// SQLite in WAL mode copies the log back into the database file (a checkpoint: two fsyncs and a write
// of every changed page) inside the COMMIT that takes the log past wal_autocheckpoint pages (1000 by
// default). A service has one connection, so that commit and every statement queued behind it wait for
// the disk: on a busy machine an fsync alone takes up to tens of milliseconds, paid by whichever
// request happens to commit then (a load at half the maximum rate saw p50 22 ms, p99 81 ms). SQLite's
// own advice (https://sqlite.org/wal.html#automatic_checkpoint) is to checkpoint from another thread:
// a checkpointer here has its own connection and runs PASSIVE checkpoints, which take no lock the
// serving connection waits for, so commits never do the copy. The serving connection keeps an
// automatic checkpoint as a safety net (walSafetyPages): passive checkpoints never restart the log
// while writes keep arriving, so under steady load the log grows until that net checkpoints the last
// few frames and the next write starts the log over.

// defaultCheckpointInterval is how often the checkpointer looks at the log by default. A checkpoint
// with nothing new to copy costs a read of the shared-memory index and no I/O.
const defaultCheckpointInterval = 250 * time.Millisecond

// walSafetyPages is the serving connection's wal_autocheckpoint when a checkpointer runs (about 40 MB
// of log at 4 KiB pages). SQLite's default, 1000, applies when none runs.
const walSafetyPages = 10000

// checkpointTimeout bounds one checkpoint (a PASSIVE one never waits for locks; this bounds the I/O).
const checkpointTimeout = 30 * time.Second

// checkpointer runs PASSIVE checkpoints of one SQLite file on its own connection until closed.
type checkpointer struct {
	db   *sql.DB
	stop chan struct{}
	done chan struct{}
}

// startCheckpointer opens name (an SQLite driver name, as sqliteName builds it) once more and
// checkpoints it every interval.
func startCheckpointer(ctx context.Context, name string, every time.Duration) (*checkpointer, error) {
	db, err := sql.Open("sqlite", name)
	if err != nil {
		return nil, fmt.Errorf("open sqlite checkpointer: %w", err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("ping sqlite checkpointer: %w", err)
	}
	c := &checkpointer{db: db, stop: make(chan struct{}), done: make(chan struct{})}
	go c.run(every)
	return c, nil
}

func (c *checkpointer) run(every time.Duration) {
	defer close(c.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		// A failure (the disk, a full file system) leaves the copy to the serving connection's
		// automatic checkpoint at walSafetyPages, which reports it to the statement that runs it.
		_ = c.checkpoint()
	}
}

func (c *checkpointer) checkpoint() error {
	ctx, cancel := context.WithTimeout(context.Background(), checkpointTimeout)
	defer cancel()
	var busy, logFrames, copied int
	return c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logFrames, &copied)
}

// Close stops the checkpoints and closes the connection. When it is the file's last connection,
// SQLite checkpoints the rest of the log and removes it.
func (c *checkpointer) Close() error {
	close(c.stop)
	<-c.done
	return c.db.Close()
}
