-- DP-3T backend schema (PostgreSQL). Times are unix seconds. No IP address and no precise
-- arrival time is stored anywhere: received_at is the end of the arrival's release bucket.

-- Uploaded GAEN keys. publish_at is the earliest release-bucket end at which the key may
-- be published (max of its coarsened arrival and its embargo end); bucket_end is set when
-- a bucket claims the key, and never changes afterwards.
CREATE TABLE gaen_keys (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_data BYTEA NOT NULL,
    rolling_start_number BIGINT NOT NULL,
    rolling_period BIGINT NOT NULL,
    transmission_risk_level BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    publish_at BIGINT NOT NULL,
    bucket_end BIGINT,
    UNIQUE (key_data, rolling_start_number)
);
CREATE INDEX gaen_keys_unclaimed ON gaen_keys (publish_at) WHERE bucket_end IS NULL;
CREATE INDEX gaen_keys_publish_at ON gaen_keys (publish_at);

-- Single-use upload tokens: SHA-256 of the jti, and the token's exp.
CREATE TABLE used_tokens (
    jti_hash BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_tokens_expires_at ON used_tokens (expires_at);

-- Every non-empty release bucket, built once: the signed export zip and the Signature
-- header of the response that serves it. Never updated.
CREATE TABLE published_buckets (
    bucket_end BIGINT PRIMARY KEY,
    bucket_start BIGINT NOT NULL,
    real_keys BIGINT NOT NULL,
    total_keys BIGINT NOT NULL,
    zip BYTEA NOT NULL,
    signature TEXT NOT NULL
);

-- One row: every bucket ending at or before released_until has been built. Builders lock
-- this row (SELECT ... FOR UPDATE), so buckets are built one at a time across all nodes.
CREATE TABLE release_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    released_until BIGINT NOT NULL
);
INSERT INTO release_state (id, released_until) VALUES (1, 0);
