-- The broker's signing keys: public halves here, so every replica serves every key; private
-- halves in files under each replica's signing.keyDir.
CREATE TABLE signing_keys (
  kid          TEXT   PRIMARY KEY,
  alg          TEXT   NOT NULL,
  public_jwk   TEXT   NOT NULL,
  created_at   BIGINT NOT NULL,
  activates_at BIGINT NOT NULL,   -- published from created_at, signing from here (signing.publishAhead)
  retired_at   BIGINT             -- set once no unexpired token uses it; then it leaves the JWKS
);
