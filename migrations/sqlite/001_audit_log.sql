-- The audit log (CONTRACT section 5): append-only and hash-chained.
-- hash = hex(sha256(prev_hash || canonical JSON of {seq, at, type, actor, request_id, data})).
CREATE TABLE audit_events (
  seq        INTEGER PRIMARY KEY,   -- 1, 2, 3, ... assigned under the write lock, no gaps
  at         TEXT    NOT NULL,      -- ISO 8601 UTC, exactly as hashed
  type       TEXT    NOT NULL,
  actor_iss  TEXT,                  -- both NULL when the broker itself acted
  actor_sub  TEXT,
  request_id TEXT,
  data       TEXT    NOT NULL,      -- canonical JSON object
  prev_hash  TEXT    NOT NULL,
  hash       TEXT    NOT NULL
) STRICT;

-- The store itself refuses to rewrite history; an edit behind its back still breaks the chain.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
