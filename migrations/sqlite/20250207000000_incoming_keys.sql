-- Keys not yet claimed by a release bucket live in their own table, with no index but the
-- row id. An upload's commit then appends to a few pages at the end of this table instead
-- of writing one random leaf of the unique key index per key (about 4 MB of WAL for a
-- batch of 32 uploads on a table of 600,000 keys). The release's claim moves the due
-- rows into gaen_keys, where the unique index drops keys published before (and copies
-- uploaded twice), in one sorted pass per bucket. See PROTOCOL.md §10.
CREATE TABLE gaen_keys_incoming (
    id INTEGER PRIMARY KEY,
    key_data BLOB NOT NULL,
    rolling_start_number INTEGER NOT NULL,
    rolling_period INTEGER NOT NULL,
    transmission_risk_level INTEGER NOT NULL,
    days_since_onset INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    publish_at INTEGER NOT NULL
);
INSERT INTO gaen_keys_incoming (key_data, rolling_start_number, rolling_period,
    transmission_risk_level, days_since_onset, received_at, publish_at)
    SELECT key_data, rolling_start_number, rolling_period, transmission_risk_level,
    days_since_onset, received_at, publish_at FROM gaen_keys WHERE bucket_end IS NULL
    ORDER BY id;
DELETE FROM gaen_keys WHERE bucket_end IS NULL;
DROP INDEX gaen_keys_unclaimed;
