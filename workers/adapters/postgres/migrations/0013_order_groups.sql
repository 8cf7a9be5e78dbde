-- A bracket's children name their parent (orders.parent_order_id): recorded with it in one statement,
-- placed with it as one group, cancelled with it while none of them was placed.
ALTER TABLE orders ADD COLUMN parent_order_id text NULL;
CREATE INDEX orders_parent_order_id ON orders (parent_order_id) WHERE parent_order_id IS NOT NULL;
