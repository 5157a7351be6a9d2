-- Padding without a deployment-wide secret (PROTOCOL.md §10): every bucket of every scheme
-- is built once from fresh randomness and stored, so its padding exists only in the
-- published bytes. The secret from which the designs' padding used to be derived (and
-- with which it could be told apart from real entries) is erased.
DROP TABLE design_padding_secret;
