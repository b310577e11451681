-- A renamed model: `name` is what clients call it now, `original_name` the name its upstream
-- knows it by (sent upstream; NULL when never renamed). The original stops answering by
-- itself; an alias keeps it. Keep this file and its twin (sqlite/ and postgres/) in step.

ALTER TABLE models ADD COLUMN original_name TEXT;
