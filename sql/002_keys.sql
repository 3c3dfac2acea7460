-- Device keys, one-time keys, fallback keys and the device-list change stream.
-- Every table leads with user_id; every statement of a request touches one user's rows or an explicit set.
-- The functions over these tables: sql/functions/keys.sql, claims.sql, devices.sql (the rule: docs/ARCHITECTURE.md).

-- The signed device-keys object as uploaded (without `unsigned`); served as stored.
CREATE TABLE device_keys (
    user_id      text  NOT NULL,
    device_id    text  NOT NULL,
    keys_json    jsonb NOT NULL,
    display_name text,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys. `seq` orders claims first-in first-out by upload (a sequence, never a clock).
CREATE SEQUENCE one_time_key_seq;
CREATE TABLE one_time_keys (
    user_id   text   NOT NULL,
    device_id text   NOT NULL,
    algorithm text   NOT NULL,
    key_id    text   NOT NULL,
    key_json  jsonb  NOT NULL,
    seq       bigint NOT NULL DEFAULT nextval('one_time_key_seq'),
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX one_time_keys_fifo ON one_time_keys (user_id, device_id, algorithm, seq);

-- Ids of one-time keys already handed out: a client that re-uploads one (a retried upload) must not make the
-- server hand the same key out twice.
CREATE TABLE claimed_one_time_keys (
    user_id   text NOT NULL,
    device_id text NOT NULL,
    algorithm text NOT NULL,
    key_id    text NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

CREATE TABLE fallback_keys (
    user_id   text    NOT NULL,
    device_id text    NOT NULL,
    algorithm text    NOT NULL,
    key_id    text    NOT NULL,
    key_json  jsonb   NOT NULL,
    used      boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Device-list changes behind /keys/changes. audience NULL: everyone may see it; otherwise only that user
-- (a user-signing key change concerns its owner alone).
CREATE SEQUENCE device_list_stream_seq;
CREATE TABLE device_list_changes (
    user_id   text   NOT NULL,
    stream_id bigint NOT NULL,
    device_id text,
    audience  text,
    PRIMARY KEY (user_id, stream_id)
);
CREATE INDEX device_list_changes_by_stream ON device_list_changes (stream_id);
