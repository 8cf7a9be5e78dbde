-- Modifications of working orders (orders.modify-requested). Each is recorded before placeOrder carries it
-- to IBKR; modify_id is the idempotency key. The orders row holds the terms the order works with; the terms
-- it was first requested with are kept in requested_* once a modification changed them.
ALTER TABLE orders
    ADD COLUMN requested_quantity numeric NULL,
    ADD COLUMN requested_limit_price numeric NULL,
    ADD COLUMN requested_stop_price numeric NULL,
    ADD COLUMN requested_time_in_force text NULL;

CREATE TABLE order_modifications (
    modify_id text PRIMARY KEY,
    seq bigserial NOT NULL,
    order_id text NOT NULL,
    account text NOT NULL,
    quantity numeric NULL,
    limit_price numeric NULL,
    stop_price numeric NULL,
    time_in_force text NULL,
    requested_at timestamptz NOT NULL,
    source text NULL,
    state text NOT NULL CHECK (state IN ('REQUESTED', 'SENT', 'APPLIED', 'REFUSED')),
    -- the terms the modification was sent with (set when SENT or APPLIED)
    target_quantity numeric NULL,
    target_limit_price numeric NULL,
    target_stop_price numeric NULL,
    target_time_in_force text NULL,
    attempts integer NOT NULL DEFAULT 0,
    reason text NULL,
    ib_error_code integer NULL,
    source_topic text NULL,
    source_partition integer NULL,
    source_offset bigint NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz NULL,
    settled_at timestamptz NULL
);

-- The modifications still to settle, of one order, in the order they came.
CREATE INDEX order_modifications_unsettled ON order_modifications (order_id, seq)
    WHERE state IN ('REQUESTED', 'SENT');
