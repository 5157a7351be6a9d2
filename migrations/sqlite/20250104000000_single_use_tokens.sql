-- Single-use records of upload tokens that link no upload to its token (PROTOCOL.md §8).
-- jti_hash and body_digest are HMAC-SHA256 under a key of the day the record expires
-- (token_keys), and expires_at is coarsened to the hour after the token's exp plus
-- leeway. A record is deleted once it has expired, and a day's key once every record
-- made with it is gone: after that, nobody, not even the token issuer with a copy of the
-- database, can tell which jti (or which body) a record was.
ALTER TABLE used_tokens ADD COLUMN body_digest BLOB;
CREATE TABLE token_keys (
    period INTEGER PRIMARY KEY,
    secret BLOB NOT NULL
);
