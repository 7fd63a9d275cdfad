-- /readyz proves the store can write by touching this one row.
CREATE TABLE readiness_probe (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  at INTEGER NOT NULL
) STRICT;
INSERT INTO readiness_probe (id, at) VALUES (1, 0);
