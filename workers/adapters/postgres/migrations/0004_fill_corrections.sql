-- IBKR corrects an execution by sending it again with the last part of the execId bumped (.01 -> .02).
-- The correction is a fill of its own that names the fill it replaces, so consumers replace rather than add.
ALTER TABLE fills ADD COLUMN corrects_fill_id text NULL REFERENCES fills (fill_id);
