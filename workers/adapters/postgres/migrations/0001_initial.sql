-- The first schema of ibkr-workers: the instrument mapper, the order ledger, fills, cancel requests,
-- the IBKR order-id high-water marks and the outbox of status events.
--
-- Names are unqualified on purpose: the schema is whatever search_path selects (tests use one each).
-- migrate.py runs this file in one transaction; it must not contain BEGIN/COMMIT.

CREATE TABLE instruments (
    instrument_id    text PRIMARY KEY,
    con_id           bigint NOT NULL,
    symbol           text NOT NULL,
    sec_type         text NOT NULL,
    exchange         text NOT NULL,
    primary_exchange text NOT NULL DEFAULT '',
    currency         text NOT NULL,
    local_symbol     text NOT NULL DEFAULT '',
    trading_class    text NOT NULL DEFAULT '',
    multiplier       numeric NULL,
    min_tick         numeric NOT NULL,
    -- As IBKR reports it (YYYYMMDD, sometimes with a time and zone), so no information is lost.
    last_trade_date  text NULL,
    long_name        text NOT NULL DEFAULT '',
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT instruments_con_id_key UNIQUE (con_id),
    CONSTRAINT instruments_con_id_positive CHECK (con_id > 0),
    CONSTRAINT instruments_instrument_id_not_blank CHECK (btrim(instrument_id) <> ''),
    CONSTRAINT instruments_sec_type_known CHECK (
        sec_type IN ('STK', 'FUT', 'OPT', 'FOP', 'CASH', 'IND', 'CFD', 'BOND', 'WAR', 'IOPT',
                     'CMDTY', 'CRYPTO', 'FUND', 'CONTFUT', 'BAG')
    ),
    CONSTRAINT instruments_multiplier_positive CHECK (multiplier IS NULL OR multiplier > 0),
    CONSTRAINT instruments_min_tick_positive CHECK (min_tick > 0)
);

CREATE TABLE orders (
    order_id           text PRIMARY KEY,
    account            text NOT NULL,
    -- No foreign key to instruments: an order for an unknown instrument is still recorded, then rejected.
    instrument_id      text NOT NULL,
    side               text NOT NULL,
    quantity           numeric(28, 8) NOT NULL,
    order_type         text NOT NULL,
    limit_price        numeric NULL,
    stop_price         numeric NULL,
    time_in_force      text NOT NULL DEFAULT 'DAY',
    outside_rth        boolean NOT NULL DEFAULT false,
    source             text NULL,
    created_at         timestamptz NOT NULL,
    state              text NOT NULL DEFAULT 'ACCEPTED',
    ib_client_id       integer NULL,
    ib_order_id        integer NULL,
    ib_perm_id         bigint NULL,
    con_id             bigint NULL,
    filled_quantity    numeric(28, 8) NOT NULL DEFAULT 0,
    remaining_quantity numeric(28, 8) NOT NULL,
    avg_fill_price     numeric NULL,
    reason             text NULL,
    ib_error_code      integer NULL,
    -- Where the request came from on Kafka, for operators tracing a record.
    source_topic       text NULL,
    source_partition   integer NULL,
    source_offset      bigint NULL,
    accepted_at        timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_order_id_not_blank CHECK (btrim(order_id) <> ''),
    CONSTRAINT orders_side_known CHECK (side IN ('BUY', 'SELL')),
    CONSTRAINT orders_quantity_positive CHECK (quantity > 0),
    CONSTRAINT orders_order_type_known CHECK (order_type IN ('MARKET', 'LIMIT', 'STOP', 'STOP_LIMIT')),
    CONSTRAINT orders_time_in_force_known CHECK (time_in_force IN ('DAY', 'GTC', 'IOC', 'FOK', 'OPG')),
    -- The values of workers.domain.orders.OrderState.
    CONSTRAINT orders_state_known CHECK (
        state IN ('ACCEPTED', 'PLACING', 'SUBMITTED', 'PARTIALLY_FILLED', 'FILLED',
                  'CANCEL_PENDING', 'CANCELLED', 'REJECTED')
    ),
    CONSTRAINT orders_filled_quantity_range CHECK (filled_quantity >= 0 AND filled_quantity <= quantity),
    CONSTRAINT orders_remaining_quantity_range CHECK (remaining_quantity >= 0 AND remaining_quantity <= quantity),
    -- An IBKR order id means nothing without the client id that allocated it.
    CONSTRAINT orders_ib_ids_together CHECK ((ib_client_id IS NULL) = (ib_order_id IS NULL)),
    CONSTRAINT orders_ib_order_id_key UNIQUE (ib_client_id, ib_order_id)
);

CREATE INDEX orders_open_idx ON orders (accepted_at)
    WHERE state NOT IN ('FILLED', 'CANCELLED', 'REJECTED');
CREATE INDEX orders_ib_perm_id_idx ON orders (ib_perm_id) WHERE ib_perm_id IS NOT NULL;

CREATE TABLE fills (
    fill_id             text PRIMARY KEY,
    order_id            text NOT NULL REFERENCES orders (order_id),
    con_id              bigint NOT NULL,
    side                text NOT NULL,
    quantity            numeric(28, 8) NOT NULL,
    price               numeric NOT NULL,
    currency            text NOT NULL,
    exchange            text NOT NULL,
    executed_at         timestamptz NOT NULL,
    commission          numeric NULL,
    commission_currency text NULL,
    ib_order_id         integer NOT NULL,
    ib_perm_id          bigint NOT NULL,
    cumulative_quantity numeric(28, 8) NOT NULL,
    avg_price           numeric NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    -- Outbox marker: NULL until Kafka has acknowledged the fills.executed record.
    published_at        timestamptz NULL,
    CONSTRAINT fills_fill_id_not_blank CHECK (btrim(fill_id) <> ''),
    CONSTRAINT fills_side_known CHECK (side IN ('BUY', 'SELL')),
    CONSTRAINT fills_quantity_positive CHECK (quantity > 0),
    CONSTRAINT fills_cumulative_quantity_positive CHECK (cumulative_quantity > 0)
);

CREATE INDEX fills_order_id_idx ON fills (order_id);
CREATE INDEX fills_unpublished_idx ON fills (recorded_at) WHERE published_at IS NULL;

-- A cancel may arrive before its order, so there is no foreign key to orders.
CREATE TABLE cancel_requests (
    order_id     text PRIMARY KEY,
    account      text NOT NULL,
    requested_at timestamptz NOT NULL,
    reason       text NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    -- Set once the order-consumer has acted on the request.
    handled_at   timestamptz NULL
);

-- The highest IBKR order id ever handed out per API client id: ids are never reused, even when
-- nextValidId reports a lower number after a reconnect.
CREATE TABLE ib_order_ids (
    client_id     integer PRIMARY KEY,
    last_order_id integer NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ib_order_ids_last_order_id_non_negative CHECK (last_order_id >= 0)
);

-- Encoded Kafka records written in the same transaction as the change they announce.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    key          text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz NULL
);

CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
