-- The hook (`[[hooks]]`, docs/hooks.md) that refused a call: its name, or NULL when no hook
-- refused it. A nullable column only: nothing is rewritten. Keep this file and its twin
-- (sqlite/ and postgres/) in step.

ALTER TABLE call_log ADD COLUMN hook TEXT;
