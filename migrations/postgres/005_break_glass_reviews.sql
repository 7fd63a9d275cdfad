-- Every break-glass grant awaits a post-review from an approver who is not its requester.
CREATE TABLE break_glass_reviews (
  request_id   TEXT   PRIMARY KEY REFERENCES requests (id),
  due_at       BIGINT NOT NULL,     -- issued_at + breakGlass.reviewWithin
  outcome      TEXT   CHECK (outcome IN ('justified', 'unjustified')),   -- NULL while pending
  notes        TEXT,
  reviewer_iss TEXT,
  reviewer_sub TEXT,
  reviewed_at  BIGINT,
  overdue_at   BIGINT              -- when the scheduler flagged it overdue (once)
);
CREATE INDEX break_glass_reviews_pending ON break_glass_reviews (due_at, request_id) WHERE outcome IS NULL;
CREATE INDEX break_glass_reviews_done ON break_glass_reviews (due_at, request_id) WHERE outcome IS NOT NULL;
CREATE INDEX break_glass_reviews_unflagged ON break_glass_reviews (due_at) WHERE outcome IS NULL AND overdue_at IS NULL;
