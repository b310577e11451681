-- Credits become optional: NULL means the app is not metered (its budgets still apply).
-- Dropping NOT NULL and a default only changes the catalog: nothing is rewritten.
-- Keep this file and migrations/sqlite/ in step.
ALTER TABLE apps ALTER COLUMN credits DROP NOT NULL;
ALTER TABLE apps ALTER COLUMN credits DROP DEFAULT;
