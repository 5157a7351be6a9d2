-- One release engine for the four schemes (PROTOCOL.md §10): GAEN's release state joins
-- the designs' in one table of (scheme, claimed_until, released_until). GAEN keys are now
-- claimed to their buckets first and built afterwards, like the designs' uploads, so a
-- release finds the claimed keys of a bucket by bucket_end.
-- Renamed, not recreated, so that privileges granted on the old table carry over.
ALTER TABLE design_release_state RENAME TO release_states;
ALTER TABLE release_states RENAME COLUMN design TO scheme;
INSERT INTO release_states (scheme, claimed_until, released_until)
    SELECT 'gaen', released_until, released_until FROM release_state WHERE id = 1;
DROP TABLE release_state;
-- Partial: an upload inserts its keys with no bucket, so the index costs uploads nothing.
CREATE INDEX gaen_keys_bucket ON gaen_keys (bucket_end) WHERE bucket_end IS NOT NULL;
