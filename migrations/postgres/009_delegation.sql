-- Agents acting for a principal (RFC 8693 delegation) and child tokens (CONTRACT section 1,
-- "Agents", revised 2026-12-07).

-- The actor chain of a delegated request, current actor first: each actor's identity, issuer
-- name, recorded person key, job and the claims its token was judged on (JSON, NULL when not
-- delegated); the rule that allowed it.
ALTER TABLE requests ADD COLUMN act TEXT;
ALTER TABLE requests ADD COLUMN delegation_rule TEXT;
-- A child token's parent request, and the root of its line (a root is its own root): revoking a
-- grant revokes every descendant in the same transaction.
ALTER TABLE requests ADD COLUMN parent_id TEXT REFERENCES requests (id);
ALTER TABLE requests ADD COLUMN root_id TEXT;
-- The subject's claims as verified for a root grant (iss, sub and exp-like times aside): a child's
-- subject is judged on them, under the running configuration, however much later.
ALTER TABLE requests ADD COLUMN subject_claims TEXT;
CREATE INDEX requests_by_parent ON requests (parent_id) WHERE parent_id IS NOT NULL;

-- Each actor of a delegated request, for the audit filter `actor` (its sub) and for an actor's
-- view of the requests it acted in.
CREATE TABLE request_actors (
  sub        TEXT NOT NULL,
  iss        TEXT NOT NULL,
  request_id TEXT NOT NULL REFERENCES requests (id),
  PRIMARY KEY (sub, iss, request_id)
);
