-- What we hold, per account and contract, as IBKR last reported it: "what do we hold" is one query.
CREATE TABLE positions (
    account       text NOT NULL,
    con_id        bigint NOT NULL,
    instrument_id text NULL,
    quantity      numeric NOT NULL,
    avg_cost      numeric NOT NULL,
    currency      text NOT NULL DEFAULT '',
    as_of         timestamptz NOT NULL,
    PRIMARY KEY (account, con_id)
);
