-- Whether a call was answered from the response cache (`[cache]`, docs/cache.md): such a
-- call reached no upstream and cost nothing. Existing rows read as not cached. Keep this file
-- and its twin (sqlite/ and postgres/) in step.

ALTER TABLE call_log ADD COLUMN cache_hit BOOLEAN NOT NULL DEFAULT FALSE;
