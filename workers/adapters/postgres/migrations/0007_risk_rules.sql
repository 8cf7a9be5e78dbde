-- IBKR's quantity step of a contract (its contract details' size increment), where IBKR gives one: an
-- order's quantity must be a whole number of it (else one share, one contract, one unit of currency).
ALTER TABLE instruments ADD COLUMN size_increment numeric NULL;
ALTER TABLE instruments ADD CONSTRAINT instruments_size_increment_positive
    CHECK (size_increment IS NULL OR size_increment > 0);

-- The working orders of an account in an instrument, read by the position rule for each batch of orders.
CREATE INDEX orders_working_idx ON orders (account, instrument_id)
    WHERE state NOT IN ('FILLED', 'CANCELLED', 'REJECTED');
