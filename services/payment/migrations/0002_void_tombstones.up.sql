-- Orders voided while they had no authorization: the saga's compensation overtook its action (an
-- authorize that timed out on the caller's side but is still in flight, or a retried one). A later
-- authorize for such an order is refused, so it can never hold money nothing would release.
-- Written once for SQLite and PostgreSQL.
CREATE TABLE void_tombstones (
    order_id   TEXT      PRIMARY KEY,
    created_at TIMESTAMP NOT NULL
);
