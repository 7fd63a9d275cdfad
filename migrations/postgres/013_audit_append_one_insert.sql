-- The chain's append in one INSERT (issue 28). The chain's lock is held from this function to
-- commit, by whichever replica appends: every replica waits for it, so its time is the cluster's.
-- The hashes are still chained one event after another, but in a loop over values (no statement
-- per event, as before), and the batch's events then go in with one statement. Same signature,
-- same hashes: hash = hex(sha256(prev_hash || canonical JSON of {seq, at, type, actor, request_id,
-- data})), the broker sending each event's canonical JSON in two parts around its seq.
CREATE OR REPLACE FUNCTION append_audit_events(events jsonb) RETURNS TABLE (seq BIGINT, prev_hash TEXT, hash TEXT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  head_seq  BIGINT;
  head_hash TEXT;
  n         INTEGER := jsonb_array_length(events);
  prevs     TEXT[] := '{}';
  hashes    TEXT[] := '{}';
  event     jsonb;
BEGIN
  PERFORM pg_advisory_xact_lock(7596286014052352340);   -- the chain's lock: one appender at a time
  SELECT a.seq, a.hash INTO head_seq, head_hash FROM audit_events a ORDER BY a.seq DESC LIMIT 1;
  head_seq := coalesce(head_seq, 0);
  head_hash := coalesce(head_hash, repeat('0', 64));
  FOR k IN 1 .. n LOOP
    event := events -> (k - 1);
    prevs[k] := head_hash;
    head_hash := encode(sha256(convert_to(head_hash || (event->>'before') || (head_seq + k)::text || (event->>'after'), 'UTF8')), 'hex');
    hashes[k] := head_hash;
  END LOOP;
  INSERT INTO audit_events (seq, at, type, actor_iss, actor_sub, request_id, data, prev_hash, hash)
  SELECT head_seq + e.k, e.v->>'at', e.v->>'type', e.v->>'actor_iss', e.v->>'actor_sub', e.v->>'request_id', e.v->>'data', prevs[e.k], hashes[e.k]
  FROM jsonb_array_elements(events) WITH ORDINALITY AS e (v, k);
  RETURN QUERY SELECT head_seq + r.k, prevs[r.k], hashes[r.k] FROM generate_series(1, n) AS r (k);
END $$;
