-- The deployment's trading state: one row every replica reads (ACTIVE until someone changes it), and the
-- history of every change and every global cancel: who, when and why.
CREATE TABLE trading_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    state      text NOT NULL CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED')),
    reason     text NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    version    bigint NOT NULL DEFAULT 0
);
INSERT INTO trading_state (state, reason, changed_by) VALUES ('ACTIVE', 'initial state', 'migrate');

CREATE TABLE trading_state_changes (
    id                bigserial PRIMARY KEY,
    action            text NOT NULL CHECK (action IN ('SET', 'GLOBAL_CANCEL')),
    state             text NOT NULL CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED')),
    previous          text NULL,
    reason            text NOT NULL,
    changed_by        text NOT NULL,
    changed_at        timestamptz NOT NULL DEFAULT now(),
    cancels_requested integer NULL
);
