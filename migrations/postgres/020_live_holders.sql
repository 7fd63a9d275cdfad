-- Each live delegated request under every key it counts under for limits through its actors only:
-- each actor's identity, and the person who launched one (holder_load counts the same), less the
-- principal's keys. At a limit, those past their end that the scheduler has not marked yet are
-- taken off the holder's counts, and Retry-After names the soonest end, for the grants an agent
-- holds as an actor, and its launcher through it, as the requests' own rows do for those asked
-- for. A request without actors writes nothing here. Rows leave when their request stops being live.
CREATE TABLE live_holders (
  holder     TEXT    NOT NULL,   -- as in holder_load
  expires_at BIGINT  NOT NULL,   -- the request's
  request_id TEXT    NOT NULL REFERENCES requests (id),
  pending    INTEGER NOT NULL,   -- 1 while it awaits approval
  PRIMARY KEY (holder, expires_at, request_id)
);
CREATE INDEX live_holders_by_request ON live_holders (request_id);
INSERT INTO live_holders (holder, expires_at, request_id, pending)
  SELECT holder, expires_at, id, pending FROM (
    SELECT 'identity:' || (a.value ->> 'iss') || chr(10) || (a.value ->> 'sub') AS holder, r.expires_at, r.id,
           CASE WHEN r.status = 'pending_approval' THEN 1 ELSE 0 END AS pending, r.requester_iss, r.requester_sub, r.person
    FROM requests r, jsonb_array_elements(r.act::jsonb) a WHERE r.act IS NOT NULL AND r.status IN ('pending_approval', 'approved', 'issued')
    UNION
    SELECT a.value ->> 'person', r.expires_at, r.id, CASE WHEN r.status = 'pending_approval' THEN 1 ELSE 0 END, r.requester_iss, r.requester_sub, r.person
    FROM requests r, jsonb_array_elements(r.act::jsonb) a
    WHERE r.act IS NOT NULL AND a.value ->> 'person' IS NOT NULL AND r.status IN ('pending_approval', 'approved', 'issued')
  ) acting
  WHERE holder <> 'identity:' || requester_iss || chr(10) || requester_sub AND holder IS DISTINCT FROM person;
