-- Each live request under every key it counts under for limits: its principal's identity and
-- person, and each actor's (holder_load counts the same). At a limit, those past their end that
-- the scheduler has not marked yet are taken off the holder's counts, and Retry-After names the
-- soonest end, for the grants an agent holds as an actor, and its launcher through it, as for
-- those asked for. Rows leave when their request stops being live.
CREATE TABLE live_holders (
  holder     TEXT    NOT NULL,   -- as in holder_load
  expires_at BIGINT  NOT NULL,   -- the request's
  request_id TEXT    NOT NULL REFERENCES requests (id),
  pending    INTEGER NOT NULL,   -- 1 while it awaits approval
  PRIMARY KEY (holder, expires_at, request_id)
);
CREATE INDEX live_holders_by_request ON live_holders (request_id);
INSERT INTO live_holders (holder, expires_at, request_id, pending)
  SELECT 'identity:' || requester_iss || chr(10) || requester_sub, expires_at, id, CASE WHEN status = 'pending_approval' THEN 1 ELSE 0 END
  FROM requests WHERE status IN ('pending_approval', 'approved', 'issued')
  UNION
  SELECT person, expires_at, id, CASE WHEN status = 'pending_approval' THEN 1 ELSE 0 END
  FROM requests WHERE person IS NOT NULL AND status IN ('pending_approval', 'approved', 'issued')
  UNION
  SELECT 'identity:' || (a.value ->> 'iss') || chr(10) || (a.value ->> 'sub'), r.expires_at, r.id, CASE WHEN r.status = 'pending_approval' THEN 1 ELSE 0 END
  FROM requests r, jsonb_array_elements(r.act::jsonb) a WHERE r.act IS NOT NULL AND r.status IN ('pending_approval', 'approved', 'issued')
  UNION
  SELECT a.value ->> 'person', r.expires_at, r.id, CASE WHEN r.status = 'pending_approval' THEN 1 ELSE 0 END
  FROM requests r, jsonb_array_elements(r.act::jsonb) a
  WHERE r.act IS NOT NULL AND a.value ->> 'person' IS NOT NULL AND r.status IN ('pending_approval', 'approved', 'issued');
