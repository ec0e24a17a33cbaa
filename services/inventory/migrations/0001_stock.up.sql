-- One file for both dialects: plain types, UTC timestamps written by the service.
CREATE TABLE products (
    sku         TEXT      PRIMARY KEY,
    name        TEXT      NOT NULL,
    price_cents BIGINT    NOT NULL CHECK (price_cents > 0),
    currency    TEXT      NOT NULL,
    on_hand     BIGINT    NOT NULL,
    reserved    BIGINT    NOT NULL DEFAULT 0,
    version     BIGINT    NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    -- The last line of defence of the stock invariant: nothing ever goes negative or over-reserved.
    CHECK (reserved >= 0),
    CHECK (on_hand >= reserved)
);

CREATE TABLE reservations (
    order_id    TEXT      PRIMARY KEY,
    status      TEXT      NOT NULL CHECK (status IN ('HELD', 'COMMITTED', 'RELEASED')),
    currency    TEXT      NOT NULL,
    total_cents BIGINT    NOT NULL,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);

CREATE TABLE reservation_lines (
    order_id         TEXT    NOT NULL REFERENCES reservations (order_id),
    line_no          INTEGER NOT NULL,
    sku              TEXT    NOT NULL REFERENCES products (sku),
    quantity         BIGINT  NOT NULL CHECK (quantity > 0),
    unit_price_cents BIGINT  NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
