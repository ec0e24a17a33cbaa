-- Written once for SQLite and PostgreSQL: only types and syntax both accept.
CREATE TABLE accounts (
    customer_id   TEXT      PRIMARY KEY,
    balance_cents BIGINT    NOT NULL CHECK (balance_cents >= 0),
    -- Funds held by open authorizations; never more than the balance, so available never goes negative.
    held_cents    BIGINT    NOT NULL DEFAULT 0 CHECK (held_cents >= 0 AND held_cents <= balance_cents),
    currency      TEXT      NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);

-- One authorization per order; declines are stored too, so a retried request gets the same answer.
CREATE TABLE authorizations (
    order_id       TEXT      PRIMARY KEY,
    customer_id    TEXT      NOT NULL,
    amount_cents   BIGINT    NOT NULL CHECK (amount_cents > 0),
    currency       TEXT      NOT NULL,
    status         TEXT      NOT NULL CHECK (status IN ('AUTHORIZED', 'DECLINED', 'CAPTURED', 'VOIDED')),
    decline_reason TEXT      NOT NULL DEFAULT '',
    version        BIGINT    NOT NULL CHECK (version >= 1),
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL
);
CREATE INDEX authorizations_customer_status ON authorizations (customer_id, status);

-- Every movement of money, at most one of each kind per order: the primary key makes a second debit
-- (or hold, or release) of one order impossible, whatever the code above it does.
CREATE TABLE ledger_entries (
    order_id     TEXT      NOT NULL,
    kind         TEXT      NOT NULL CHECK (kind IN ('HOLD', 'RELEASE', 'DEBIT')),
    customer_id  TEXT      NOT NULL,
    amount_cents BIGINT    NOT NULL CHECK (amount_cents > 0),
    created_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (order_id, kind)
);
CREATE INDEX ledger_entries_customer ON ledger_entries (customer_id);
