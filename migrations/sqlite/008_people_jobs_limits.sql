-- People, jobs and limits (CONTRACT sections 1, 2 and 4, revised 2026-12-01).

-- The requester's person key (its own, or the job initiator's) and the job it is bound to:
-- canonical JSON of its bindClaims values, '' when its issuer binds none.
ALTER TABLE requests ADD COLUMN person TEXT;
ALTER TABLE requests ADD COLUMN job TEXT NOT NULL DEFAULT '';
-- Approvals count distinct people.
ALTER TABLE approvals ADD COLUMN person TEXT;

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
CREATE INDEX requests_break_glass_by_identity ON requests (requester_iss, requester_sub, issued_at) WHERE break_glass = 1;
CREATE INDEX requests_break_glass_by_person ON requests (person, issued_at) WHERE break_glass = 1 AND person IS NOT NULL;

-- Replaced by the indexes above: it made every check read all of an identity's history.
DROP INDEX requests_by_requester;

-- The scopes of live requests, one row per holder (identity, person) and scope: the separation
-- check reads only the rows of the scopes that conflict with a request, however many grants a
-- caller holds. Rows leave when their request stops being live.
CREATE TABLE live_scopes (
  holder     TEXT NOT NULL,   -- 'identity:' || iss || char(10) || sub, or a person key
  scope      TEXT NOT NULL,
  request_id TEXT NOT NULL REFERENCES requests (id),
  PRIMARY KEY (holder, scope, request_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX live_scopes_by_request ON live_scopes (request_id);
INSERT INTO live_scopes (holder, scope, request_id)
  SELECT 'identity:' || r.requester_iss || char(10) || r.requester_sub, s.value, r.id
  FROM requests r, json_each(r.scopes) s
  WHERE r.status IN ('pending_approval', 'approved', 'issued');

-- Per caller and minute: credential requests (the rate limit), and refusals recorded one by one
-- or only counted (reported later in one event), so no caller grows the audit log without bound.
CREATE TABLE caller_minutes (
  holder            TEXT    NOT NULL,
  minute            INTEGER NOT NULL,   -- ms since the epoch, at the start of the minute
  requests          INTEGER NOT NULL DEFAULT 0,
  refusals_recorded INTEGER NOT NULL DEFAULT 0,
  refusals_counted  INTEGER NOT NULL DEFAULT 0,
  actor_iss         TEXT,               -- identity rows: who, for the aggregated event
  actor_sub         TEXT,
  PRIMARY KEY (holder, minute)
) STRICT;
CREATE INDEX caller_minutes_by_minute ON caller_minutes (minute);

-- Overdue flagging reads only reviews never flagged.
CREATE INDEX break_glass_reviews_unflagged ON break_glass_reviews (due_at) WHERE outcome IS NULL AND overdue_at IS NULL;

-- A key is published before it signs (signing.publishAhead); existing keys sign already.
ALTER TABLE signing_keys ADD COLUMN activates_at INTEGER;
UPDATE signing_keys SET activates_at = created_at;

-- How many live (pending, approved, issued) and pending requests each holder has: kept with
-- every insert and transition, so the limits cost one row read however many grants a caller
-- holds. A grant counts until the scheduler marks it expired (within scheduler.interval).
CREATE TABLE holder_load (
  holder  TEXT    PRIMARY KEY,
  live    INTEGER NOT NULL DEFAULT 0,
  pending INTEGER NOT NULL DEFAULT 0
) STRICT, WITHOUT ROWID;
INSERT INTO holder_load (holder, live, pending)
  SELECT 'identity:' || requester_iss || char(10) || requester_sub, count(*), sum(status = 'pending_approval')
  FROM requests WHERE status IN ('pending_approval', 'approved', 'issued')
  GROUP BY requester_iss, requester_sub;
