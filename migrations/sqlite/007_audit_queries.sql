-- What auditors filter on. Each index leads with its filter and continues in the listing's
-- order (issued_at, request id), so a page of a filtered listing reads about a page of index
-- entries however many rows match: no gathering and sorting of every match.
-- scripts/bench-audit.ts measures it on a million issuances.

CREATE INDEX requests_by_issue_time ON requests (issued_at, id) WHERE issued_at IS NOT NULL;
CREATE INDEX requests_by_subject ON requests (requester_sub, issued_at, id) WHERE issued_at IS NOT NULL;
CREATE INDEX requests_by_status ON requests (status, issued_at, id) WHERE issued_at IS NOT NULL;
CREATE INDEX requests_break_glass ON requests (issued_at, id) WHERE break_glass = 1 AND issued_at IS NOT NULL;

-- One row per scope of each minted token, written with the issuance: the scope filter in order.
CREATE TABLE issued_scopes (
  scope      TEXT    NOT NULL,
  issued_at  INTEGER NOT NULL,
  request_id TEXT    NOT NULL REFERENCES requests (id),
  PRIMARY KEY (scope, issued_at, request_id)
) STRICT, WITHOUT ROWID;
INSERT INTO issued_scopes (scope, issued_at, request_id)
  SELECT s.value, i.issued_at, i.request_id FROM issuances i JOIN requests r ON r.id = i.request_id, json_each(r.scopes) s;

-- The event log by type, by request, by time.
CREATE INDEX audit_events_by_type ON audit_events (type, seq);
CREATE INDEX audit_events_by_request ON audit_events (request_id, seq) WHERE request_id IS NOT NULL;
CREATE INDEX audit_events_by_time ON audit_events (at);
