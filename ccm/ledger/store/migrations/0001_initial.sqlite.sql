-- The ledger's first schema. Money is INTEGER nano-dollars; times are INTEGER microseconds since the epoch (UTC).
-- The postgres file is the same schema with PostgreSQL's spellings; keep them in step.

-- One row per key: its policy (from `ccm keys create`) and its account (what admission reads and writes under the
-- row's lock). balance = credited - settled - held, always (ccm.ledger.audit checks it against the records below).
CREATE TABLE keys (
    id           INTEGER PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    prefix       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    credits      INTEGER NOT NULL DEFAULT 0,  -- 1: prepaid, the balance is checked
    budget       INTEGER,
    period       TEXT,
    models       TEXT    NOT NULL DEFAULT '',
    rpm          INTEGER,
    tpm          INTEGER,
    markup       TEXT,
    plan         TEXT,
    team         TEXT,
    balance      INTEGER NOT NULL DEFAULT 0,
    held         INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
    credited     INTEGER NOT NULL DEFAULT 0,
    settled      INTEGER NOT NULL DEFAULT 0,
    period_start INTEGER,
    period_spent INTEGER NOT NULL DEFAULT 0,
    rpm_level    INTEGER NOT NULL DEFAULT 0,
    rpm_at       INTEGER NOT NULL DEFAULT 0,
    tpm_level    INTEGER NOT NULL DEFAULT 0,
    tpm_at       INTEGER NOT NULL DEFAULT 0
);

-- Secrets, by SHA-256 only. A rotated-out secret keeps working until its expires_at (the grace period).
CREATE TABLE key_secrets (
    hash       TEXT    PRIMARY KEY,
    key_id     INTEGER NOT NULL REFERENCES keys (id),
    prefix     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
);
CREATE INDEX key_secrets_key ON key_secrets (key_id);

-- Credits are entries, never an overwritten number.
CREATE TABLE credits (
    id         INTEGER PRIMARY KEY,
    key_id     INTEGER NOT NULL REFERENCES keys (id),
    amount     INTEGER NOT NULL,
    note       TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX credits_key ON credits (key_id);

-- Each ccm process that holds money: a sweep releases the holds of one that is gone.
CREATE TABLE instances (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    boot         TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped_at   INTEGER
);

-- Open holds only: settling or releasing one deletes it (the usage row keeps the amount that was held).
CREATE TABLE holds (
    id         INTEGER PRIMARY KEY,
    request_id TEXT    NOT NULL UNIQUE,
    key_id     INTEGER NOT NULL REFERENCES keys (id),
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    tokens     INTEGER NOT NULL,
    instance   TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX holds_key ON holds (key_id);
CREATE INDEX holds_instance ON holds (instance);

-- The prices (and markup) a request was costed at, by the hash of their canonical JSON: immutable.
CREATE TABLE prices (
    id   INTEGER PRIMARY KEY,
    hash TEXT    NOT NULL UNIQUE,
    body TEXT    NOT NULL
);

-- One row per finished request, at most one per request id.
CREATE TABLE usage (
    id             INTEGER PRIMARY KEY,
    request_id     TEXT    NOT NULL UNIQUE,
    ts             INTEGER NOT NULL,
    key_id         INTEGER,
    session        TEXT,
    rule           TEXT,
    model          TEXT,
    provider       TEXT,
    upstream_model TEXT,
    attempts       INTEGER NOT NULL,
    stream         INTEGER NOT NULL,
    status         INTEGER NOT NULL,
    error          TEXT,
    input          INTEGER NOT NULL,
    output         INTEGER NOT NULL,
    cache_write_5m INTEGER NOT NULL,
    cache_write_1h INTEGER NOT NULL,
    cache_read     INTEGER NOT NULL,
    web_search     INTEGER NOT NULL,
    latency_ms     INTEGER NOT NULL,
    ttft_ms        INTEGER,
    upstream       INTEGER NOT NULL,
    charged        INTEGER NOT NULL,
    held           INTEGER,
    price_id       INTEGER REFERENCES prices (id),
    estimated      INTEGER NOT NULL,
    truncated      INTEGER NOT NULL
);
CREATE INDEX usage_ts ON usage (ts);
CREATE INDEX usage_key_ts ON usage (key_id, ts);

-- Per day (days since the epoch, UTC), key (0: the local caller), model alias and provider; incremented in the
-- transaction that writes each usage row, so reports read thousands of rows instead of millions.
CREATE TABLE rollup_daily (
    day              INTEGER NOT NULL,
    key_id           INTEGER NOT NULL,
    model            TEXT    NOT NULL,
    provider         TEXT    NOT NULL,
    requests         INTEGER NOT NULL,
    errors           INTEGER NOT NULL,
    input            INTEGER NOT NULL,
    output           INTEGER NOT NULL,
    cache_write_5m   INTEGER NOT NULL,
    cache_write_1h   INTEGER NOT NULL,
    cache_read       INTEGER NOT NULL,
    web_search       INTEGER NOT NULL,
    upstream         INTEGER NOT NULL,
    charged          INTEGER NOT NULL,
    c_input          INTEGER NOT NULL,
    c_output         INTEGER NOT NULL,
    c_cache_write_5m INTEGER NOT NULL,
    c_cache_write_1h INTEGER NOT NULL,
    c_cache_read     INTEGER NOT NULL,
    c_web_search     INTEGER NOT NULL,
    PRIMARY KEY (day, key_id, model, provider)
);
