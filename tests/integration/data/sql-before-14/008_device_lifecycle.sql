-- Beside a homeserver: devices removed through mxkeys (logout, deletion, deactivation), tokens revoked on every
-- instance, and device display names as the homeserver knows them.

-- Removes devices' keys as the admin API does (mx_delete_devices), for a logout or deletion. p_devices NULL: every
-- device of the user (logout/all); unlike a user deletion, the cross-signing identity and backups stay. Returns the
-- number of devices that had something stored.
CREATE FUNCTION mx_remove_devices(p_user text, p_devices text[]) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    d text;
    n int := 0;
BEGIN
    -- Device by device in ascending order, the order claims and mx_delete_devices lock in (006).
    FOR d IN
        SELECT device_id FROM device_keys WHERE user_id = p_user AND (p_devices IS NULL OR device_id = ANY (p_devices))
        UNION SELECT device_id FROM one_time_keys
              WHERE user_id = p_user AND (p_devices IS NULL OR device_id = ANY (p_devices))
        UNION SELECT device_id FROM fallback_keys
              WHERE user_id = p_user AND (p_devices IS NULL OR device_id = ANY (p_devices))
        ORDER BY 1
    LOOP
        n := n + mx_delete_devices(p_user, d);
    END LOOP;
    RETURN n;
END $$;

-- A deactivated account loses everything mxkeys holds for it: devices, cross-signing identity, and backups (the
-- versions stay as tombstones, so their numbers are never handed out again).
CREATE FUNCTION mx_deactivate_user(p_user text) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    n := mx_delete_devices(p_user, NULL);
    PERFORM mx_backup_user_lock(p_user, true);
    DELETE FROM backup_sessions WHERE user_id = p_user;
    UPDATE backup_versions SET deleted = true, count = 0, etag = etag + 1 WHERE user_id = p_user AND NOT deleted;
    RETURN n;
END $$;

-- Access tokens revoked through mxkeys, by device (device_id NULL: every device of the user). Workers of every
-- instance read this stream and drop the tokens they cached for those devices.
CREATE TABLE token_revocations (
    seq        bigserial   PRIMARY KEY,
    user_id    text        NOT NULL,
    device_id  text,
    revoked_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION mx_revoke_tokens(p_user text, p_devices text[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
BEGIN
    -- A day is far longer than any token cache: older revocations are only history.
    DELETE FROM token_revocations WHERE revoked_at < now() - interval '1 day';
    IF p_devices IS NULL THEN
        INSERT INTO token_revocations (user_id, device_id) VALUES (p_user, NULL) RETURNING seq INTO last;
    ELSE
        INSERT INTO token_revocations (user_id, device_id) SELECT p_user, d FROM unnest(p_devices) d;
        SELECT max(seq) INTO last FROM token_revocations;
    END IF;
    RETURN last;
END $$;

-- Display names of devices as the homeserver knows them (from forwarded logins, device lists and renames). They win
-- over a name a client put in its uploaded keys' `unsigned`, and wait here for keys not uploaded yet.
CREATE TABLE device_display_names (
    user_id      text NOT NULL,
    device_id    text NOT NULL,
    display_name text,
    PRIMARY KEY (user_id, device_id)
);

CREATE FUNCTION mx_device_keys_take_display_name() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    known record;
BEGIN
    SELECT display_name INTO known FROM device_display_names
    WHERE user_id = NEW.user_id AND device_id = NEW.device_id;
    IF FOUND THEN
        NEW.display_name := known.display_name;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER device_keys_display_name BEFORE INSERT OR UPDATE OF keys_json, display_name ON device_keys
FOR EACH ROW EXECUTE FUNCTION mx_device_keys_take_display_name();

-- Records names: p_names {"<device id>": "<name>" or null}. p_complete: the list is every device the homeserver has
-- for the user (GET /devices), so devices it does not list are gone: their keys are removed. Returns the number of
-- devices removed so.
CREATE FUNCTION mx_device_names_learned(p_user text, p_names jsonb, p_complete boolean) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    gone text[];
BEGIN
    INSERT INTO device_display_names (user_id, device_id, display_name)
    SELECT p_user, n.key, n.value #>> '{}' FROM jsonb_each(p_names) n
    ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = EXCLUDED.display_name
    WHERE device_display_names.display_name IS DISTINCT FROM EXCLUDED.display_name;
    UPDATE device_keys dk SET display_name = n.value #>> '{}'
    FROM jsonb_each(p_names) n
    WHERE dk.user_id = p_user AND dk.device_id = n.key AND dk.display_name IS DISTINCT FROM n.value #>> '{}';
    IF NOT p_complete THEN
        RETURN 0;
    END IF;
    DELETE FROM device_display_names WHERE user_id = p_user AND NOT p_names ? device_id;
    SELECT array_agg(device_id) INTO gone FROM (
        SELECT device_id FROM device_keys WHERE user_id = p_user
        UNION SELECT device_id FROM one_time_keys WHERE user_id = p_user
        UNION SELECT device_id FROM fallback_keys WHERE user_id = p_user) held
    WHERE NOT p_names ? device_id;
    IF gone IS NULL THEN
        RETURN 0;
    END IF;
    RETURN mx_remove_devices(p_user, gone);
END $$;
