-- A trailing order's trail changes in place too: the modification's requested and sent trail, and the
-- order's trail as first requested (kept once a modification changed it, as the size and prices are).
ALTER TABLE order_modifications
    ADD COLUMN trailing_amount numeric NULL,
    ADD COLUMN trailing_percent numeric NULL,
    ADD COLUMN limit_offset numeric NULL,
    ADD COLUMN target_trailing_amount numeric NULL,
    ADD COLUMN target_trailing_percent numeric NULL,
    ADD COLUMN target_limit_offset numeric NULL;

ALTER TABLE orders
    ADD COLUMN requested_trailing_amount numeric NULL,
    ADD COLUMN requested_trailing_percent numeric NULL,
    ADD COLUMN requested_limit_offset numeric NULL;
