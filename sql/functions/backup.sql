-- Server-side room-key backup (tables: sql/003). `etag` and `count` live in the version row and change in the
-- same transaction as every session write, so they are exact under any number of concurrent writers.
--
-- Applied at every start after the schema migrations, all families in one transaction (docs/ARCHITECTURE.md, "the
-- migration/function rule"): this file is the only definition of each function in it.

-- Creating a version and writing to the current one exclude each other per user (a write must not land in a
-- version that stopped being current before it committed); writers of one version serialise on its row.
CREATE OR REPLACE FUNCTION mx_backup_user_lock(p_user text, p_exclusive boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_exclusive THEN
        PERFORM pg_advisory_xact_lock(72835, hashtext(p_user));
    ELSE
        PERFORM pg_advisory_xact_lock_shared(72835, hashtext(p_user));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION mx_backup_current_version(p_user text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT max(version) FROM backup_versions WHERE user_id = p_user AND NOT deleted
$$;

-- The version object as the API shows it.
CREATE OR REPLACE FUNCTION mx_backup_version_json(v backup_versions) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('algorithm', v.algorithm, 'auth_data', v.auth_data, 'count', v.count,
                              'etag', v.etag::text, 'version', v.version::text)
$$;

-- POST /room_keys/version: numbers are max+1 over every version ever created, deleted ones included.
CREATE OR REPLACE FUNCTION mx_backup_create(p_user text, p_algorithm text, p_auth_data jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    PERFORM mx_backup_user_lock(p_user, true);
    SELECT COALESCE(max(version), 0) + 1 INTO v FROM backup_versions WHERE user_id = p_user;
    INSERT INTO backup_versions (user_id, version, algorithm, auth_data) VALUES (p_user, v, p_algorithm, p_auth_data);
    RETURN v::text;
END $$;

-- GET /room_keys/version[/{version}]: NULL when there is no such live version.
CREATE OR REPLACE FUNCTION mx_backup_get(p_user text, p_version bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT mx_backup_version_json(v) FROM backup_versions v
    WHERE v.user_id = p_user AND NOT v.deleted
      AND v.version = COALESCE(p_version, mx_backup_current_version(p_user))
$$;

-- PUT /room_keys/version/{version}: replaces auth_data only; the etag stays.
CREATE OR REPLACE FUNCTION mx_backup_update(p_user text, p_version bigint, p_algorithm text, p_auth_data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    stored text;
BEGIN
    SELECT algorithm INTO stored FROM backup_versions
    WHERE user_id = p_user AND version = p_version AND NOT deleted FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM mx_client_error(404, 'M_NOT_FOUND', format('no backup version %s', p_version));
    END IF;
    IF stored <> p_algorithm THEN
        PERFORM mx_client_error(400, 'M_INVALID_PARAM', format(
            'algorithm %s does not match the version''s algorithm %s; a new algorithm needs a new version',
            p_algorithm, stored));
    END IF;
    UPDATE backup_versions SET auth_data = p_auth_data WHERE user_id = p_user AND version = p_version;
END $$;

-- DELETE /room_keys/version/{version}: the version's data and sessions go; deleting it again is fine; a version
-- that never existed is 404.
CREATE OR REPLACE FUNCTION mx_backup_delete(p_user text, p_version bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mx_backup_user_lock(p_user, true);
    UPDATE backup_versions SET deleted = true, auth_data = '{}', count = 0, etag = etag + 1
    WHERE user_id = p_user AND version = p_version AND NOT deleted;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM backup_versions WHERE user_id = p_user AND version = p_version) THEN
        PERFORM mx_client_error(404, 'M_NOT_FOUND', format('no backup version %s', p_version));
    END IF;
    DELETE FROM backup_sessions WHERE user_id = p_user AND version = p_version;
END $$;

-- The replacement rule of backed-up sessions (spec, "Server-side key backups"): a stored session is replaced only by
-- a strictly better one, in this order: verified beats unverified; then the lower first_message_index; then the
-- lower forwarded_count. An equal key keeps the stored one (and so the etag stays). SQL, IMMUTABLE: inlined into the
-- statement that calls it.
CREATE OR REPLACE FUNCTION mx_backup_session_is_better(new backup_sessions, old backup_sessions) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (new.is_verified AND NOT old.is_verified)
        OR (new.is_verified = old.is_verified
            AND (new.first_message_index < old.first_message_index
                 OR (new.first_message_index = old.first_message_index
                     AND new.forwarded_count < old.forwarded_count)))
$$;

-- PUT /room_keys/keys...: p_rooms is {"<room>": {"sessions": {"<session>": KeyBackupData}}} (validated by the
-- server). Writes go only to the current version: to another live one, 403 M_WRONG_ROOM_KEYS_VERSION naming the
-- current version in `current_version`. A stored session is replaced only when mx_backup_session_is_better.
-- Returns {"etag", "count"}.
CREATE OR REPLACE FUNCTION mx_backup_put(p_user text, p_version bigint, p_rooms jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    current bigint;
    v backup_versions;
    inserted bigint;
    replaced bigint;
BEGIN
    PERFORM mx_backup_user_lock(p_user, false);
    SELECT * INTO v FROM backup_versions WHERE user_id = p_user AND version = p_version AND NOT deleted FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM mx_client_error(404, 'M_NOT_FOUND', format('no backup version %s', p_version));
    END IF;
    current := mx_backup_current_version(p_user);
    IF current <> p_version THEN
        PERFORM mx_client_error(403, 'M_WRONG_ROOM_KEYS_VERSION',
                                format('writes go to the current backup version, which is %s', current),
                                jsonb_build_object('current_version', current::text));
    END IF;

    WITH input AS (
        SELECT r.key AS room_id, s.key AS session_id, s.value AS d
        FROM jsonb_each(p_rooms) r, jsonb_each(r.value -> 'sessions') s
    ), written AS (
        INSERT INTO backup_sessions AS b (user_id, version, room_id, session_id, first_message_index,
                                          forwarded_count, is_verified, session_data)
        SELECT p_user, p_version, room_id, session_id, (d ->> 'first_message_index')::bigint,
               (d ->> 'forwarded_count')::bigint, (d ->> 'is_verified')::boolean, d -> 'session_data'
        FROM input
        ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE
            SET first_message_index = EXCLUDED.first_message_index, forwarded_count = EXCLUDED.forwarded_count,
                is_verified = EXCLUDED.is_verified, session_data = EXCLUDED.session_data
            WHERE mx_backup_session_is_better(EXCLUDED, b)
        RETURNING (xmax = 0) AS is_insert -- xmax is 0 exactly for rows this statement inserted
    )
    SELECT count(*) FILTER (WHERE is_insert), count(*) FILTER (WHERE NOT is_insert) INTO inserted, replaced
    FROM written;

    UPDATE backup_versions
    SET count = count + inserted, etag = etag + CASE WHEN inserted + replaced > 0 THEN 1 ELSE 0 END
    WHERE user_id = p_user AND version = p_version
    RETURNING * INTO v;
    RETURN jsonb_build_object('etag', v.etag::text, 'count', v.count);
END $$;

-- DELETE /room_keys/keys[/{room}[/{session}]] on any live version. Returns {"etag", "count"}.
CREATE OR REPLACE FUNCTION mx_backup_delete_sessions(p_user text, p_version bigint, p_room text, p_session text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v backup_versions;
    removed bigint;
BEGIN
    SELECT * INTO v FROM backup_versions WHERE user_id = p_user AND version = p_version AND NOT deleted FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM mx_client_error(404, 'M_NOT_FOUND', format('no backup version %s', p_version));
    END IF;
    -- One statement per level, so each keeps an index plan of its own (a cached generic plan of
    -- "p_room IS NULL OR room_id = p_room" would scan the whole version to delete one session).
    IF p_room IS NULL THEN
        DELETE FROM backup_sessions WHERE user_id = p_user AND version = p_version;
    ELSIF p_session IS NULL THEN
        DELETE FROM backup_sessions WHERE user_id = p_user AND version = p_version AND room_id = p_room;
    ELSE
        DELETE FROM backup_sessions
        WHERE user_id = p_user AND version = p_version AND room_id = p_room AND session_id = p_session;
    END IF;
    GET DIAGNOSTICS removed = ROW_COUNT;
    UPDATE backup_versions
    SET count = count - removed, etag = etag + CASE WHEN removed > 0 THEN 1 ELSE 0 END
    WHERE user_id = p_user AND version = p_version
    RETURNING * INTO v;
    RETURN jsonb_build_object('etag', v.etag::text, 'count', v.count);
END $$;

-- Whether a live version exists (first statement of every GET of sessions).
CREATE OR REPLACE FUNCTION mx_backup_exists(p_user text, p_version bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM backup_versions WHERE user_id = p_user AND version = p_version AND NOT deleted)
$$;
