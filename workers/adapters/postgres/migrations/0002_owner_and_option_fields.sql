-- The worker (IBKR client id) that accepted an order owns it: only that client id may place, modify or
-- cancel it at IBKR, so only that worker reconciles it after a restart. NULL for orders never accepted
-- by a worker (e.g. rejected before any client id was involved).
ALTER TABLE orders ADD COLUMN owner_client_id integer NULL;
CREATE INDEX orders_owner_open_idx ON orders (owner_client_id, accepted_at)
    WHERE state NOT IN ('FILLED', 'CANCELLED', 'REJECTED');

-- Options are identified by conId, but strike and right belong in the mapper for people and events.
ALTER TABLE instruments ADD COLUMN strike numeric NULL;
ALTER TABLE instruments ADD COLUMN option_right text NULL
    CONSTRAINT instruments_option_right_known CHECK (option_right IS NULL OR option_right IN ('C', 'P'));
