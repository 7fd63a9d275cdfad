-- The broker's signing keys: public halves here, private halves in files under signing.keyDir.
-- Every broker process on this database signs with the newest unretired key.
CREATE TABLE signing_keys (
  kid        TEXT    PRIMARY KEY,
  alg        TEXT    NOT NULL,
  public_jwk TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  retired_at INTEGER               -- set once no unexpired token uses it; then it leaves the JWKS
) STRICT;
