-- The id of every call in the log, given by the call-log writer when the record is made (the
-- request id may be chosen by the client, so it is not unique). The writer inserts a batch's
-- ids here first, with ON CONFLICT DO NOTHING, and writes (and counts, and charges) only the
-- records whose id was new: a batch written twice (its commit landed but the answer was lost,
-- or a spill file replayed) lands once. A table of its own rather than a unique index on
-- call_log: nothing big is rewritten or locked, and no index is built CONCURRENTLY under the
-- migration lock (which deadlocks against instances waiting for that lock). Rows go with
-- their calls (retention). Keep this file and its twin (sqlite/ and postgres/) in step.

CREATE TABLE call_log_ids (
    call_id     TEXT PRIMARY KEY NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX call_log_ids_created_at ON call_log_ids (created_at);
