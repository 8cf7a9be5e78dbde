-- A record Kafka refused for itself (too large, say) is set aside so the records behind it go out: the
-- relay is done with it (published_at set) and publish_error says why it never reached its topic.
ALTER TABLE outbox ADD COLUMN publish_error text NULL;
