-- Every import line inventory has seen, by its client-chosen identity, written in the transaction that
-- applies it (with the product change and its outbox event): a resent or retried import applies each
-- line once, whichever instance receives it. One file for both dialects.
CREATE TABLE import_lines (
    import_id     TEXT      NOT NULL,
    seq           BIGINT    NOT NULL CHECK (seq >= 1),
    sku           TEXT      NOT NULL,
    quantity      BIGINT    NOT NULL,
    -- Digest of the line's content: a resend must repeat it; another line under the same key is refused.
    fingerprint   TEXT      NOT NULL,
    -- REJECTED: refused for the stock state at the time (a new SKU without name and price); a resend
    -- gets the same answer instead of a different one.
    outcome       TEXT      NOT NULL CHECK (outcome IN ('APPLIED', 'REJECTED')),
    reject_field  TEXT      NOT NULL DEFAULT '',
    reject_reason TEXT      NOT NULL DEFAULT '',
    created_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (import_id, seq)
);
