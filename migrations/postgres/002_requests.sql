-- Credential requests and the decisions on them. A request is the unit of a grant: it is
-- pending, approved, issued (its one token minted), then expired or revoked; or denied.
CREATE TABLE requests (
  id                 TEXT    PRIMARY KEY,
  requester_iss      TEXT    NOT NULL,
  requester_sub      TEXT    NOT NULL,
  requester_idp      TEXT    NOT NULL,    -- configured issuer name
  initiator          TEXT,                -- workload's initiatorClaim: the person who started the job
  person             TEXT,                -- person key: its own, or the job initiator's
  job                TEXT    NOT NULL DEFAULT '',   -- canonical JSON of bindClaims values, '' when unbound
  task_id            TEXT    NOT NULL,
  scopes             TEXT    NOT NULL,    -- JSON array, in the order requested
  audience           TEXT    NOT NULL,
  ttl_seconds        INTEGER NOT NULL,    -- effective, after clamping
  justification      TEXT,
  break_glass        BOOLEAN NOT NULL,
  policy_ids         TEXT    NOT NULL,    -- JSON array of the policies that granted the scopes
  digest             TEXT    NOT NULL,    -- what approvers sign off on
  approvals_required INTEGER NOT NULL,
  status             TEXT    NOT NULL CHECK (status IN
                       ('pending_approval', 'approved', 'issued', 'denied', 'expired', 'revoked')),
  created_at         BIGINT  NOT NULL,    -- times in ms since the epoch
  expires_at         BIGINT  NOT NULL,    -- deadline of the current status: approval, collection, token exp
  decided_at         BIGINT,
  issued_at          BIGINT,
  ended_at           BIGINT,              -- when it became denied, expired or revoked
  revoke_reason      TEXT,
  revoked_by_iss     TEXT,
  revoked_by_sub     TEXT
);

-- The scheduler's sweeps: live statuses by deadline.
CREATE INDEX requests_by_deadline ON requests (status, expires_at);
-- A caller's own requests, newest first (GET /v1/credentials).
CREATE INDEX requests_by_owner ON requests (requester_iss, requester_sub, job, created_at, id);
-- Live grants per identity and per person: when a caller is at a limit, which ends first (Retry-After).
CREATE INDEX requests_live_by_identity ON requests (requester_iss, requester_sub, expires_at)
  WHERE status IN ('pending_approval', 'approved', 'issued');
CREATE INDEX requests_live_by_person ON requests (person, expires_at)
  WHERE person IS NOT NULL AND status IN ('pending_approval', 'approved', 'issued');
-- Approvers' listing walks pending requests in creation order.
CREATE INDEX requests_pending ON requests (created_at, id) WHERE status = 'pending_approval';
-- The break-glass quota, per identity and per person.
CREATE INDEX requests_break_glass_by_identity ON requests (requester_iss, requester_sub, issued_at) WHERE break_glass;
CREATE INDEX requests_break_glass_by_person ON requests (person, issued_at) WHERE break_glass AND person IS NOT NULL;
-- What auditors filter on, each in the listing's order (issued_at, id).
CREATE INDEX requests_by_issue_time ON requests (issued_at, id) WHERE issued_at IS NOT NULL;
CREATE INDEX requests_by_subject ON requests (requester_sub, issued_at, id) WHERE issued_at IS NOT NULL;
CREATE INDEX requests_by_status ON requests (status, issued_at, id) WHERE issued_at IS NOT NULL;
CREATE INDEX requests_break_glass ON requests (issued_at, id) WHERE break_glass AND issued_at IS NOT NULL;

CREATE TABLE approvals (
  request_id   TEXT    NOT NULL REFERENCES requests (id),
  approver_iss TEXT    NOT NULL,
  approver_sub TEXT    NOT NULL,
  person       TEXT,                      -- approvals count distinct people
  decision     TEXT    NOT NULL CHECK (decision IN ('approve', 'deny')),
  reason       TEXT    NOT NULL,
  digest       TEXT    NOT NULL,          -- the digest the approver saw
  at           BIGINT  NOT NULL,
  PRIMARY KEY (request_id, approver_iss, approver_sub)   -- one decision per approver
);

-- The scopes of live requests, one row per holder (identity, person) and scope: the separation
-- check reads only the rows of the scopes that conflict with a request.
CREATE TABLE live_scopes (
  holder     TEXT NOT NULL,   -- 'identity:' || iss || E'\n' || sub, or a person key
  scope      TEXT NOT NULL,
  request_id TEXT NOT NULL REFERENCES requests (id),
  PRIMARY KEY (holder, scope, request_id)
);
CREATE INDEX live_scopes_by_request ON live_scopes (request_id);

-- Per caller and minute: credential requests (the rate limit), and refusals recorded one by one
-- or only counted (reported later in one event).
CREATE TABLE caller_minutes (
  holder            TEXT    NOT NULL,
  minute            BIGINT  NOT NULL,
  requests          INTEGER NOT NULL DEFAULT 0,
  refusals_recorded INTEGER NOT NULL DEFAULT 0,
  refusals_counted  INTEGER NOT NULL DEFAULT 0,
  actor_iss         TEXT,
  actor_sub         TEXT,
  PRIMARY KEY (holder, minute)
);
CREATE INDEX caller_minutes_by_minute ON caller_minutes (minute);

-- How many live (pending, approved, issued) and pending requests each holder has: kept with
-- every insert and transition, so the limits cost one row read however many grants a caller
-- holds. A grant counts until the scheduler marks it expired (within scheduler.interval).
CREATE TABLE holder_load (
  holder  TEXT    PRIMARY KEY,
  live    INTEGER NOT NULL DEFAULT 0,
  pending INTEGER NOT NULL DEFAULT 0
);
