-- Hardening of 2026-12-07: requests per holder over any 60 seconds, and person keys kept as named.

-- requestsPerMinute holds over any 60 seconds, not per clock minute: each holder (an identity, or
-- a person under one of its recorded keys) keeps its last minute of requests, one count per
-- second, in one row: judging and counting a request reads and writes one row per key.
CREATE TABLE caller_rates (
  holder TEXT    PRIMARY KEY,
  second INTEGER NOT NULL,   -- the newest second counted, in seconds since the epoch
  counts TEXT    NOT NULL    -- requests per second, newest first, comma-separated
) STRICT, WITHOUT ROWID;
CREATE INDEX caller_rates_by_second ON caller_rates (second);

-- caller_minutes now counts refusals only (recorded one by one, or counted into one event).
ALTER TABLE caller_minutes DROP COLUMN requests;

-- requests.person, approvals.person, and the person rows of live_scopes and holder_load now hold
-- the key a person was recorded under as their token named them ('n:<issuer>:<name>'), resolved
-- to a person through the running configuration's aliases whenever it is compared. Keys written
-- before ('u:<name>') are people already, and count as such.
