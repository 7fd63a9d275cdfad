-- /readyz proves the store takes a write by updating this row in a transaction it rolls back.
CREATE TABLE readiness_probe (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  at BIGINT  NOT NULL
);
INSERT INTO readiness_probe (id, at) VALUES (1, 0);
