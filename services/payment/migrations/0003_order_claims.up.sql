-- One row per order that has an authorization or a tombstone, written in the same statement or
-- transaction as either. On PostgreSQL an authorize is one autocommit statement that cannot see a
-- tombstone committed after it started; both writers insert the order's claim first, so the unique key
-- makes the later one wait for the earlier and then find the order taken (it writes nothing and reads
-- again). Written once for SQLite and PostgreSQL.
CREATE TABLE order_claims (
    order_id   TEXT      PRIMARY KEY,
    created_at TIMESTAMP NOT NULL
);
INSERT INTO order_claims (order_id, created_at) SELECT order_id, created_at FROM authorizations;
INSERT INTO order_claims (order_id, created_at)
    SELECT order_id, created_at FROM void_tombstones
    WHERE order_id NOT IN (SELECT order_id FROM authorizations);
