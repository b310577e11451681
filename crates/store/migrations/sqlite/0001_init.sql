-- llmux initial schema (SQLite). Timestamps are unix milliseconds, JSON columns are TEXT.
-- Rule for later migrations: never rewrite a big table (call_log above all): no table
-- rebuilds (create-copy-drop-rename); only ADD COLUMN (nullable or constant default), new
-- tables and new indexes. Keep this file and migrations/postgres/ in step.

CREATE TABLE upstreams (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    url         TEXT NOT NULL,
    weight      INTEGER NOT NULL DEFAULT 1,
    models      TEXT,                        -- JSON array, NULL = all models
    timeouts    TEXT NOT NULL DEFAULT '{}',  -- JSON object
    enabled     BOOLEAN NOT NULL DEFAULT TRUE,
    source      TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('file', 'api')),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE provider_keys (
    id               TEXT PRIMARY KEY NOT NULL,
    upstream_id      TEXT NOT NULL REFERENCES upstreams (id) ON DELETE CASCADE,
    ciphertext       TEXT NOT NULL,          -- v1:<master key id>:<base64(nonce||ciphertext)>
    masked           TEXT NOT NULL,          -- display hint, e.g. "…1234"
    state            TEXT NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'disabled')),
    disabled_reason  TEXT,
    created_at       INTEGER NOT NULL
);
CREATE INDEX provider_keys_upstream ON provider_keys (upstream_id);

CREATE TABLE models (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    upstream_id  TEXT REFERENCES upstreams (id) ON DELETE CASCADE,
    enabled      BOOLEAN NOT NULL DEFAULT TRUE,
    origin       TEXT NOT NULL CHECK (origin IN ('declared', 'discovered')),
    created_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX models_name_upstream ON models (name, COALESCE(upstream_id, ''));
CREATE INDEX models_upstream ON models (upstream_id);

CREATE TABLE aliases (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    targets     TEXT NOT NULL,               -- JSON array of model names, in order
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE apps (
    id              TEXT PRIMARY KEY NOT NULL,
    name            TEXT NOT NULL UNIQUE,
    credits         REAL NOT NULL DEFAULT 0.0,
    daily_budget    REAL,
    monthly_budget  REAL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE virtual_keys (
    id            TEXT PRIMARY KEY NOT NULL,
    public_id     TEXT NOT NULL UNIQUE,
    secret_hash   TEXT NOT NULL,             -- v1$<base64 salt>$<base64 sha256(salt||secret)>
    app_id        TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    models        TEXT,                      -- JSON array, NULL = all models
    limits        TEXT NOT NULL DEFAULT '{}',-- JSON {rpm, tpm, concurrency}
    expires_at    INTEGER,
    revoked_at    INTEGER,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER
);
CREATE INDEX virtual_keys_app ON virtual_keys (app_id);

CREATE TABLE users (
    id             TEXT PRIMARY KEY NOT NULL,
    username       TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,            -- argon2id PHC string
    role           TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_at     INTEGER NOT NULL
);

CREATE TABLE audit_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target_type  TEXT NOT NULL,
    target_id    TEXT,
    before       TEXT,                       -- JSON, secrets masked by the caller
    after        TEXT                        -- JSON, secrets masked by the caller
);
CREATE INDEX audit_events_at ON audit_events (at);

CREATE TABLE config_revisions (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    source   TEXT NOT NULL CHECK (source IN ('file', 'api')),
    content  TEXT NOT NULL,                  -- full config snapshot (JSON or TOML)
    note     TEXT
);

CREATE TABLE call_log (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at        INTEGER NOT NULL,
    request_id        TEXT NOT NULL,
    app_id            TEXT,                  -- no foreign keys: the log outlives apps and keys
    virtual_key_id    TEXT,
    dialect           TEXT NOT NULL,
    requested_model   TEXT NOT NULL,
    upstream          TEXT,
    upstream_model    TEXT,
    provider_key_id   TEXT,
    status            INTEGER NOT NULL,
    error_class       TEXT,
    attempts          INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    ttft_ms           INTEGER,
    input_tokens      INTEGER,
    output_tokens     INTEGER,
    tokens_estimated  BOOLEAN NOT NULL DEFAULT FALSE,
    cost              REAL,
    client_ip         TEXT
);
CREATE INDEX call_log_created_at ON call_log (created_at);
CREATE INDEX call_log_app_created_at ON call_log (app_id, created_at);
