-- The break-glass quota counts uses, and a child token of a break-glass grant is none (its parent
-- was counted): its indexes hold grants that are no child, which is what the quota reads.
DROP INDEX requests_break_glass_by_identity;
DROP INDEX requests_break_glass_by_person;
CREATE INDEX requests_break_glass_by_identity ON requests (requester_iss, requester_sub, issued_at)
  WHERE break_glass AND parent_id IS NULL;
CREATE INDEX requests_break_glass_by_person ON requests (person, issued_at)
  WHERE break_glass AND person IS NOT NULL AND parent_id IS NULL;
