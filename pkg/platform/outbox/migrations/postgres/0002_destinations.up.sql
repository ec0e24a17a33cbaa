-- One row per event, delivered to each of the relay's destinations (lanes) on its own: bit n of done
-- is set once lane n has the event, bit n of parked while lane n refuses it (outbox_failures says why).
-- sent_at is set when every lane of the relay is done; rows sent before this migration count as done.
ALTER TABLE outbox ADD COLUMN done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;
UPDATE outbox SET done = 255 WHERE sent_at IS NOT NULL;
DROP INDEX outbox_pending;
DROP INDEX outbox_pending_key;
-- Each lane claims its pending rows in seq order from its own index, so a lane far behind (its broker
-- down) costs the other lanes nothing. Lanes 2 and 3 work without an index of their own.
CREATE INDEX outbox_lane0 ON outbox (seq) WHERE sent_at IS NULL AND ((done | parked) & 1) = 0;
CREATE INDEX outbox_lane1 ON outbox (seq) WHERE sent_at IS NULL AND ((done | parked) & 2) = 0;
-- "Has this key an earlier parked row?" — parked rows are few.
CREATE INDEX outbox_parked ON outbox (msg_key, seq) WHERE parked <> 0;
CREATE TABLE outbox_failures (
    seq         BIGINT      NOT NULL,
    lane        INTEGER     NOT NULL,
    destination TEXT        NOT NULL,
    attempts    INTEGER     NOT NULL,
    last_error  TEXT        NOT NULL,
    failed_at   TIMESTAMPTZ NOT NULL,
    parked_at   TIMESTAMPTZ,
    PRIMARY KEY (seq, lane)
);
