-- The audit log (CONTRACT section 5): append-only and hash-chained, one chain however many
-- broker replicas append to it.
-- hash = hex(sha256(prev_hash || canonical JSON of {seq, at, type, actor, request_id, data})).
CREATE TABLE audit_events (
  seq        BIGINT PRIMARY KEY,   -- 1, 2, 3, ... assigned under the chain lock, no gaps
  at         TEXT   NOT NULL,      -- ISO 8601 UTC, exactly as hashed
  type       TEXT   NOT NULL,
  actor_iss  TEXT,                 -- both NULL when the broker itself acted
  actor_sub  TEXT,
  request_id TEXT,
  data       TEXT   NOT NULL,      -- canonical JSON object, as hashed (text, not jsonb, which reorders)
  prev_hash  TEXT   NOT NULL,
  hash       TEXT   NOT NULL
);

-- The store itself refuses to rewrite history; an edit behind its back still breaks the chain.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_events is append-only';
END $$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- Appends events to the chain in one statement: takes the chain's lock (held to commit, so
-- appends from every replica form one line), reads the head, and hashes each event. The broker
-- sends each event's canonical JSON in two parts around its seq, which only this function knows.
CREATE FUNCTION append_audit_events(events jsonb) RETURNS TABLE (seq BIGINT, prev_hash TEXT, hash TEXT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  head_seq  BIGINT;
  head_hash TEXT;
  event     jsonb;
  next_hash TEXT;
BEGIN
  PERFORM pg_advisory_xact_lock(7596286014052352340);   -- the chain's lock: one appender at a time
  SELECT a.seq, a.hash INTO head_seq, head_hash FROM audit_events a ORDER BY a.seq DESC LIMIT 1;
  head_seq := coalesce(head_seq, 0);
  head_hash := coalesce(head_hash, repeat('0', 64));
  FOR event IN SELECT value FROM jsonb_array_elements(events) LOOP
    head_seq := head_seq + 1;
    next_hash := encode(sha256(convert_to(head_hash || (event->>'before') || head_seq::text || (event->>'after'), 'UTF8')), 'hex');
    INSERT INTO audit_events (seq, at, type, actor_iss, actor_sub, request_id, data, prev_hash, hash)
    VALUES (head_seq, event->>'at', event->>'type', event->>'actor_iss', event->>'actor_sub', event->>'request_id',
            event->>'data', head_hash, next_hash);
    seq := head_seq;
    prev_hash := head_hash;
    hash := next_hash;
    RETURN NEXT;
    head_hash := next_hash;
  END LOOP;
END $$;

CREATE INDEX audit_events_by_type ON audit_events (type, seq);
CREATE INDEX audit_events_by_request ON audit_events (request_id, seq) WHERE request_id IS NOT NULL;
CREATE INDEX audit_events_by_time ON audit_events (at);
