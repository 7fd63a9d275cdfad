-- Duties: separation of duties across the lifecycle of one object, with RFC 9396
-- authorization_details naming the objects (CONTRACT sections 1, 4 and 5, revised 2026-12-07).

-- The objects a request names, as it named them: a JSON array, NULL when none.
ALTER TABLE requests ADD COLUMN authorization_details TEXT;

-- Each distinct (type, identifier) a request names, the identifier normalised as duties compare
-- it: the audit filters `type` and `identifier` read these, never the JSON.
CREATE TABLE request_objects (
  type       TEXT NOT NULL,
  object     TEXT NOT NULL,
  request_id TEXT NOT NULL REFERENCES requests (id),
  PRIMARY KEY (type, object, request_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX request_objects_by_object ON request_objects (object, request_id);

-- The chain of custody: every request that named an object for a step of a duty, in order.
CREATE TABLE duty_steps (
  duty       TEXT NOT NULL,
  object     TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  request_id TEXT NOT NULL REFERENCES requests (id),
  step       TEXT NOT NULL,
  PRIMARY KEY (duty, object, created_at, request_id)
) STRICT, WITHOUT ROWID;

-- Who took part in each step of each object: the requesting identity and its person, each actor
-- (identity and person) and each approver, by the keys records keep (identity:..., n:..., i:...).
-- Whether a participation still binds follows from its request: pending or approved and not past
-- its deadline, or issued and ended less than the duty's `within` ago. The check for a request
-- reads only its participants' rows for its objects: an index probe however many objects or
-- steps there are.
CREATE TABLE duty_participants (
  duty       TEXT NOT NULL,
  object     TEXT NOT NULL,
  holder     TEXT NOT NULL,
  step       TEXT NOT NULL,
  request_id TEXT NOT NULL REFERENCES requests (id),
  PRIMARY KEY (duty, object, holder, step, request_id)
) STRICT, WITHOUT ROWID;
