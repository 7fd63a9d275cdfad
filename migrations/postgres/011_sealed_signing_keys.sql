-- Cluster signing keys (CONTRACT section 5): with a key-encryption key, a key's private half is
-- kept here, sealed with AES-256-GCM under that key (which the database never holds), so every
-- replica signs with the cluster's current key and one that joins never waits publishAhead.
-- NULL where the private half lives in a file under signing.keyDir, and once the key is retired:
-- its tokens have expired, so nothing is left for it to sign.
ALTER TABLE signing_keys ADD COLUMN sealed_private_key TEXT;
