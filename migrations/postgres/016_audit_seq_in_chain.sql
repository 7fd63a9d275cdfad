-- No row outside the chain (CONTRACT section 5: seq 1, 2, 3, ...): a row at seq 0 or below would
-- sit where no listing or verification reads it. Rewriting a row by INSERT ... ON CONFLICT DO
-- UPDATE is an UPDATE here, which the append-only trigger already refuses.
ALTER TABLE audit_events ADD CONSTRAINT audit_events_seq_in_chain CHECK (seq > 0);
