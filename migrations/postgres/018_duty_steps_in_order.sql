-- The chain of custody in the order the broker recorded it: each object's steps numbered as they
-- are taken, under the object's lock. Listed by that number, a page's cursor can never pass a
-- step recorded later with an earlier clock (the same millisecond, a slower commit, another
-- replica's clock), which ordering by creation time could skip for good.
ALTER TABLE duty_steps ADD COLUMN position BIGINT;
UPDATE duty_steps SET position = (
  SELECT count(*) FROM duty_steps earlier
  WHERE earlier.duty = duty_steps.duty AND earlier.object = duty_steps.object
    AND (earlier.created_at, earlier.request_id) <= (duty_steps.created_at, duty_steps.request_id)
);
CREATE UNIQUE INDEX duty_steps_in_order ON duty_steps (duty, object, position);
