CREATE TABLE outbox (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   TEXT        NOT NULL UNIQUE,
    topic      TEXT        NOT NULL,
    msg_key    TEXT        NOT NULL,
    payload    BYTEA       NOT NULL,
    headers    JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at    TIMESTAMPTZ
);
-- The relay's claim walks pending rows in order; the key index answers "is an earlier row of this
-- aggregate still pending?".
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX outbox_pending_key ON outbox (msg_key, seq) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
