-- Accounting: usage rollups by hour and by day × app × model × upstream, kept by the call-log
-- writer in the same transaction as the call rows; optional prompt/answer text on call rows
-- (`[logs] bodies`). Only a new table, nullable columns and indexes: nothing is rewritten.
-- Keep this file and migrations/postgres/ in step.

CREATE TABLE usage_rollup (
    bucket         TEXT NOT NULL CHECK (bucket IN ('hour', 'day')),
    start          INTEGER NOT NULL,            -- unix ms of the bucket's start (UTC)
    app_id         TEXT NOT NULL DEFAULT '',    -- '' for calls without a key
    model          TEXT NOT NULL,               -- the model the client asked for
    upstream       TEXT NOT NULL DEFAULT '',    -- '' when no upstream answered
    calls          INTEGER NOT NULL DEFAULT 0,
    errors         INTEGER NOT NULL DEFAULT 0,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    cost           REAL NOT NULL DEFAULT 0.0,
    PRIMARY KEY (bucket, start, app_id, model, upstream)
);
CREATE INDEX usage_rollup_app ON usage_rollup (app_id, bucket, start);

ALTER TABLE call_log ADD COLUMN request_body TEXT;
ALTER TABLE call_log ADD COLUMN response_body TEXT;
