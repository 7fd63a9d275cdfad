-- Credential requests and the decisions on them. A request is the unit of a grant: it is
-- pending, approved, issued (its one token minted), then expired or revoked; or denied.
CREATE TABLE requests (
  id                 TEXT    PRIMARY KEY,
  requester_iss      TEXT    NOT NULL,
  requester_sub      TEXT    NOT NULL,
  requester_idp      TEXT    NOT NULL,    -- configured issuer name
  initiator          TEXT,                -- workload's initiatorClaim: the person who started the job
  task_id            TEXT    NOT NULL,
  scopes             TEXT    NOT NULL,    -- JSON array, in the order requested
  audience           TEXT    NOT NULL,
  ttl_seconds        INTEGER NOT NULL,    -- effective, after clamping
  justification      TEXT,
  break_glass        INTEGER NOT NULL CHECK (break_glass IN (0, 1)),
  policy_ids         TEXT    NOT NULL,    -- JSON array of the policies that granted the scopes
  digest             TEXT    NOT NULL,    -- what approvers sign off on
  approvals_required INTEGER NOT NULL,
  status             TEXT    NOT NULL CHECK (status IN
                       ('pending_approval', 'approved', 'issued', 'denied', 'expired', 'revoked')),
  created_at         INTEGER NOT NULL,    -- times in ms since the epoch
  expires_at         INTEGER NOT NULL,    -- deadline of the current status: approval, collection, token exp
  decided_at         INTEGER,
  issued_at          INTEGER,
  ended_at           INTEGER,             -- when it became denied, expired or revoked
  revoke_reason      TEXT,
  revoked_by_iss     TEXT,
  revoked_by_sub     TEXT
) STRICT;

-- An identity's live grants: separation-of-duties checks and the break-glass quota.
CREATE INDEX requests_by_requester ON requests (requester_iss, requester_sub, status);
-- The scheduler's sweeps: live statuses by deadline.
CREATE INDEX requests_by_deadline ON requests (status, expires_at);

CREATE TABLE approvals (
  request_id   TEXT    NOT NULL REFERENCES requests (id),
  approver_iss TEXT    NOT NULL,
  approver_sub TEXT    NOT NULL,
  decision     TEXT    NOT NULL CHECK (decision IN ('approve', 'deny')),
  reason       TEXT    NOT NULL,
  digest       TEXT    NOT NULL,          -- the digest the approver saw
  at           INTEGER NOT NULL,
  PRIMARY KEY (request_id, approver_iss, approver_sub)   -- one decision per approver
) STRICT;
