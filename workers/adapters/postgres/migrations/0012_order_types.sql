-- The terms OrderRequested has since version 4: trailing stops, GTD, IBKR's Adaptive algo, and the bracket
-- and OCA fields (recorded as sent).
ALTER TABLE orders
    ADD COLUMN trailing_amount numeric NULL,
    ADD COLUMN trailing_percent numeric NULL,
    ADD COLUMN limit_offset numeric NULL,
    ADD COLUMN good_till timestamptz NULL,
    ADD COLUMN algo text NULL,
    ADD COLUMN algo_priority text NULL,
    ADD COLUMN take_profit_price numeric NULL,
    ADD COLUMN stop_loss_price numeric NULL,
    ADD COLUMN oca_group text NULL;

-- The new order types and GTD. Each new constraint admits every row the old one did; adding it checks the
-- rows of orders once, within this migration's transaction.
ALTER TABLE orders DROP CONSTRAINT orders_order_type_known;
ALTER TABLE orders ADD CONSTRAINT orders_order_type_known CHECK (order_type IN (
    'MARKET', 'LIMIT', 'STOP', 'STOP_LIMIT', 'TRAILING_STOP', 'TRAILING_STOP_LIMIT', 'MARKET_ON_CLOSE',
    'LIMIT_ON_CLOSE', 'MARKET_IF_TOUCHED', 'LIMIT_IF_TOUCHED'
));
ALTER TABLE orders DROP CONSTRAINT orders_time_in_force_known;
ALTER TABLE orders ADD CONSTRAINT orders_time_in_force_known
    CHECK (time_in_force IN ('DAY', 'GTC', 'IOC', 'FOK', 'OPG', 'GTD'));
ALTER TABLE orders ADD CONSTRAINT orders_algo_known CHECK (algo IN ('ADAPTIVE'));
ALTER TABLE orders ADD CONSTRAINT orders_algo_priority_known CHECK (algo_priority IN ('PATIENT', 'NORMAL', 'URGENT'));
