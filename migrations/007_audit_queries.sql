-- What auditors filter on, indexed so a filtered page over a million issuances stays fast
-- (scripts/bench-audit.ts measures it).

-- Issuances in time order: the default listing, time ranges and keyset pages.
CREATE INDEX issuances_by_time ON issuances (issued_at, jti);

-- "Who held what": by subject, by scope, break-glass only.
CREATE INDEX requests_by_subject ON requests (requester_sub);
CREATE INDEX requests_break_glass ON requests (id) WHERE break_glass = 1;

-- One row per (request, scope): the scope filter without parsing JSON per row.
CREATE TABLE request_scopes (
  request_id TEXT NOT NULL REFERENCES requests (id),
  scope      TEXT NOT NULL,
  PRIMARY KEY (scope, request_id)
) STRICT, WITHOUT ROWID;
INSERT INTO request_scopes (request_id, scope)
  SELECT r.id, s.value FROM requests r, json_each(r.scopes) s;

-- The event log by type, by request, by time.
CREATE INDEX audit_events_by_type ON audit_events (type, seq);
CREATE INDEX audit_events_by_request ON audit_events (request_id, seq) WHERE request_id IS NOT NULL;
CREATE INDEX audit_events_by_time ON audit_events (at);
