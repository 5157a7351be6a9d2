-- The three DP-3T designs (low-cost, unlinkable, hybrid) beside GAEN (SQLite). Times are
-- unix seconds. No IP address and no precise arrival time is stored: received_at is the
-- end of the release bucket the upload arrived in.

-- One row per accepted real upload of a design ('lowcost', 'unlinkable', 'hybrid'):
-- its entries as fixed-size binary records, concatenated (low-cost: key 32 || BE32 day;
-- unlinkable: SHA-256(EphID || BE32 epoch), 32 bytes; hybrid: seed 16 || BE64 window
-- start || BE16 minutes). bucket_end is set when a release claims the row, and never
-- changes afterwards.
CREATE TABLE design_uploads (
    id INTEGER PRIMARY KEY,
    design TEXT NOT NULL,
    entries BLOB NOT NULL,
    entry_count INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    bucket_end INTEGER
);
CREATE INDEX design_uploads_unclaimed ON design_uploads (design, received_at) WHERE bucket_end IS NULL;
CREATE INDEX design_uploads_bucket ON design_uploads (design, bucket_end);
CREATE INDEX design_uploads_received_at ON design_uploads (received_at);

-- Every release bucket of a design that holds real entries, built once: the published
-- body (padded, shuffled) and the Signature header that serves it. Never updated.
-- Buckets without real entries are not stored: their padded body is a pure function of
-- design_padding_secret, the design and the bucket end.
CREATE TABLE design_buckets (
    design TEXT NOT NULL,
    bucket_end INTEGER NOT NULL,
    real_entries INTEGER NOT NULL,
    total_entries INTEGER NOT NULL,
    body BLOB NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (design, bucket_end)
);

-- Per design: uploads received up to claimed_until have been assigned to buckets, and
-- every bucket ending at or before released_until has been built and stored.
CREATE TABLE design_release_state (
    design TEXT PRIMARY KEY,
    claimed_until INTEGER NOT NULL,
    released_until INTEGER NOT NULL
);
INSERT INTO design_release_state (design, claimed_until, released_until)
    VALUES ('lowcost', 0, 0), ('unlinkable', 0, 0), ('hybrid', 0, 0);

-- One random secret, created by the first server node, from which the padding of every
-- bucket is drawn (so a bucket's bytes are the same on every node and after restarts).
CREATE TABLE design_padding_secret (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    secret BLOB NOT NULL
);
