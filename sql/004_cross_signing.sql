-- Cross-signing: one current key per (user, usage) with an append-only history, and signatures kept apart from the
-- signed objects so visibility can be decided per viewer at query time and device-key re-uploads keep them.
-- The functions: sql/functions/cross_signing.sql.

CREATE TABLE cross_signing_keys (
    user_id    text  NOT NULL,
    usage      text  NOT NULL CHECK (usage IN ('master', 'self_signing', 'user_signing')),
    public_key text  NOT NULL,
    key_json   jsonb NOT NULL,
    PRIMARY KEY (user_id, usage)
);

CREATE TABLE cross_signing_keys_history (
    user_id    text        NOT NULL,
    usage      text        NOT NULL,
    public_key text        NOT NULL,
    key_json   jsonb       NOT NULL,
    added_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cross_signing_keys_history_by_user ON cross_signing_keys_history (user_id, added_at);

-- A signature by signer_user's key signer_key_id ("ed25519:<device id>" or "ed25519:<public key>") on
-- target_user's key target_key_id (a device id, or a cross-signing public key).
CREATE TABLE cross_signatures (
    target_user   text NOT NULL,
    target_key_id text NOT NULL,
    signer_user   text NOT NULL,
    signer_key_id text NOT NULL,
    signature     text NOT NULL,
    PRIMARY KEY (target_user, target_key_id, signer_user, signer_key_id)
);
CREATE INDEX cross_signatures_by_signer ON cross_signatures (signer_user, signer_key_id);

-- Replacing an existing master key needs this window open (MSC3967), unless the server allows it outright.
CREATE TABLE cross_signing_replacement (
    user_id       text        NOT NULL PRIMARY KEY,
    allowed_until timestamptz NOT NULL
);
