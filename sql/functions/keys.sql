-- Device keys and one-time/fallback key uploads, /keys/query, /keys/changes (tables: sql/002, sql/005).
--
-- Applied at every start after the schema migrations, all families in one transaction (docs/ARCHITECTURE.md, "the
-- migration/function rule"): this file is the only definition of each function in it.

-- Unclaimed one-time keys per algorithm, always with signed_curve25519.
CREATE OR REPLACE FUNCTION mx_otk_counts(p_user text, p_device text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('signed_curve25519', 0) || COALESCE(jsonb_object_agg(algorithm, n), '{}')
    FROM (SELECT algorithm, count(*) AS n FROM one_time_keys
          WHERE user_id = p_user AND device_id = p_device GROUP BY algorithm) c
$$;

-- The device's stored ed25519 key, for verifying signed one-time keys uploaded without device keys.
CREATE OR REPLACE FUNCTION mx_device_ed25519(p_user text, p_device text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT keys_json -> 'keys' ->> ('ed25519:' || p_device) FROM device_keys
    WHERE user_id = p_user AND device_id = p_device
$$;

-- POST /keys/upload, all of it in one transaction. The caller has validated shapes and signatures.
--   p_device_keys: the device-keys object, or NULL
--   p_otks / p_fallbacks: {"<algorithm>:<key_id>": value}, or NULL
-- Returns the one_time_key_counts object. Any error raised here rolls back everything the call did.
CREATE OR REPLACE FUNCTION mx_keys_upload(p_user text, p_device text, p_device_keys jsonb, p_otks jsonb, p_fallbacks jsonb,
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

-- The visibility rule of cross-signatures (spec, "Cross-signing"): a viewer sees signatures made by their own keys
-- and devices, and the owner's signatures on the owner's keys; never those of a third user's user-signing key, not
-- even on the viewer's own master key. SQL, IMMUTABLE: inlined into the query that calls it, so it costs nothing.
CREATE OR REPLACE FUNCTION mx_signature_visible(p_viewer text, p_signer text, p_owner text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$ SELECT p_signer = p_viewer OR p_signer = p_owner $$;

-- POST /keys/query without `failures` (the server adds remote users there), as one set-based statement that writes
-- the answer's JSON text directly.
--
-- The first version composed SQL-language functions (per device: visible signatures, then a merge) and built the
-- answer as jsonb. Two costs dominated, measured with pgbench on 10 users x 5 devices (bench/pgbench/query.sql):
--  * PostgreSQL plans a non-inlinable SQL function again on every execution of the calling statement and starts it
--    once per row. PL/pgSQL keeps the plan of its statement for the life of the connection: 534 -> 1760 tx/s.
--  * Building a 30 KB jsonb value from 50 stored jsonb objects, only to print it as text for the server, costs
--    three times what printing each stored object and joining the pieces as text does (1810 vs 5420 tx/s for the
--    device part alone).
-- So every piece below is text: stored objects are printed when they are written (generated columns keys_text and
-- key_text, sql/005_query_plans.sql), names quoted with to_json, maps joined with string_agg; jsonb is only touched
-- to merge in cross-signatures. Object keys are unique by construction (jsonb_each of the request; primary keys of
-- the tables). Together: 534 -> ~2600 tx/s, 3.9 -> 0.74 ms for one query on an idle connection.
--
-- Semantics (unchanged from the first version): users map to {} when they have no devices; a non-empty list selects
-- devices; every device carries `unsigned`; user_signing_keys only for the viewer; signatures as
-- mx_signature_visible allows.
CREATE OR REPLACE FUNCTION mx_keys_query(p_viewer text, p_wanted jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        WITH wanted AS MATERIALIZED (
            SELECT w.key AS user_id,
                   CASE WHEN jsonb_array_length(w.value) = 0 THEN NULL
                        ELSE ARRAY(SELECT jsonb_array_elements_text(w.value)) END AS devices
            FROM jsonb_each(p_wanted) w),
        -- {"<signer user>": {"<signer key id>": sig}} per signed key (device id or cross-signing public key).
        visible AS MATERIALIZED (
            SELECT target_user, target_key_id, jsonb_object_agg(signer_user, by_key) AS extra
            FROM (SELECT cs.target_user, cs.target_key_id, cs.signer_user,
                         jsonb_object_agg(cs.signer_key_id, cs.signature) AS by_key
                  FROM wanted w JOIN cross_signatures cs ON cs.target_user = w.user_id
                  WHERE mx_signature_visible(p_viewer, cs.signer_user, cs.target_user)
                  GROUP BY cs.target_user, cs.target_key_id, cs.signer_user) per_signer
            GROUP BY target_user, target_key_id),
        devices AS (
            SELECT dk.user_id,
                   string_agg(to_json(dk.device_id)::text || ': ' || mx_json_with_member(
                                  CASE WHEN v.extra IS NULL THEN dk.keys_text
                                       ELSE mx_merge_signatures(dk.keys_json, v.extra)::text END,
                                  'unsigned',
                                  CASE WHEN dk.display_name IS NULL THEN '{}'
                                       ELSE '{"device_display_name": ' || to_json(dk.display_name)::text || '}' END),
                              ', ') AS pairs
            FROM wanted w
            JOIN device_keys dk ON dk.user_id = w.user_id AND (w.devices IS NULL OR dk.device_id = ANY (w.devices))
            LEFT JOIN visible v ON v.target_user = dk.user_id AND v.target_key_id = dk.device_id
            GROUP BY dk.user_id),
        cross_keys AS (
            SELECT k.usage,
                   string_agg(to_json(k.user_id)::text || ': '
                              || CASE WHEN v.extra IS NULL THEN k.key_text
                                       ELSE mx_merge_signatures(k.key_json, v.extra)::text END,
                              ', ') AS pairs
            FROM wanted w
            JOIN cross_signing_keys k ON k.user_id = w.user_id
            LEFT JOIN visible v ON v.target_user = k.user_id AND v.target_key_id = k.public_key
            WHERE k.usage <> 'user_signing' OR k.user_id = p_viewer
            GROUP BY k.usage)
        SELECT '{"device_keys": '
               || mx_json_object_text((SELECT string_agg(to_json(w.user_id)::text || ': '
                                                         || mx_json_object_text(d.pairs), ', ')
                                       FROM wanted w LEFT JOIN devices d ON d.user_id = w.user_id))
               || ', "master_keys": '
               || mx_json_object_text((SELECT pairs FROM cross_keys WHERE usage = 'master'))
               || ', "self_signing_keys": '
               || mx_json_object_text((SELECT pairs FROM cross_keys WHERE usage = 'self_signing'))
               || ', "user_signing_keys": '
               || mx_json_object_text((SELECT pairs FROM cross_keys WHERE usage = 'user_signing'))
               || '}');
END $$;

-- GET /keys/changes: users whose device lists changed in (p_from, p_to] that the viewer may see.
CREATE OR REPLACE FUNCTION mx_keys_changes(p_viewer text, p_from bigint, p_to bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(jsonb_agg(DISTINCT user_id), '[]') FROM device_list_changes
    WHERE stream_id > p_from AND stream_id <= p_to AND (audience IS NULL OR audience = p_viewer)
$$;

-- The newest stream id whose change is committed (ids become visible in order, see mx_record_device_change).
CREATE OR REPLACE FUNCTION mx_device_stream_position() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(max(stream_id), 0) FROM device_list_changes
$$;
