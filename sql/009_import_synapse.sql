-- `mxkeysd import synapse`: what the cut-over import of a Synapse database remembers between runs, so that a later
-- run can tell what it owns. The import itself and its ownership rule: sql/functions/import.sql.

CREATE TABLE import_synapse_devices (
    user_id   text   NOT NULL,
    device_id text   NOT NULL,
    stream_id bigint NOT NULL,              -- the device's newest device_list_changes id when the import left it
    fallbacks jsonb  NOT NULL DEFAULT '{}', -- {"<algorithm>": "<key id>"} written by the import
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE import_synapse_users (
    user_id     text        NOT NULL PRIMARY KEY,
    stream_id   bigint      NOT NULL,              -- the user's newest user-level change id when the import left it
    xsign       jsonb       NOT NULL DEFAULT '{}', -- {"<usage>": "<public key>"} written by the import
    imported_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE import_synapse_backups (
    user_id      text    NOT NULL,
    version      bigint  NOT NULL,
    synapse_etag bigint,           -- Synapse's etag the import copied
    etag         bigint  NOT NULL, -- mxkeys' etag, auth_data and deleted state as the import left them
    auth_data    jsonb   NOT NULL,
    deleted      boolean NOT NULL,
    PRIMARY KEY (user_id, version)
);

-- Imported one-time keys: negative, increasing, so below every key uploaded to mxkeys.
CREATE SEQUENCE import_synapse_otk_seq;
