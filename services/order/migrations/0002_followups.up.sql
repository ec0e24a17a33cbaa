-- Work the saga leaves behind a terminal order, retried by the recovery worker with a per-row backoff
-- (attempts, next attempt, last error) so that failing rows never starve the others.
--
-- Compensation: a cancelled order whose stock release / payment void is not known to be done
-- (compensation_pending, from 0001). comp_next_at is when the worker may try (or, while a worker holds
-- the row, when its claim ends).
ALTER TABLE orders ADD COLUMN comp_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN comp_next_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN comp_error TEXT NOT NULL DEFAULT '';
DROP INDEX orders_compensation;
CREATE INDEX orders_compensation_due ON orders (comp_next_at) WHERE compensation_pending;

-- Settlement: a confirmed order whose stock commit and payment capture are not known to be done.
-- Inventory and payment do both when they consume OrderConfirmed; the worker calls CommitStock and
-- CapturePayment (idempotent per order) once settle_next_at has come, so a lost or dead-lettered event
-- cannot leave money uncaptured and stock held. settled_at records when it was done.
ALTER TABLE orders ADD COLUMN settle_pending BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE orders ADD COLUMN settle_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN settle_next_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN settle_error TEXT NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN settled_at BIGINT;
-- Orders confirmed before this migration are not known to be settled either: they are settled once,
-- in bounded batches, from the first pass on.
UPDATE orders SET settle_pending = TRUE WHERE status = 'CONFIRMED';
CREATE INDEX orders_settlement_due ON orders (settle_next_at) WHERE settle_pending;
