-- The HPKE key pairs of sealed uploads (PROTOCOL.md §16), in the database so that every
-- node of a deployment publishes and opens with the same keys and sees every rotation
-- (they used to live in <data_dir>/sealed-keys.json, one file per node; the server
-- imports such a file once and then removes it). key_id is the published key id
-- (SHA-256 of the public key, first 8 bytes); a row is deleted a day after expires_at.
CREATE TABLE sealed_keys (
    key_id BLOB PRIMARY KEY,
    secret BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
