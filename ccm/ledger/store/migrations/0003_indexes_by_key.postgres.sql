-- One key's usage, read fast at millions of rows (see the sqlite file for why neither index costs a settle more
-- than a wider entry). Keep the two files in step.

-- The 24 hours of a busy key from the index alone (an index-only scan once the visibility map is set by vacuum).
DROP INDEX usage_key_ts;
CREATE INDEX usage_key_ts ON usage (key_id, ts) INCLUDE (model, status, error, input, output, cache_write_5m,
                                                         cache_write_1h, cache_read, charged);

-- The 30 days read one key's rollups: without it PostgreSQL scans them all (29 ms for 123,000 rollup rows).
CREATE INDEX rollup_daily_key_day ON rollup_daily (key_id, day);
