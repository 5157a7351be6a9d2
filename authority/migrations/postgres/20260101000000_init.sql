-- Codes: only a keyed hash of the code, the onset day and hour-coarse times.
-- state: 0 live, 1 exchanged, 2 revoked.
CREATE TABLE codes (
    code_hash    BYTEA   PRIMARY KEY,
    onset_day    BIGINT  NOT NULL,
    created_hour BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    state        BIGINT  NOT NULL DEFAULT 0,
    ended_hour   BIGINT 
);
CREATE INDEX codes_live ON codes (state, expires_at);
CREATE INDEX codes_created ON codes (created_hour);

CREATE TABLE staff (
    username       TEXT    PRIMARY KEY,
    password_hash  TEXT    NOT NULL,
    totp_secret    BYTEA   NOT NULL,
    totp_last_step BIGINT  NOT NULL DEFAULT 0,
    disabled       BIGINT  NOT NULL DEFAULT 0,
    created_at     BIGINT  NOT NULL
);

-- stage: 0 password checked, second factor pending; 1 signed in.
CREATE TABLE sessions (
    id_hash    BYTEA   PRIMARY KEY,
    username   TEXT    NOT NULL,
    stage      BIGINT  NOT NULL,
    csrf_token TEXT    NOT NULL,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE api_keys (
    name       TEXT    PRIMARY KEY,
    key_hash   BYTEA   NOT NULL UNIQUE,
    created_at BIGINT  NOT NULL,
    revoked    BIGINT  NOT NULL DEFAULT 0
);

-- Who created or revoked how many codes, per hour.
CREATE TABLE audit (
    hour   BIGINT  NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    count  BIGINT  NOT NULL,
    PRIMARY KEY (hour, actor, action)
);
