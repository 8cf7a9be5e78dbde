-- When an order is no longer wanted (OrderRequested.expires_at, since version 3): checked again before an
-- order that waited is placed.
ALTER TABLE orders ADD COLUMN expires_at timestamptz NULL;
