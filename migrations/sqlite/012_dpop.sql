-- Sender-constrained tokens, RFC 9449 (CONTRACT sections 2 to 5, revised 2026-12-07).

-- The thumbprint (RFC 7638) of the key a request's token is bound to: given with its proof when
-- it was asked for (a request that waits is collected only with a proof by that key), NULL when
-- it is a bearer request.
ALTER TABLE requests ADD COLUMN dpop_jkt TEXT;

-- Every proof's jti, until its acceptance window ends: a proof is used once, on any replica. The
-- insert is the check (one indexed write per proof); the scheduler deletes what has expired.
CREATE TABLE dpop_proofs (
  jti        TEXT PRIMARY KEY,
  expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX dpop_proofs_by_expiry ON dpop_proofs (expires_at);
