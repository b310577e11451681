-- Every attempt of a call (upstream, provider key, status or failure, error class, time
-- taken) as a JSON array, and whether the client asked for a stream. Nullable columns only:
-- nothing is rewritten. Keep this file and its twin (sqlite/ and postgres/) in step.

ALTER TABLE call_log ADD COLUMN attempt_log TEXT;
ALTER TABLE call_log ADD COLUMN stream BOOLEAN;
