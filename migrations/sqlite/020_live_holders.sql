-- Each live delegated request under every key it counts under for limits through its actors only:
-- each actor's identity, and the person who launched one (holder_load counts the same), less the
-- principal's keys. At a limit, those past their end that the scheduler has not marked yet are
-- taken off the holder's counts, and Retry-After names the soonest end, for the grants an agent
-- holds as an actor, and its launcher through it, as the requests' own rows do for those asked
-- for. A request without actors writes nothing here. Rows leave when their request stops being live.
CREATE TABLE live_holders (
  holder     TEXT    NOT NULL,   -- as in holder_load
  expires_at INTEGER NOT NULL,   -- the request's
  request_id TEXT    NOT NULL REFERENCES requests (id),
  pending    INTEGER NOT NULL,   -- 1 while it awaits approval
  PRIMARY KEY (holder, expires_at, request_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX live_holders_by_request ON live_holders (request_id);
INSERT INTO live_holders (holder, expires_at, request_id, pending)
  SELECT holder, expires_at, id, pending FROM (
    SELECT 'identity:' || json_extract(a.value, '$.iss') || char(10) || json_extract(a.value, '$.sub') AS holder, r.expires_at, r.id, r.status = 'pending_approval' AS pending,
           r.requester_iss, r.requester_sub, r.person
    FROM requests r, json_each(r.act) a WHERE r.act IS NOT NULL AND r.status IN ('pending_approval', 'approved', 'issued')
    UNION
    SELECT json_extract(a.value, '$.person'), r.expires_at, r.id, r.status = 'pending_approval', r.requester_iss, r.requester_sub, r.person
    FROM requests r, json_each(r.act) a
    WHERE r.act IS NOT NULL AND json_extract(a.value, '$.person') IS NOT NULL AND r.status IN ('pending_approval', 'approved', 'issued')
  ) acting
  WHERE holder <> 'identity:' || requester_iss || char(10) || requester_sub AND holder IS NOT coalesce(person, '');
