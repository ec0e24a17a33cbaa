-- See the PostgreSQL migration: per-lane progress (done) and parking (parked) bits, one index per lane.
ALTER TABLE outbox ADD COLUMN done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET done = 255 WHERE sent_at IS NOT NULL;
DROP INDEX outbox_pending;
CREATE INDEX outbox_lane0 ON outbox (seq) WHERE sent_at IS NULL AND ((done | parked) & 1) = 0;
CREATE INDEX outbox_lane1 ON outbox (seq) WHERE sent_at IS NULL AND ((done | parked) & 2) = 0;
CREATE INDEX outbox_parked ON outbox (msg_key, seq) WHERE parked <> 0;
CREATE TABLE outbox_failures (
    seq         INTEGER   NOT NULL,
    lane        INTEGER   NOT NULL,
    destination TEXT      NOT NULL,
    attempts    INTEGER   NOT NULL,
    last_error  TEXT      NOT NULL,
    failed_at   TIMESTAMP NOT NULL,
    parked_at   TIMESTAMP,
    PRIMARY KEY (seq, lane)
);
