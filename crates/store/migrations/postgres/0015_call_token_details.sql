-- The detail of a call's token counts: prompt tokens read from / written to the provider's
-- prompt cache (parts of input_tokens) and reasoning tokens (part of output_tokens). NULL on
-- rows written before. Keep this file and its twin (sqlite/ and postgres/) in step.

ALTER TABLE call_log ADD COLUMN cached_tokens BIGINT;
ALTER TABLE call_log ADD COLUMN cache_write_tokens BIGINT;
ALTER TABLE call_log ADD COLUMN reasoning_tokens BIGINT;
