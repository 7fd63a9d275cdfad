-- One row per minted token. The token itself is never stored: its jti and SHA-256 are.
CREATE TABLE issuances (
  jti          TEXT   PRIMARY KEY,
  request_id   TEXT   NOT NULL UNIQUE REFERENCES requests (id),   -- a request yields one token
  token_sha256 TEXT   NOT NULL,
  kid          TEXT   NOT NULL,
  issued_at    BIGINT NOT NULL,
  expires_at   BIGINT NOT NULL
);
-- Key retirement asks whether any unexpired token still uses a key.
CREATE INDEX issuances_by_kid ON issuances (kid, expires_at);

-- One row per scope of each minted token, written with the issuance: the scope filter in order.
CREATE TABLE issued_scopes (
  scope      TEXT   NOT NULL,
  issued_at  BIGINT NOT NULL,
  request_id TEXT   NOT NULL REFERENCES requests (id),
  PRIMARY KEY (scope, issued_at, request_id)
);
