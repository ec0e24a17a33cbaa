-- Written once for SQLite and PostgreSQL. Times are Unix microseconds (BIGINT) so that both drivers
-- round-trip them exactly.
CREATE TABLE orders (
    id                   TEXT    PRIMARY KEY,
    customer_id          TEXT    NOT NULL,
    -- NULL when the client sent no key: NULLs never collide in the unique constraint below.
    idempotency_key      TEXT,
    status               TEXT    NOT NULL,
    cancel_reason        TEXT    NOT NULL DEFAULT '',
    cancel_detail        TEXT    NOT NULL DEFAULT '',
    total_cents          BIGINT  NOT NULL DEFAULT 0,
    currency             TEXT    NOT NULL DEFAULT '',
    version              BIGINT  NOT NULL,
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL,
    -- PENDING orders belong to the instance driving them until lease_until; recovery claims them after.
    lease_until          BIGINT  NOT NULL,
    -- A cancelled order whose stock release / payment void is not known to be done.
    compensation_pending BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (customer_id, idempotency_key)
);
CREATE INDEX orders_status_lease ON orders (status, lease_until);
CREATE INDEX orders_compensation ON orders (compensation_pending, updated_at);

CREATE TABLE order_lines (
    order_id         TEXT    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          INTEGER NOT NULL,
    sku              TEXT    NOT NULL,
    quantity         INTEGER NOT NULL,
    unit_price_cents BIGINT  NOT NULL DEFAULT 0,
    line_total_cents BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, line_no)
);
