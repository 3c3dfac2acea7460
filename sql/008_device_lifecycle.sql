-- Beside a homeserver: devices removed through mxkeys (logout, deletion, deactivation), tokens revoked on every
-- instance, and device display names as the homeserver knows them. The functions, and the trigger that gives a new
-- device_keys row the name the homeserver knows: sql/functions/devices.sql and sidecar.sql.

-- Access tokens revoked through mxkeys, by device (device_id NULL: every device of the user). Workers of every
-- instance read this stream and drop the tokens they cached for those devices.
CREATE TABLE token_revocations (
    seq        bigserial   PRIMARY KEY,
    user_id    text        NOT NULL,
    device_id  text,
    revoked_at timestamptz NOT NULL DEFAULT now()
);

-- Display names of devices as the homeserver knows them (from forwarded logins, device lists and renames). They win
-- over a name a client put in its uploaded keys' `unsigned`, and wait here for keys not uploaded yet.
CREATE TABLE device_display_names (
    user_id      text NOT NULL,
    device_id    text NOT NULL,
    display_name text,
    PRIMARY KEY (user_id, device_id)
);
