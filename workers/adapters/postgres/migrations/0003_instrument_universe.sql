-- The instrument-sync universe (what `ibkr-workers instruments load FILE` writes) and the bookkeeping that
-- makes a sync pass resumable after a crash.

CREATE TABLE instrument_universe (
    -- An instrument id, or the prefix of a family (FUT:ES, OPT:SPY:20261218) whose members get ids under it.
    instrument_id    text PRIMARY KEY,
    kind             text NOT NULL,
    -- The entry as workers.domain.universe.entry_to_dict writes it.
    spec             jsonb NOT NULL,
    -- Fingerprint of the entry; changes exactly when the operator changes the entry.
    spec_hash        text NOT NULL,
    -- Order of the entry in the file; passes go through the entries in this order.
    position         integer NOT NULL,
    loaded_at        timestamptz NOT NULL DEFAULT now(),
    -- The pass that last handled the entry (successfully or not): a resumed pass skips these.
    synced_pass      bigint NULL,
    -- spec_hash when the entry last resolved: while it is unchanged, known instruments are asked by conId.
    synced_spec_hash text NULL,
    last_synced_at   timestamptz NULL,
    -- Why the entry failed in its last pass; NULL when it succeeded.
    last_error       text NULL,
    CONSTRAINT instrument_universe_id_not_blank CHECK (btrim(instrument_id) <> ''),
    CONSTRAINT instrument_universe_kind_known CHECK (kind IN ('single', 'future_months', 'option_chain'))
);

CREATE TABLE instrument_sync_passes (
    pass_id         bigserial PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    -- NULL while the pass runs, or after it crashed: the next start resumes it.
    finished_at     timestamptz NULL,
    entries_total   integer NOT NULL DEFAULT 0,
    entries_done    integer NOT NULL DEFAULT 0,
    entries_failed  integer NOT NULL DEFAULT 0,
    created         integer NOT NULL DEFAULT 0,
    updated         integer NOT NULL DEFAULT 0,
    deactivated     integer NOT NULL DEFAULT 0,
    resumes         integer NOT NULL DEFAULT 0
);

CREATE INDEX instrument_sync_passes_open_idx ON instrument_sync_passes (pass_id) WHERE finished_at IS NULL;

-- The instrument-sync relay publishes only its own topic's records from the outbox.
CREATE INDEX outbox_unpublished_topic_idx ON outbox (topic, id) WHERE published_at IS NULL;
