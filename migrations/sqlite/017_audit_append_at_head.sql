-- The chain grows only at its head (CONTRACT section 5: append-only, seq without gaps). The
-- update and delete triggers do not see INSERT OR REPLACE, which deletes the row it replaces
-- without firing them: a row is inserted only as the next seq, so none is rewritten that way, and
-- none sits outside the chain (at seq 0 or below, or past a gap) where no listing reads it.
CREATE TRIGGER audit_events_append_at_head BEFORE INSERT ON audit_events
WHEN NEW.seq IS NOT (SELECT coalesce(max(seq), 0) + 1 FROM audit_events)
BEGIN SELECT RAISE(ABORT, 'audit_events grows only at its head'); END;
