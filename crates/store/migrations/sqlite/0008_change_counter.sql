-- The change counter: one row whose `seq` grows by one with every admin change published to
-- the other instances (`Store::notify`). It is the version of the shared state: an instance
-- that reads a `seq` it has not heard a notification for re-reads everything. A new table of
-- one row: nothing is rewritten. Keep this file and its twin (sqlite/ and postgres/) in step.

CREATE TABLE change_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO change_counter (id, seq) VALUES (1, 0);
