-- One key's usage, read fast at millions of rows (the dashboard and the admin's key page; bench/bench_key_pages.py).
-- Neither adds work to a settle beyond a wider index entry: the first replaces an index every usage row already
-- had, and the second gains an entry only with a new rollup row (a key's first request of a day for a model), since
-- the rollup's upsert changes none of its columns. The postgres file is the same with PostgreSQL's spelling; keep
-- them in step.

-- The 24 hours group ~10,000 rows of a busy key by hour and model: with every column they sum in the index, the
-- table is never visited (47 ms -> 18 ms for such a key in a million rows).
DROP INDEX usage_key_ts;
CREATE INDEX usage_key_ts ON usage (key_id, ts, model, status, error, input, output, cache_write_5m, cache_write_1h,
                                    cache_read, charged);

-- The 30 days read one key's rollups; the primary key starts with the day (reports over every key read by day).
CREATE INDEX rollup_daily_key_day ON rollup_daily (key_id, day);
