-- Removing devices and users (admin API, logout, deletion, deactivation) and device display names as the
-- homeserver knows them (tables: sql/002, sql/008).
--
-- Applied at every start after the schema migrations, all families in one transaction (docs/ARCHITECTURE.md, "the
-- migration/function rule"): this file is the only definition of each function in it.

-- The deletion behind mx_delete_devices (below), which takes the locks first; called only from there (it was
-- mx_delete_devices itself before sql/006). Idempotent: a second call finds nothing and records nothing. Returns the number of devices touched.
-- Rows first, stream entries last: every writer takes its row locks before the stream's ordering lock, so a
-- concurrent upload of the same device cannot deadlock with this.
CREATE OR REPLACE FUNCTION mx_delete_device_rows(p_user text, p_device text) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    touched text[];
    d text;
BEGIN
    WITH dk AS (DELETE FROM device_keys WHERE user_id = p_user AND (p_device IS NULL OR device_id = p_device)
                RETURNING device_id),
         otk AS (DELETE FROM one_time_keys WHERE user_id = p_user AND (p_device IS NULL OR device_id = p_device)
                 RETURNING device_id),
         fb AS (DELETE FROM fallback_keys WHERE user_id = p_user AND (p_device IS NULL OR device_id = p_device)
                RETURNING device_id),
         claimed AS (DELETE FROM claimed_one_time_keys
                     WHERE user_id = p_user AND (p_device IS NULL OR device_id = p_device))
    SELECT array_agg(DISTINCT device_id ORDER BY device_id) INTO touched
    FROM (SELECT device_id FROM dk UNION ALL SELECT device_id FROM otk UNION ALL SELECT device_id FROM fb) t;
    IF p_device IS NULL THEN
        PERFORM mx_user_deleted(p_user);
    END IF;
    FOREACH d IN ARRAY COALESCE(touched, '{}') LOOP
        PERFORM mx_device_keys_replaced(p_user, d);
        PERFORM mx_record_device_change(p_user, d, NULL);
    END LOOP;
    RETURN COALESCE(array_length(touched, 1), 0);
END $$;

-- Homeserver integration: a device was deleted, or a user deactivated (p_device NULL: every device); the admin API,
-- logout and deletion all come here. Returns the number of devices touched.
--
-- Lock order. Removal once took its row locks in whatever order its DELETEs met the rows, while a claim naming
-- several devices of the user locks one key per device in ascending device order: the two could wait for each
-- other (PostgreSQL then aborts one, and the client got a retryable 503). So removal locks first, device by device
-- in the claims' order, and within a device in the order uploads and claims take the same rows:
--   device_keys row (an upload that changes the device keys) -> one-time keys, oldest first (claims) -> fallback
--   keys (claims that found no one-time key; uploads).
-- Every writer then waits for another only on the device it is at and never holds rows of a later device, so no
-- cycle can form. Then mx_delete_device_rows deletes.
CREATE OR REPLACE FUNCTION mx_delete_devices(p_user text, p_device text) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    d text;
BEGIN
    FOR d IN
        SELECT device_id FROM device_keys WHERE user_id = p_user AND (p_device IS NULL OR device_id = p_device)
        UNION SELECT device_id FROM one_time_keys WHERE user_id = p_user AND (p_device IS NULL OR device_id = p_device)
        UNION SELECT device_id FROM fallback_keys WHERE user_id = p_user AND (p_device IS NULL OR device_id = p_device)
        ORDER BY 1
    LOOP
        PERFORM 1 FROM device_keys WHERE user_id = p_user AND device_id = d FOR UPDATE;
        PERFORM 1 FROM one_time_keys WHERE user_id = p_user AND device_id = d ORDER BY algorithm, seq FOR UPDATE;
        PERFORM 1 FROM fallback_keys WHERE user_id = p_user AND device_id = d ORDER BY algorithm FOR UPDATE;
    END LOOP;
    RETURN mx_delete_device_rows(p_user, p_device);
END $$;

-- Removes devices' keys as the admin API does (mx_delete_devices), for a logout or deletion. p_devices NULL: every
-- device of the user (logout/all); unlike a user deletion, the cross-signing identity and backups stay. Returns the
-- number of devices that had something stored.
CREATE OR REPLACE FUNCTION mx_remove_devices(p_user text, p_devices text[]) RETURNS int
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
CREATE OR REPLACE FUNCTION mx_deactivate_user(p_user text) RETURNS int
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

-- Trigger on device_keys: a row written with keys takes the display name the homeserver told us
-- (device_display_names, filled by mx_device_names_learned), over any name in the uploaded keys' `unsigned`.
CREATE OR REPLACE FUNCTION mx_device_keys_take_display_name() RETURNS trigger
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

-- The binding of the function above to its table lives beside the function: a fresh database gets the function
-- only after the schema step, so sql/008 cannot attach it. Created when missing, never dropped and re-created: that
-- would take an exclusive lock on device_keys at every start. (PostgreSQL 13 has no CREATE OR REPLACE TRIGGER.)
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'device_keys'::regclass
                   AND tgname = 'device_keys_display_name') THEN
        CREATE TRIGGER device_keys_display_name BEFORE INSERT OR UPDATE OF keys_json, display_name ON device_keys
        FOR EACH ROW EXECUTE FUNCTION mx_device_keys_take_display_name();
    END IF;
END $$;

-- Records names: p_names {"<device id>": "<name>" or null}. p_complete: the list is every device the homeserver has
-- for the user (GET /devices), so devices it does not list are gone: their keys are removed. Returns the number of
-- devices removed so.
CREATE OR REPLACE FUNCTION mx_device_names_learned(p_user text, p_names jsonb, p_complete boolean) RETURNS int
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
