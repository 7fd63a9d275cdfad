-- An actor's own requests, newest first (GET /v1/credentials lists the delegated requests a
-- caller acts in beside those it asked for): the request's creation time beside each actor, so
-- that a page reads an index in the listing's order, however many requests the actor was in.
ALTER TABLE request_actors ADD COLUMN created_at INTEGER;
UPDATE request_actors SET created_at = (SELECT created_at FROM requests WHERE requests.id = request_actors.request_id);
CREATE INDEX request_actors_by_time ON request_actors (sub, iss, created_at, request_id);
