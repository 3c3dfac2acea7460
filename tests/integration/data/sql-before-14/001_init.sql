-- Core tables: local access tokens. Tokens are stored only as SHA-256 hashes.
-- Every table leads with user_id so the schema can be distributed by user.
CREATE TABLE access_tokens (
    user_id    text        NOT NULL,
    device_id  text        NOT NULL,
    token_hash bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, token_hash)
);
CREATE UNIQUE INDEX access_tokens_by_hash ON access_tokens (token_hash);
