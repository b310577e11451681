-- The proxy's signals on every call row: how many chunks the upstream streamed and the model
-- it said answered (which can differ from the model llmux asked for). Nullable columns only:
-- nothing is rewritten. Keep this file and its twin (sqlite/ and postgres/) in step.

ALTER TABLE call_log ADD COLUMN chunks BIGINT;
ALTER TABLE call_log ADD COLUMN reported_model TEXT;
