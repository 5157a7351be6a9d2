-- Codes: only a keyed hash of the code, the onset day and hour-coarse times.
-- state: 0 live, 1 exchanged, 2 revoked.
CREATE TABLE codes (
    code_hash    BLOB    PRIMARY KEY,
    onset_day    INTEGER NOT NULL,
    created_hour INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    state        INTEGER NOT NULL DEFAULT 0,
    ended_hour   INTEGER
);
CREATE INDEX codes_live ON codes (state, expires_at);
CREATE INDEX codes_created ON codes (created_hour);

CREATE TABLE staff (
    username       TEXT    PRIMARY KEY,
    password_hash  TEXT    NOT NULL,
    totp_secret    BLOB    NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    disabled       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);

-- stage: 0 password checked, second factor pending; 1 signed in.
CREATE TABLE sessions (
    id_hash    BLOB    PRIMARY KEY,
    username   TEXT    NOT NULL,
    stage      INTEGER NOT NULL,
    csrf_token TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE api_keys (
    name       TEXT    PRIMARY KEY,
    key_hash   BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);

-- Who created or revoked how many codes, per hour.
CREATE TABLE audit (
    hour   INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (hour, actor, action)
);
