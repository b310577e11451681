-- Per-upstream translation options of API-made upstreams, as a JSON object with the same
-- keys as a `[[upstreams]]` table of the config file: `max_tokens_field` ("max_tokens" |
-- "max_completion_tokens") and `max_output_tokens` ({ "model" = tokens }). NULL: none.
-- Keep this file and its twin (sqlite/ and postgres/) in step.

ALTER TABLE upstreams ADD COLUMN options TEXT;
