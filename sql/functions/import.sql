-- Functions of `mxkeysd import synapse`: the cut-over import of a Synapse database's keys and backups.
--
-- One user at a time, in one transaction per user, the importer (src/import/) calls
--   mx_import_begin(user, doc)           device keys, fallback keys, cross-signing keys, signatures, backup versions
--   mx_import_otks(user, rows)  ...      one-time keys in chunks, in Synapse's upload order
--   mx_import_sessions(user, rows) ...   backup sessions in chunks
--   mx_import_finish(user)               removals, bookkeeping; returns the counts of what was done
-- so a user of any size passes through in bounded memory. A run is idempotent: the same snapshot imported twice writes
-- nothing the second time, and an interrupted run is resumed by running it again.
--
-- The rule for data mxkeys already serves: the import writes only what it owns. It owns
--   * a device it created (or found holding the very same keys), as long as no device-list change was recorded for
--     that device since the import last wrote it: a client that uploaded new device keys to mxkeys, or a deletion
--     through the admin API, makes the device mxkeys' own and the import leaves it alone from then on;
--   * one-time keys it inserted: they carry negative `seq` values (from their own sequence), so they are claimed
--     before any key uploaded to mxkeys itself, in Synapse's upload order, and a later run can tell them apart: only
--     those are removed when they are gone from Synapse (claimed there), and recorded as claimed;
--   * a fallback key it wrote, as long as mxkeys still holds that key id for the algorithm (`used` is never cleared:
--     a key mxkeys handed out stays used);
--   * a user's cross-signing keys while mxkeys recorded no user-level change for the user since the import last
--     wrote them (a key upload, a signature upload);
--   * backup versions it created, as long as their etag, auth_data and deleted state are those it left; a user whose
--     backups include a version created in mxkeys keeps mxkeys' backups untouched.
-- Cross-signatures are only ever added, never replaced or removed, and only onto keys that mxkeys holds.
-- The first import of a user records no device-list changes (clients knew these keys already); a later run records
-- a change for what it changed, as an upload would. Tables: sql/009.
--
-- Applied at every start after the schema migrations, all families in one transaction (docs/ARCHITECTURE.md, "the
-- migration/function rule"): this file is the only definition of each function in it.


-- Per-connection scratch state of the user being imported, emptied when a user begins (mx_import_clear).
-- Not ON COMMIT DELETE ROWS: that truncates every such table at every commit, which cost more than a small user's
-- whole import. The importer calls this again every few hundred users, between transactions, to truncate them.
CREATE OR REPLACE FUNCTION mx_import_prepare() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.import_dev') IS NOT NULL THEN
        TRUNCATE import_dev, import_seen_otk, import_ver, import_seen_session, import_counts, import_changes,
                 import_user;
        RETURN;
    END IF;
    CREATE TEMP TABLE IF NOT EXISTS import_dev (
        device_id text PRIMARY KEY, owned boolean NOT NULL, reason text, in_synapse boolean NOT NULL,
        had_state boolean NOT NULL, fallbacks jsonb NOT NULL DEFAULT '{}');
    CREATE TEMP TABLE IF NOT EXISTS import_seen_otk (
        device_id text, algorithm text, key_id text, PRIMARY KEY (device_id, algorithm, key_id));
    CREATE TEMP TABLE IF NOT EXISTS import_ver (
        version bigint PRIMARY KEY, mode text NOT NULL, synapse_etag bigint, old_etag bigint,
        changed boolean NOT NULL DEFAULT false);
    CREATE TEMP TABLE IF NOT EXISTS import_seen_session (
        version bigint, room_id text COLLATE "C", session_id text COLLATE "C",
        PRIMARY KEY (version, room_id, session_id));
    CREATE TEMP TABLE IF NOT EXISTS import_counts (
        tbl text NOT NULL, outcome text NOT NULL, reason text NOT NULL DEFAULT '', n bigint NOT NULL)
       ;
    -- device-list changes to record at the very end (the stream's ordering lock is then held only until the commit)
    CREATE TEMP TABLE IF NOT EXISTS import_changes (device_id text, audience text);
    CREATE TEMP TABLE IF NOT EXISTS import_user (
        reimport boolean NOT NULL, xsign_owned boolean NOT NULL, xsign jsonb NOT NULL, changed boolean NOT NULL)
       ;
END $$;

-- plpgsql: the temporary table it writes exists only once mx_import_prepare ran
CREATE OR REPLACE FUNCTION mx_import_count(p_tbl text, p_outcome text, p_reason text, p_n bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_n > 0 THEN
        INSERT INTO import_counts (tbl, outcome, reason, n) VALUES (p_tbl, p_outcome, p_reason, p_n);
    END IF;
END $$;

-- p_doc: {"devices": [{"d", "name", "keys"}], "fallbacks": [{"d", "alg", "id", "key", "used"}],
--         "xsign": [{"usage", "pk", "key"}] (every generation, oldest first), "sigs": [{"t", "su", "sk", "sig"}],
--         "versions": [{"v", "alg", "auth", "deleted", "etag"}]}
-- A device with "keys": null exists in Synapse but brings no usable device keys (the importer said why).
CREATE OR REPLACE FUNCTION mx_import_begin(p_user text, p_doc jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    u import_synapse_users;
    reimport boolean;
    user_changed boolean;
    d record;
    old record;
    k record;
    f record;
    v record;
    st import_synapse_backups;
    xsign_owned boolean;
    xsign_left jsonb;
    wrote_identity boolean := false;
    foreign_backup boolean;
    n bigint;
    n2 bigint;
BEGIN
    DELETE FROM import_dev;
    DELETE FROM import_seen_otk;
    DELETE FROM import_ver;
    DELETE FROM import_seen_session;
    DELETE FROM import_counts;
    DELETE FROM import_changes;
    DELETE FROM import_user;
    -- Uploads of this user's cross-signing keys and of its existing devices wait for this transaction.
    PERFORM pg_advisory_xact_lock(72836, hashtext(p_user));
    PERFORM 1 FROM device_keys WHERE user_id = p_user ORDER BY device_id FOR UPDATE;
    SELECT * INTO u FROM import_synapse_users WHERE user_id = p_user;
    reimport := FOUND;

    -- Devices: which the import owns (see the top of this file).
    INSERT INTO import_dev (device_id, owned, reason, in_synapse, had_state, fallbacks)
    SELECT COALESCE(x.device_id, s.device_id),
           CASE WHEN s.device_id IS NOT NULL THEN
                    NOT EXISTS (SELECT 1 FROM device_list_changes c WHERE c.user_id = p_user
                                AND c.device_id = s.device_id AND c.stream_id > s.stream_id)
                ELSE dk.device_id IS NULL OR COALESCE(dk.keys_json = x.keys, false) END,
           CASE WHEN s.device_id IS NOT NULL THEN 'device changed in mxkeys since the last import'
                ELSE 'device uploaded to mxkeys itself' END,
           x.device_id IS NOT NULL, s.device_id IS NOT NULL, COALESCE(s.fallbacks, '{}')
    FROM (SELECT e ->> 'd' AS device_id, NULLIF(e -> 'keys', 'null') - 'unsigned' AS keys
          FROM jsonb_array_elements(p_doc -> 'devices') e) x
    FULL JOIN (SELECT * FROM import_synapse_devices WHERE user_id = p_user) s ON s.device_id = x.device_id
    LEFT JOIN device_keys dk ON dk.user_id = p_user AND dk.device_id = COALESCE(x.device_id, s.device_id);

    FOR d IN SELECT e ->> 'd' AS device_id, e ->> 'name' AS name, NULLIF(e -> 'keys', 'null') - 'unsigned' AS keys,
                    p.owned, p.reason, p.had_state
             FROM jsonb_array_elements(p_doc -> 'devices') e JOIN import_dev p ON p.device_id = e ->> 'd'
             ORDER BY 1
    LOOP
        IF d.keys IS NULL THEN
            CONTINUE; -- counted by the importer
        END IF;
        IF NOT d.owned THEN
            PERFORM mx_import_count('device_keys', 'skipped', d.reason, 1);
            CONTINUE;
        END IF;
        SELECT keys_json, display_name INTO old FROM device_keys WHERE user_id = p_user AND device_id = d.device_id;
        IF NOT FOUND THEN
            INSERT INTO device_keys (user_id, device_id, keys_json, display_name)
            VALUES (p_user, d.device_id, d.keys, d.name);
            PERFORM mx_device_keys_replaced(p_user, d.device_id); -- a reused device id inherits no signatures
        ELSIF old.keys_json IS DISTINCT FROM d.keys OR old.display_name IS DISTINCT FROM d.name THEN
            UPDATE device_keys SET keys_json = d.keys, display_name = d.name
            WHERE user_id = p_user AND device_id = d.device_id;
            IF (old.keys_json - 'signatures') IS DISTINCT FROM (d.keys - 'signatures') THEN
                PERFORM mx_device_keys_replaced(p_user, d.device_id);
            END IF;
        ELSE
            PERFORM mx_import_count('device_keys', 'unchanged', '', 1);
            CONTINUE;
        END IF;
        PERFORM mx_import_count('device_keys', 'written', '', 1);
        IF reimport THEN
            INSERT INTO import_changes VALUES (d.device_id, NULL);
        END IF;
    END LOOP;

    -- Devices the import created that Synapse no longer has: deleted there, so deleted here (with their keys).
    FOR d IN SELECT device_id FROM import_dev WHERE NOT in_synapse AND had_state ORDER BY 1 LOOP
        IF (SELECT owned FROM import_dev WHERE device_id = d.device_id) THEN
            PERFORM mx_delete_devices(p_user, d.device_id);
            PERFORM mx_import_count('device_keys', 'removed', 'device deleted in Synapse', 1);
        ELSE
            PERFORM mx_import_count('device_keys', 'skipped', 'deleted in Synapse, changed in mxkeys', 1);
        END IF;
        DELETE FROM import_synapse_devices WHERE user_id = p_user AND device_id = d.device_id;
    END LOOP;

    -- Fallback keys of owned devices.
    FOR f IN SELECT e ->> 'd' AS device_id, e ->> 'alg' AS algorithm, e ->> 'id' AS key_id, e -> 'key' AS key_json,
                    (e ->> 'used')::boolean AS used, p.owned, p.reason, p.fallbacks ->> (e ->> 'alg') AS left_id
             FROM jsonb_array_elements(p_doc -> 'fallbacks') e LEFT JOIN import_dev p ON p.device_id = e ->> 'd'
             ORDER BY 1, 2
    LOOP
        IF NOT COALESCE(f.owned, false) THEN
            PERFORM mx_import_count('fallback_keys', 'skipped', COALESCE(f.reason, 'device not imported'), 1);
            CONTINUE;
        END IF;
        SELECT key_id, key_json, used INTO old FROM fallback_keys
        WHERE user_id = p_user AND device_id = f.device_id AND algorithm = f.algorithm FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
            VALUES (p_user, f.device_id, f.algorithm, f.key_id, f.key_json, f.used);
        ELSIF old.key_id = f.key_id AND mx_key_content(old.key_json) = mx_key_content(f.key_json) THEN
            IF old.used OR NOT f.used THEN
                PERFORM mx_import_count('fallback_keys', 'unchanged', '', 1);
                UPDATE import_dev SET fallbacks = fallbacks || jsonb_build_object(f.algorithm, f.key_id)
                WHERE device_id = f.device_id;
                CONTINUE;
            END IF;
            UPDATE fallback_keys SET used = true
            WHERE user_id = p_user AND device_id = f.device_id AND algorithm = f.algorithm;
        ELSIF old.key_id = f.left_id THEN
            UPDATE fallback_keys SET key_id = f.key_id, key_json = f.key_json, used = f.used
            WHERE user_id = p_user AND device_id = f.device_id AND algorithm = f.algorithm;
        ELSE
            PERFORM mx_import_count('fallback_keys', 'skipped', 'fallback key uploaded to mxkeys itself', 1);
            CONTINUE;
        END IF;
        PERFORM mx_import_count('fallback_keys', 'written', '', 1);
        UPDATE import_dev SET fallbacks = fallbacks || jsonb_build_object(f.algorithm, f.key_id)
        WHERE device_id = f.device_id;
    END LOOP;

    -- Cross-signing keys: the newest generation of each usage is the current key; every generation goes to the
    -- history.
    user_changed := reimport AND EXISTS (SELECT 1 FROM device_list_changes c WHERE c.user_id = p_user
                                         AND c.device_id IS NULL AND c.stream_id > u.stream_id);
    xsign_owned := NOT user_changed;
    xsign_left := COALESCE(u.xsign, '{}');
    FOR k IN SELECT DISTINCT ON (e ->> 'usage') e ->> 'usage' AS usage, e ->> 'pk' AS public_key, e -> 'key' AS key_json
             FROM jsonb_array_elements(p_doc -> 'xsign') WITH ORDINALITY a(e, ord)
             ORDER BY e ->> 'usage', ord DESC
    LOOP
        SELECT public_key, key_json INTO old FROM cross_signing_keys WHERE user_id = p_user AND usage = k.usage;
        IF FOUND AND old.key_json = k.key_json THEN
            PERFORM mx_import_count('cross_signing_keys', 'unchanged', '', 1);
            xsign_left := xsign_left || jsonb_build_object(k.usage, k.public_key);
            CONTINUE;
        END IF;
        IF user_changed OR (FOUND AND old.public_key IS DISTINCT FROM xsign_left ->> k.usage) THEN
            PERFORM mx_import_count('cross_signing_keys', 'skipped', CASE WHEN user_changed
                THEN 'cross-signing changed in mxkeys since the last import' ELSE 'key uploaded to mxkeys itself' END, 1);
            xsign_owned := false;
            CONTINUE;
        END IF;
        PERFORM mx_xsign_set_current(p_user, k.usage, CASE WHEN FOUND THEN old.public_key END, k.public_key,
                                     k.key_json); -- as a replacement upload does
        PERFORM mx_import_count('cross_signing_keys', 'written', '', 1);
        xsign_left := xsign_left || jsonb_build_object(k.usage, k.public_key);
        IF reimport THEN
            INSERT INTO import_changes VALUES (NULL, CASE WHEN k.usage = 'user_signing' THEN p_user END);
        END IF;
    END LOOP;
    -- History (append-only): generations not yet there, oldest first; added_at is the time of the import.
    INSERT INTO cross_signing_keys_history (user_id, usage, public_key, key_json, added_at)
    SELECT p_user, e ->> 'usage', e ->> 'pk', e -> 'key', clock_timestamp()
    FROM jsonb_array_elements(p_doc -> 'xsign') WITH ORDINALITY a(e, ord)
    WHERE NOT EXISTS (SELECT 1 FROM cross_signing_keys_history h WHERE h.user_id = p_user
                      AND h.usage = e ->> 'usage' AND h.public_key = e ->> 'pk' AND h.key_json = e -> 'key')
      AND (e ->> 'usage') IN (SELECT usage FROM cross_signing_keys WHERE user_id = p_user
                              AND public_key = xsign_left ->> usage)
    ORDER BY ord;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM mx_import_count('cross_signing_keys_history', 'written', '', n);

    -- Signatures on this user's keys, added onto the keys mxkeys holds, never replacing one.
    WITH input AS (
        SELECT DISTINCT ON (e ->> 't', e ->> 'su', e ->> 'sk') e ->> 't' AS t, e ->> 'su' AS su, e ->> 'sk' AS sk,
               e ->> 'sig' AS sig
        FROM jsonb_array_elements(p_doc -> 'sigs') e
        ORDER BY e ->> 't', e ->> 'su', e ->> 'sk'),
    placed AS (
        SELECT i.*, EXISTS (SELECT 1 FROM device_keys dk WHERE dk.user_id = p_user AND dk.device_id = i.t)
                    OR EXISTS (SELECT 1 FROM cross_signing_keys ck WHERE ck.user_id = p_user AND ck.public_key = i.t)
                    AS target_held
        FROM input i),
    ins AS (
        INSERT INTO cross_signatures (target_user, target_key_id, signer_user, signer_key_id, signature)
        SELECT p_user, t, su, sk, sig FROM placed WHERE target_held
        ON CONFLICT DO NOTHING RETURNING 1)
    SELECT (SELECT count(*) FROM ins), count(*) FILTER (WHERE NOT target_held) INTO n, n2 FROM placed;
    PERFORM mx_import_count('cross_signatures', 'written', '', n);
    PERFORM mx_import_count('cross_signatures', 'skipped', 'signed key not held by mxkeys', n2);
    PERFORM mx_import_count('cross_signatures', 'unchanged', '',
                            (SELECT count(DISTINCT (e ->> 't', e ->> 'su', e ->> 'sk'))
                             FROM jsonb_array_elements(p_doc -> 'sigs') e) - n - n2);
    IF reimport AND n > 0 THEN
        INSERT INTO import_changes VALUES (NULL, NULL);
    END IF;
    INSERT INTO import_user VALUES (reimport, xsign_owned, xsign_left, false);

    -- Backup versions: created with Synapse's version ids, so no id is ever reused and the current one stays.
    foreign_backup := EXISTS (SELECT 1 FROM backup_versions b WHERE b.user_id = p_user AND NOT EXISTS (
        SELECT 1 FROM import_synapse_backups s WHERE s.user_id = p_user AND s.version = b.version));
    FOR v IN SELECT (e ->> 'v')::bigint AS version, e ->> 'alg' AS algorithm, e -> 'auth' AS auth_data,
                    (e ->> 'deleted')::boolean AS deleted, (e ->> 'etag')::bigint AS etag
             FROM jsonb_array_elements(p_doc -> 'versions') e ORDER BY 1
    LOOP
        IF foreign_backup THEN
            INSERT INTO import_ver (version, mode) VALUES (v.version, 'skip');
            PERFORM mx_import_count('backup_versions', 'skipped', 'user has a backup created in mxkeys itself', 1);
            CONTINUE;
        END IF;
        SELECT * INTO old FROM backup_versions WHERE user_id = p_user AND version = v.version FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO backup_versions (user_id, version, algorithm, auth_data, etag, count, deleted)
            VALUES (p_user, v.version, v.algorithm, CASE WHEN v.deleted THEN '{}' ELSE v.auth_data END,
                    COALESCE(v.etag, 0), 0, v.deleted);
            INSERT INTO import_ver (version, mode, synapse_etag, old_etag, changed)
            VALUES (v.version, 'new', v.etag, NULL, true);
            PERFORM mx_import_count('backup_versions', 'written', '', 1);
            CONTINUE;
        END IF;
        SELECT * INTO st FROM import_synapse_backups WHERE user_id = p_user AND version = v.version;
        IF old.etag <> st.etag OR old.auth_data <> st.auth_data OR old.deleted <> st.deleted THEN
            INSERT INTO import_ver (version, mode) VALUES (v.version, 'skip');
            PERFORM mx_import_count('backup_versions', 'skipped', 'backup changed in mxkeys since the last import', 1);
        -- Synapse moves the etag with every change of the sessions (from NULL too: an old version never written
        -- since etags exist keeps NULL)
        ELSIF st.synapse_etag IS NOT DISTINCT FROM v.etag AND st.deleted = v.deleted
              AND (v.deleted OR st.auth_data = v.auth_data) THEN
            INSERT INTO import_ver (version, mode, synapse_etag, old_etag) VALUES (v.version, 'same', v.etag, old.etag);
            PERFORM mx_import_count('backup_versions', 'unchanged', '', 1);
        ELSE
            UPDATE backup_versions SET auth_data = CASE WHEN v.deleted THEN '{}' ELSE v.auth_data END,
                                       deleted = v.deleted, algorithm = v.algorithm
            WHERE user_id = p_user AND version = v.version;
            INSERT INTO import_ver (version, mode, synapse_etag, old_etag, changed)
            VALUES (v.version, 'resync', v.etag, old.etag,
                    old.deleted <> v.deleted OR old.auth_data <> (CASE WHEN v.deleted THEN '{}' ELSE v.auth_data END));
            -- counted by mx_import_finish, once the sessions tell whether anything changed
        END IF;
    END LOOP;
END $$;

-- p_rows: [[device, algorithm, key id, key], ...] in Synapse's upload order.
CREATE OR REPLACE FUNCTION mx_import_otks(p_user text, p_rows jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    c record;
BEGIN
    -- The keys mxkeys already holds for these devices are read once and hash-joined: a per-row look-up can be
    -- planned on the FIFO index (same leading columns) and then reads every key of the device for each row.
    WITH input AS (
        SELECT r ->> 0 AS d, r ->> 1 AS alg, r ->> 2 AS kid, r -> 3 AS key, ord
        FROM jsonb_array_elements(p_rows) WITH ORDINALITY x(r, ord)),
    held AS MATERIALIZED (
        SELECT o.device_id, o.algorithm, o.key_id, o.key_json FROM one_time_keys o
        WHERE o.user_id = p_user AND o.device_id IN (SELECT DISTINCT d FROM input)),
    gone AS MATERIALIZED (
        SELECT ck.device_id, ck.algorithm, ck.key_id FROM claimed_one_time_keys ck
        WHERE ck.user_id = p_user AND ck.device_id IN (SELECT DISTINCT d FROM input)),
    classified AS MATERIALIZED (
        SELECT i.*, COALESCE(p.owned, false) AS owned, COALESCE(p.had_state, false) AS had_state,
               g.key_id IS NOT NULL AS claimed, h.key_json AS existing
        FROM input i
        LEFT JOIN import_dev p ON p.device_id = i.d
        LEFT JOIN gone g ON g.device_id = i.d AND g.algorithm = i.alg AND g.key_id = i.kid
        LEFT JOIN held h ON h.device_id = i.d AND h.algorithm = i.alg AND h.key_id = i.kid),
    seen AS (
        INSERT INTO import_seen_otk SELECT d, alg, kid FROM classified WHERE owned AND had_state
        ON CONFLICT DO NOTHING),
    ins AS (
        INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, seq)
        SELECT p_user, d, alg, kid, key, nextval('import_synapse_otk_seq') - 4611686018427387904
        FROM (SELECT * FROM classified WHERE owned AND NOT claimed AND existing IS NULL ORDER BY ord) o
        ON CONFLICT DO NOTHING RETURNING 1)
    SELECT (SELECT count(*) FROM ins) AS written,
           count(*) FILTER (WHERE NOT owned) AS not_owned,
           count(*) FILTER (WHERE owned AND claimed) AS claimed,
           count(*) FILTER (WHERE owned AND NOT claimed AND existing IS NOT NULL
                            AND mx_key_content(existing) = mx_key_content(key)) AS same,
           count(*) FILTER (WHERE owned AND NOT claimed AND existing IS NOT NULL
                            AND mx_key_content(existing) IS DISTINCT FROM mx_key_content(key)) AS conflict
    INTO c FROM classified;
    PERFORM mx_import_count('one_time_keys', 'written', '', c.written);
    PERFORM mx_import_count('one_time_keys', 'unchanged', '', c.same);
    PERFORM mx_import_count('one_time_keys', 'skipped', 'device not imported (see device_keys)', c.not_owned);
    PERFORM mx_import_count('one_time_keys', 'skipped', 'already claimed through mxkeys', c.claimed);
    PERFORM mx_import_count('one_time_keys', 'skipped', 'another key with this id in mxkeys', c.conflict);
END $$;

-- p_rows: [[version, room, session, first_message_index, forwarded_count, is_verified, session_data], ...].
CREATE OR REPLACE FUNCTION mx_import_sessions(p_user text, p_rows jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    c record;
BEGIN
    WITH input AS (
        SELECT (r ->> 0)::bigint AS v, r ->> 1 AS room, r ->> 2 AS sess, (r ->> 3)::bigint AS fmi,
               (r ->> 4)::bigint AS fc, (r ->> 5)::boolean AS verified, r -> 6 AS data
        FROM jsonb_array_elements(p_rows) r),
    classified AS (
        SELECT i.*, COALESCE(w.mode, 'skip') AS mode,
               EXISTS (SELECT 1 FROM backup_versions b WHERE b.user_id = p_user AND b.version = i.v AND b.deleted)
                   AS deleted
        FROM input i LEFT JOIN import_ver w ON w.version = i.v),
    seen AS (
        INSERT INTO import_seen_session SELECT v, room, sess FROM classified WHERE mode = 'resync' AND NOT deleted
        ON CONFLICT DO NOTHING),
    up AS (
        INSERT INTO backup_sessions AS b (user_id, version, room_id, session_id, first_message_index,
                                          forwarded_count, is_verified, session_data)
        SELECT p_user, v, room, sess, fmi, fc, verified, data FROM classified
        WHERE mode IN ('new', 'resync') AND NOT deleted
        ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE
            SET first_message_index = EXCLUDED.first_message_index, forwarded_count = EXCLUDED.forwarded_count,
                is_verified = EXCLUDED.is_verified, session_data = EXCLUDED.session_data
            WHERE (b.first_message_index, b.forwarded_count, b.is_verified, b.session_data)
                  IS DISTINCT FROM (EXCLUDED.first_message_index, EXCLUDED.forwarded_count, EXCLUDED.is_verified,
                                    EXCLUDED.session_data)
        RETURNING b.version),
    marked AS (
        UPDATE import_ver SET changed = true WHERE version IN (SELECT version FROM up) RETURNING 1)
    SELECT (SELECT count(*) FROM up) AS written, (SELECT count(*) FROM marked) AS marked,
           count(*) FILTER (WHERE mode IN ('new', 'resync') AND NOT deleted) AS live,
           count(*) FILTER (WHERE mode = 'same') AS same,
           count(*) FILTER (WHERE mode = 'skip') AS skipped,
           count(*) FILTER (WHERE mode IN ('new', 'resync') AND deleted) AS of_deleted
    INTO c FROM classified;
    PERFORM mx_import_count('backup_sessions', 'written', '', c.written);
    PERFORM mx_import_count('backup_sessions', 'unchanged', '', c.live - c.written + c.same);
    PERFORM mx_import_count('backup_sessions', 'skipped', 'version not imported (see backup_versions)', c.skipped);
    PERFORM mx_import_count('backup_sessions', 'skipped', 'version deleted', c.of_deleted);
END $$;

-- Removals and bookkeeping; returns [[table, outcome, reason, n], ...] for this user.
CREATE OR REPLACE FUNCTION mx_import_finish(p_user text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    usr record;
    ch record;
    n bigint;
    result jsonb;
BEGIN
    SELECT * INTO usr FROM import_user;

    -- Imported one-time keys (seq < 0) that Synapse no longer has were claimed there: gone here, and never again
    -- claimable here even if a client re-uploads them.
    WITH gone AS (
        DELETE FROM one_time_keys o USING import_dev p
        WHERE o.user_id = p_user AND o.device_id = p.device_id AND p.owned AND p.had_state AND p.in_synapse
          AND o.seq < 0
          AND NOT EXISTS (SELECT 1 FROM import_seen_otk s WHERE s.device_id = o.device_id
                          AND s.algorithm = o.algorithm AND s.key_id = o.key_id)
        RETURNING o.device_id, o.algorithm, o.key_id),
    remembered AS (
        INSERT INTO claimed_one_time_keys SELECT p_user, device_id, algorithm, key_id FROM gone ON CONFLICT DO NOTHING)
    SELECT count(*) INTO n FROM gone;
    PERFORM mx_import_count('one_time_keys', 'removed', 'claimed or deleted in Synapse', n);

    -- Backup sessions of re-synchronised versions that Synapse no longer has.
    WITH gone AS (
        DELETE FROM backup_sessions b USING import_ver w
        WHERE b.user_id = p_user AND b.version = w.version AND w.mode = 'resync'
          AND NOT EXISTS (SELECT 1 FROM import_seen_session s WHERE s.version = b.version
                          AND s.room_id = b.room_id AND s.session_id = b.session_id)
        RETURNING b.version),
    marked AS (UPDATE import_ver SET changed = true WHERE version IN (SELECT version FROM gone))
    SELECT count(*) INTO n FROM gone;
    PERFORM mx_import_count('backup_sessions', 'removed', 'deleted in Synapse', n);

    -- count is exact; the etag moves exactly when what mxkeys serves changed: to Synapse's when that is newer than
    -- what mxkeys served, else one past it.
    PERFORM mx_import_count('backup_versions', CASE WHEN changed THEN 'written' ELSE 'unchanged' END, '', 1)
    FROM import_ver WHERE mode = 'resync';

    UPDATE backup_versions b
    SET count = (SELECT count(*) FROM backup_sessions s WHERE s.user_id = p_user AND s.version = b.version),
        etag = CASE WHEN w.mode = 'new' THEN COALESCE(w.synapse_etag, 0)
                    WHEN COALESCE(w.synapse_etag, 0) > w.old_etag THEN w.synapse_etag
                    ELSE w.old_etag + 1 END
    FROM import_ver w
    WHERE b.user_id = p_user AND b.version = w.version AND w.mode IN ('new', 'resync') AND w.changed;

    INSERT INTO import_synapse_backups (user_id, version, synapse_etag, etag, auth_data, deleted)
    SELECT p_user, b.version, w.synapse_etag, b.etag, b.auth_data, b.deleted
    FROM import_ver w JOIN backup_versions b ON b.user_id = p_user AND b.version = w.version
    WHERE w.mode IN ('new', 'resync', 'same')
    ON CONFLICT (user_id, version) DO UPDATE SET synapse_etag = EXCLUDED.synapse_etag, etag = EXCLUDED.etag,
        auth_data = EXCLUDED.auth_data, deleted = EXCLUDED.deleted;

    -- Last: the changes this run made (the stream's ordering lock is held from here to the commit).
    FOR ch IN SELECT DISTINCT device_id, audience FROM import_changes ORDER BY 1, 2 LOOP
        PERFORM mx_record_device_change(p_user, ch.device_id, ch.audience);
    END LOOP;

    INSERT INTO import_synapse_devices (user_id, device_id, stream_id, fallbacks)
    SELECT p_user, p.device_id,
           COALESCE((SELECT max(c.stream_id) FROM device_list_changes c
                     WHERE c.user_id = p_user AND c.device_id = p.device_id), 0),
           p.fallbacks
    FROM import_dev p WHERE p.owned AND p.in_synapse
    ON CONFLICT (user_id, device_id) DO UPDATE SET stream_id = EXCLUDED.stream_id, fallbacks = EXCLUDED.fallbacks;

    IF usr.xsign_owned OR NOT usr.reimport THEN
        INSERT INTO import_synapse_users (user_id, stream_id, xsign)
        VALUES (p_user, COALESCE((SELECT max(c.stream_id) FROM device_list_changes c
                                  WHERE c.user_id = p_user AND c.device_id IS NULL), 0), usr.xsign)
        ON CONFLICT (user_id) DO UPDATE SET stream_id = EXCLUDED.stream_id, xsign = EXCLUDED.xsign,
                                            imported_at = now();
    END IF;

    SELECT COALESCE(jsonb_agg(jsonb_build_array(tbl, outcome, reason, total)), '[]') INTO result
    FROM (SELECT c.tbl, c.outcome, c.reason, sum(c.n) AS total FROM import_counts c GROUP BY 1, 2, 3) t;
    RETURN result;
END $$;

-- After a run: mxkeys' device-list stream ids continue past Synapse's position (never backwards), so an id mxkeys
-- hands out after the cut-over is never one Synapse used.
CREATE OR REPLACE FUNCTION mx_import_stream_position(p_synapse_position bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    cur bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7283510001);
    SELECT last_value INTO cur FROM device_list_stream_seq;
    IF p_synapse_position > cur THEN
        PERFORM setval('device_list_stream_seq', p_synapse_position);
        RETURN p_synapse_position;
    END IF;
    RETURN cur;
END $$;
