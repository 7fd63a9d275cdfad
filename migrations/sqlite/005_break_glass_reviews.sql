-- Every break-glass grant awaits a post-review from an approver who is not its requester.
CREATE TABLE break_glass_reviews (
  request_id   TEXT    PRIMARY KEY REFERENCES requests (id),
  due_at       INTEGER NOT NULL,     -- issued_at + breakGlass.reviewWithin
  outcome      TEXT    CHECK (outcome IN ('justified', 'unjustified')),   -- NULL while pending
  notes        TEXT,
  reviewer_iss TEXT,
  reviewer_sub TEXT,
  reviewed_at  INTEGER,
  overdue_at   INTEGER               -- when the scheduler flagged it overdue (once)
) STRICT;

CREATE INDEX break_glass_reviews_pending ON break_glass_reviews (due_at) WHERE outcome IS NULL;
