CREATE TABLE outbox (
    seq        INTEGER   PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT      NOT NULL UNIQUE,
    topic      TEXT      NOT NULL,
    msg_key    TEXT      NOT NULL,
    payload    BLOB      NOT NULL,
    headers    TEXT      NOT NULL,
    created_at TIMESTAMP NOT NULL,
    sent_at    TIMESTAMP
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
