-- Control plane: settings overridden through the admin API (e.g. the routing strategy), and
-- the API version some upstream kinds need (Azure, Anthropic). Only a new table and a nullable
-- column: nothing is rewritten. Keep this file and migrations/sqlite/ in step.

CREATE TABLE settings (
    key         TEXT PRIMARY KEY NOT NULL,
    value       TEXT NOT NULL,               -- JSON
    updated_at  BIGINT NOT NULL
);

ALTER TABLE upstreams ADD COLUMN api_version TEXT;
