-- Credits become optional: NULL means the app is not metered (its budgets still apply).
-- SQLite cannot drop a NOT NULL constraint in place, so the apps table (one row per tenant:
-- small) is rebuilt. Foreign keys are off meanwhile, or dropping the old table would cascade
-- to virtual_keys; `PRAGMA foreign_keys` is a no-op inside a transaction, so this migration
-- runs outside sqlx's and opens its own. Keep this file and migrations/postgres/ in step.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE apps_new (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL UNIQUE,
    credits         REAL,
    daily_budget    REAL,
    monthly_budget  REAL,
    created_at      INTEGER NOT NULL
);
INSERT INTO apps_new (id, name, credits, daily_budget, monthly_budget, created_at)
    SELECT id, name, credits, daily_budget, monthly_budget, created_at FROM apps;
DROP TABLE apps;
ALTER TABLE apps_new RENAME TO apps;
COMMIT;
PRAGMA foreign_keys = ON;
