-- The chain grows only at its head (CONTRACT section 5: seq without gaps on every engine), as
-- SQLite's audit_events_append_at_head trigger has it: an INSERT's rows are consecutive and the
-- first follows a row already there (or is seq 1), so no row sits past a gap, where no listing
-- reads it and verification stops. Checked once per statement, on that statement's own rows and
-- one primary-key lookup: append_audit_events inserts a whole batch in one statement (013), and a
-- trigger re-reading max(seq) for each row would cost the chain's lock that much longer. Rows of
-- another transaction not yet committed are not seen: a row after them is refused, not let in.
CREATE FUNCTION audit_events_at_head() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  first_seq BIGINT;
  last_seq  BIGINT;
  n         BIGINT;
BEGIN
  SELECT min(a.seq), max(a.seq), count(*) INTO first_seq, last_seq, n FROM added a;
  IF n > 0 AND (last_seq - first_seq + 1 <> n
                OR (first_seq > 1 AND NOT EXISTS (SELECT 1 FROM audit_events a WHERE a.seq = first_seq - 1))) THEN
    RAISE EXCEPTION 'audit_events grows only at its head';
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER audit_events_append_at_head AFTER INSERT ON audit_events
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION audit_events_at_head();
