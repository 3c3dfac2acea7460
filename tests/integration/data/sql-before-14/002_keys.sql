-- Device keys, one-time keys, fallback keys and the device-list change stream.
-- Every table leads with user_id; every statement of a request touches one user's rows or an explicit set.

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

-- Raises a client error that the server turns into a Matrix error (DETAIL = "<status> <errcode>").
CREATE FUNCTION mx_client_error(status int, errcode text, message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'MXERR', MESSAGE = message, DETAIL = status::text || ' ' || errcode;
END $$;

-- Records a device-list change. Stream ids are taken under a transaction-scoped lock so that they become visible
-- in order: a reader that saw id N can never later find a smaller id committed behind it.
CREATE FUNCTION mx_record_device_change(p_user text, p_device text, p_audience text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    id bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7283510001);
    id := nextval('device_list_stream_seq');
    INSERT INTO device_list_changes (user_id, stream_id, device_id, audience) VALUES (p_user, id, p_device, p_audience);
    RETURN id;
END $$;

-- A key's identity for "same key re-uploaded?": its value without signatures.
CREATE FUNCTION mx_key_content(v jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'object' THEN v - 'signatures' ELSE v END
$$;

-- Unclaimed one-time keys per algorithm, always with signed_curve25519.
CREATE FUNCTION mx_otk_counts(p_user text, p_device text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('signed_curve25519', 0) || COALESCE(jsonb_object_agg(algorithm, n), '{}')
    FROM (SELECT algorithm, count(*) AS n FROM one_time_keys
          WHERE user_id = p_user AND device_id = p_device GROUP BY algorithm) c
$$;

-- POST /keys/upload, all of it in one transaction. The caller has validated shapes and signatures.
--   p_device_keys: the device-keys object, or NULL
--   p_otks / p_fallbacks: {"<algorithm>:<key_id>": value}, or NULL
-- Returns the one_time_key_counts object. Any error raised here rolls back everything the call did.
CREATE FUNCTION mx_keys_upload(p_user text, p_device text, p_device_keys jsonb, p_otks jsonb, p_fallbacks jsonb,
                               p_otk_cap int) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    new_keys jsonb := p_device_keys - 'unsigned';
    old_keys jsonb;
    changed boolean := false;
    conflict record;
    stored int;
BEGIN
    IF p_device_keys IS NOT NULL THEN
        -- An identical re-upload (what clients do on every start) is answered from a plain read: no row lock, no
        -- write, no change recorded.
        SELECT keys_json INTO old_keys FROM device_keys WHERE user_id = p_user AND device_id = p_device;
        IF old_keys IS DISTINCT FROM new_keys THEN
            IF mx_device_id_forbidden(p_user, p_device) THEN
                -- 403 like the other direction (device_signing/upload with a key equal to a device id)
                PERFORM mx_client_error(403, 'M_FORBIDDEN', format(
                    'device id %s is one of the cross-signing public keys of %s: a device id and a public key '
                    'must not be confused', p_device, p_user));
            END IF;
            -- Insert or lock-and-replace; a concurrent first upload of the same device makes the INSERT find the
            -- other's row, and the loop then replaces it under the row lock (never a unique-violation 500).
            LOOP
                SELECT keys_json INTO old_keys FROM device_keys
                WHERE user_id = p_user AND device_id = p_device FOR UPDATE;
                IF FOUND THEN
                    IF old_keys IS DISTINCT FROM new_keys THEN
                        UPDATE device_keys SET keys_json = new_keys,
                               display_name = COALESCE(p_device_keys -> 'unsigned' ->> 'device_display_name',
                                                       display_name)
                        WHERE user_id = p_user AND device_id = p_device;
                        -- A cross-signature covers everything but `signatures`/`unsigned`: once that changes, the
                        -- signatures made on the old object are void.
                        IF (old_keys - 'signatures') IS DISTINCT FROM (new_keys - 'signatures') THEN
                            PERFORM mx_device_keys_replaced(p_user, p_device);
                        END IF;
                        changed := true;
                    END IF;
                    EXIT;
                END IF;
                INSERT INTO device_keys (user_id, device_id, keys_json, display_name)
                VALUES (p_user, p_device, new_keys, p_device_keys -> 'unsigned' ->> 'device_display_name')
                ON CONFLICT DO NOTHING;
                IF FOUND THEN
                    -- a device id reused after deletion must not inherit signatures made on another device's keys
                    PERFORM mx_device_keys_replaced(p_user, p_device);
                    changed := true;
                    EXIT;
                END IF;
            END LOOP;
        END IF;
    END IF;

    IF p_otks IS NOT NULL AND p_otks <> '{}' THEN
        -- Uploads of one device take turns from here on (claims do not: they only lower the count), so the cap below
        -- counts every committed key and is exact under concurrent uploads. Two-int advisory keys never meet the
        -- stream's one-bigint key.
        PERFORM pg_advisory_xact_lock(hashtext(p_user), hashtext(p_device));
        -- New ids only; identical re-uploads and ids already handed out are accepted silently. Keys of one batch
        -- get increasing seq in id order, so claims are first-in first-out by batch.
        INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json)
        SELECT p_user, p_device, split_part(n.key, ':', 1), split_part(n.key, ':', 2), n.value
        FROM jsonb_each(p_otks) n
        WHERE NOT EXISTS (SELECT 1 FROM claimed_one_time_keys c
                          WHERE c.user_id = p_user AND c.device_id = p_device
                            AND c.algorithm = split_part(n.key, ':', 1) AND c.key_id = split_part(n.key, ':', 2))
        ORDER BY n.key
        ON CONFLICT DO NOTHING;
        -- Same id, different key: refuse the whole request (the device keys above are rolled back with it). Checked
        -- after the insert so that it also sees the row of a concurrent upload of the same id, which the insert
        -- waited for.
        SELECT n.key AS id, o.key_json AS old_value, n.value AS new_value INTO conflict
        FROM jsonb_each(p_otks) n
        JOIN one_time_keys o ON o.user_id = p_user AND o.device_id = p_device
             AND o.algorithm = split_part(n.key, ':', 1) AND o.key_id = split_part(n.key, ':', 2)
        WHERE mx_key_content(o.key_json) IS DISTINCT FROM mx_key_content(n.value)
        ORDER BY n.key
        LIMIT 1;
        IF FOUND THEN
            PERFORM mx_client_error(400, 'M_INVALID_PARAM', format(
                'one-time key %s is already stored with different content: stored %s, uploaded %s; nothing was '
                'stored from this request', conflict.id, conflict.old_value::text, conflict.new_value::text));
        END IF;
        SELECT count(*) INTO stored FROM one_time_keys WHERE user_id = p_user AND device_id = p_device;
        IF stored > p_otk_cap THEN
            PERFORM mx_client_error(400, 'M_INVALID_PARAM', format(
                'this upload would leave %s unclaimed one-time keys on device %s; the limit is %s per device: '
                'upload fewer keys', stored, p_device, p_otk_cap));
        END IF;
    END IF;

    IF p_fallbacks IS NOT NULL AND p_fallbacks <> '{}' THEN
        -- One fallback key per algorithm: a new key replaces the old and starts unused; the identical key keeps
        -- its used flag.
        INSERT INTO fallback_keys AS f (user_id, device_id, algorithm, key_id, key_json, used)
        SELECT p_user, p_device, split_part(n.key, ':', 1), split_part(n.key, ':', 2), n.value, false
        FROM jsonb_each(p_fallbacks) n
        ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
            SET key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json,
                used = CASE WHEN f.key_id = EXCLUDED.key_id
                             AND mx_key_content(f.key_json) = mx_key_content(EXCLUDED.key_json)
                            THEN f.used ELSE false END
            WHERE f.key_id IS DISTINCT FROM EXCLUDED.key_id OR f.key_json IS DISTINCT FROM EXCLUDED.key_json;
    END IF;

    -- Last, so the stream's ordering lock (mx_record_device_change) is held only until the commit right after.
    IF changed THEN
        PERFORM mx_record_device_change(p_user, p_device, NULL);
    END IF;
    RETURN mx_otk_counts(p_user, p_device);
END $$;

-- Hook for cross-signing: signatures made on a device's previous keys are dropped when the keys change.
-- (Redefined by the cross-signing migration.)
CREATE FUNCTION mx_device_keys_replaced(p_user text, p_device text) RETURNS void
LANGUAGE sql AS $$ SELECT $$;

-- Hook for cross-signing: a device id may not be one of the user's cross-signing public keys. (Redefined by the
-- cross-signing migration.)
CREATE FUNCTION mx_device_id_forbidden(p_user text, p_device text) RETURNS boolean
LANGUAGE sql STABLE AS $$ SELECT false $$;

-- Hook for cross-signing: a deactivated user loses everything else it owns. (Redefined by the cross-signing
-- migration.)
CREATE FUNCTION mx_user_deleted(p_user text) RETURNS void
LANGUAGE sql AS $$ SELECT $$;

-- The device's stored ed25519 key, for verifying signed one-time keys uploaded without device keys.
CREATE FUNCTION mx_device_ed25519(p_user text, p_device text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT keys_json -> 'keys' ->> ('ed25519:' || p_device) FROM device_keys
    WHERE user_id = p_user AND device_id = p_device
$$;

-- POST /keys/claim. p_wanted: {"<user>": {"<device>": "<algorithm>"}} (local users only).
-- For each target, hands out the oldest unclaimed one-time key (by upload sequence), or else the fallback key
-- (marked used). Never the same one-time key twice, and never the fallback while one-time keys remain, under any
-- concurrency: SKIP LOCKED takes a free key without queueing behind other claimers; when it finds none, a plain read
-- tells "all gone" from "all momentarily held by concurrent claims", and in the second case we wait for a holder to
-- finish and look again, rather than give out the fallback early (which is what SKIP LOCKED alone does).
-- Targets are visited in a fixed order, so concurrent claims wait on each other in that order and cannot deadlock.
--
-- mxkeys.test_claim_hold_ms (a custom setting, e.g. in the connection's options) holds each claimed key's lock that
-- long before committing: the integration tests widen the race window with it. Unset in production.
CREATE FUNCTION mx_keys_claim(p_wanted jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t record;
    k record;
    fb record;
    result jsonb := '{}';
    got jsonb;
    hold_ms int := COALESCE(NULLIF(current_setting('mxkeys.test_claim_hold_ms', true), '')::int, 0);
BEGIN
    FOR t IN
        SELECT u.key AS user_id, d.key AS device_id, d.value #>> '{}' AS algorithm
        FROM jsonb_each(p_wanted) u, jsonb_each(u.value) d
        ORDER BY 1, 2
    LOOP
        got := NULL;
        LOOP
            DELETE FROM one_time_keys o
            WHERE o.user_id = t.user_id AND o.device_id = t.device_id AND o.algorithm = t.algorithm
              AND o.key_id = (SELECT f.key_id FROM one_time_keys f
                              WHERE f.user_id = t.user_id AND f.device_id = t.device_id AND f.algorithm = t.algorithm
                              ORDER BY f.seq LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING o.key_id, o.key_json INTO k;
            IF FOUND THEN
                -- remembered so that a retried upload of the same key cannot make it claimable again
                INSERT INTO claimed_one_time_keys VALUES (t.user_id, t.device_id, t.algorithm, k.key_id)
                ON CONFLICT DO NOTHING;
                got := jsonb_build_object(t.algorithm || ':' || k.key_id, k.key_json);
                IF hold_ms > 0 THEN
                    PERFORM pg_sleep(hold_ms / 1000.0);
                END IF;
                EXIT;
            END IF;
            PERFORM 1 FROM one_time_keys
            WHERE user_id = t.user_id AND device_id = t.device_id AND algorithm = t.algorithm LIMIT 1;
            IF NOT FOUND THEN
                SELECT key_id, key_json, used INTO fb FROM fallback_keys
                WHERE user_id = t.user_id AND device_id = t.device_id AND algorithm = t.algorithm;
                IF FOUND THEN
                    IF NOT fb.used THEN
                        UPDATE fallback_keys SET used = true
                        WHERE user_id = t.user_id AND device_id = t.device_id AND algorithm = t.algorithm;
                    END IF;
                    got := jsonb_build_object(t.algorithm || ':' || fb.key_id, fb.key_json);
                END IF;
                EXIT;
            END IF;
            -- Every remaining key is held by a concurrent claim: wait for the oldest holder to commit (the row is then
            -- gone and this returns nothing) or roll back (we then hold the row), and look again.
            PERFORM 1 FROM one_time_keys
            WHERE user_id = t.user_id AND device_id = t.device_id AND algorithm = t.algorithm
            ORDER BY seq LIMIT 1 FOR UPDATE;
        END LOOP;
        IF got IS NOT NULL THEN
            result := jsonb_set(result, ARRAY[t.user_id], COALESCE(result -> t.user_id, '{}'), true);
            result := jsonb_set(result, ARRAY[t.user_id, t.device_id], got, true);
        END IF;
    END LOOP;
    RETURN result;
END $$;

-- Device objects for POST /keys/query as the viewer may see them.
-- p_wanted: {"<user>": ["<device>", ...]} (an empty list: every device). Users without devices map to {}.
-- Every device object carries `unsigned` (device_display_name when known). Cross-signatures are merged in by
-- mx_visible_device_signatures (redefined by the cross-signing migration).
CREATE FUNCTION mx_visible_device_signatures(p_viewer text, p_user text, p_device text) RETURNS jsonb
LANGUAGE sql STABLE AS $$ SELECT NULL::jsonb $$;

-- Merges extra signatures {"<signer>": {"<key id>": sig}} into an object's `signatures`.
CREATE FUNCTION mx_merge_signatures(obj jsonb, extra jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN extra IS NULL OR extra = '{}' THEN obj
           ELSE jsonb_set(obj, '{signatures}', COALESCE(obj -> 'signatures', '{}') ||
                   (SELECT jsonb_object_agg(e.signer, COALESCE(obj -> 'signatures' -> e.signer, '{}') || e.sigs)
                    FROM jsonb_each(extra) e(signer, sigs)))
           END
$$;

CREATE FUNCTION mx_query_device_keys(p_viewer text, p_wanted jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(jsonb_object_agg(w.key, COALESCE(d.devices, '{}')), '{}')
    FROM jsonb_each(p_wanted) w
    LEFT JOIN LATERAL (
        SELECT jsonb_object_agg(dk.device_id,
                   mx_merge_signatures(dk.keys_json, mx_visible_device_signatures(p_viewer, dk.user_id, dk.device_id))
                   || jsonb_build_object('unsigned',
                          CASE WHEN dk.display_name IS NULL THEN '{}'::jsonb
                               ELSE jsonb_build_object('device_display_name', dk.display_name) END)) AS devices
        FROM device_keys dk
        WHERE dk.user_id = w.key
          AND (jsonb_array_length(w.value) = 0 OR dk.device_id IN (SELECT jsonb_array_elements_text(w.value)))
    ) d ON true
$$;

-- Cross-signing keys for POST /keys/query (filled in by the cross-signing migration): usage is 'master',
-- 'self_signing' or 'user_signing'.
CREATE FUNCTION mx_query_cross_signing_keys(p_viewer text, p_wanted jsonb, p_usage text) RETURNS jsonb
LANGUAGE sql STABLE AS $$ SELECT '{}'::jsonb $$;

-- POST /keys/query without `failures` (the server adds remote users there).
CREATE FUNCTION mx_keys_query(p_viewer text, p_wanted jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'device_keys', mx_query_device_keys(p_viewer, p_wanted),
        'master_keys', mx_query_cross_signing_keys(p_viewer, p_wanted, 'master'),
        'self_signing_keys', mx_query_cross_signing_keys(p_viewer, p_wanted, 'self_signing'),
        'user_signing_keys', mx_query_cross_signing_keys(p_viewer, p_wanted, 'user_signing'))
$$;

-- GET /keys/changes: users whose device lists changed in (p_from, p_to] that the viewer may see.
CREATE FUNCTION mx_keys_changes(p_viewer text, p_from bigint, p_to bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(jsonb_agg(DISTINCT user_id), '[]') FROM device_list_changes
    WHERE stream_id > p_from AND stream_id <= p_to AND (audience IS NULL OR audience = p_viewer)
$$;

-- The newest stream id whose change is committed (ids become visible in order, see mx_record_device_change).
CREATE FUNCTION mx_device_stream_position() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(max(stream_id), 0) FROM device_list_changes
$$;

-- Homeserver integration: a device was deleted, or a user deactivated (p_device NULL: every device).
-- Idempotent: a second call finds nothing and records nothing. Returns the number of devices touched.
-- Rows first, stream entries last: every writer takes its row locks before the stream's ordering lock, so a
-- concurrent upload of the same device cannot deadlock with this.
CREATE FUNCTION mx_delete_devices(p_user text, p_device text) RETURNS int
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
