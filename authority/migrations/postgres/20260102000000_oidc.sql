-- Sign-ins through the OpenID Connect provider that have been started but not finished:
-- the PKCE verifier and nonce, under the hash of the state value (10 minutes).
CREATE TABLE oidc_logins (
    state_hash    BYTEA   PRIMARY KEY,
    pkce_verifier TEXT    NOT NULL,
    nonce         TEXT    NOT NULL,
    expires_at    BIGINT  NOT NULL
);
