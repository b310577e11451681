-- Admin sessions end when a password or role changes: a login token carries the user's
-- session epoch and is refused once it moves on. A column with a constant default only:
-- nothing is rewritten. Keep this file and migrations/sqlite/ in step.

ALTER TABLE users ADD COLUMN session_epoch BIGINT NOT NULL DEFAULT 0;
