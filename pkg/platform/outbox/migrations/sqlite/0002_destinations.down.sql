DROP TABLE outbox_failures;
DROP INDEX outbox_parked;
DROP INDEX outbox_lane1;
DROP INDEX outbox_lane0;
CREATE INDEX outbox_pending ON outbox (seq) WHERE sent_at IS NULL;
ALTER TABLE outbox DROP COLUMN parked;
ALTER TABLE outbox DROP COLUMN done;
