-- Which worker wrote an outbox record. Each order-consumer replica publishes only its own records, so the
-- statuses of one order (all written by the replica that owns it) keep their order on the topic.
ALTER TABLE outbox ADD COLUMN writer text NULL;
CREATE INDEX outbox_unpublished_writer_idx ON outbox (writer, id) WHERE published_at IS NULL;
