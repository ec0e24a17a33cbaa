CREATE TABLE inbox (
    consumer     TEXT      NOT NULL,
    event_id     TEXT      NOT NULL,
    processed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX inbox_processed_at ON inbox (processed_at);
