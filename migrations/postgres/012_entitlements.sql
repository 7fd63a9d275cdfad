-- Entitlements (CONTRACT section 4, GET /v1/audit/entitlements): each issued scope names the
-- policy it was granted under, the first in configuration order that granted it to the requester,
-- written with the issuance. Rows issued before this release get it where their request was
-- granted by one policy alone (which then granted every scope); the others stay NULL: which
-- policy granted which scope was not kept, and a guess would make a grant look used.
ALTER TABLE issued_scopes ADD COLUMN policy TEXT;
UPDATE issued_scopes s SET policy = r.policy_ids::json ->> 0
  FROM requests r
  WHERE r.id = s.request_id AND json_array_length(r.policy_ids::json) = 1;
-- The report counts one (policy, scope) since a time: a range of this index, never all history.
CREATE INDEX issued_scopes_by_policy ON issued_scopes (policy, scope, issued_at);
