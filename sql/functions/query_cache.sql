-- The /keys/query cache of every mxkeysd (include/mxkeys/query_cache.h): what it stores per user, and the change
-- feed that keeps it exact.
--
-- The cache keeps, per user, the parts of a query answer that do not depend on who asks, and picks per viewer
-- among precomputed variants: a key carries the owner's signatures for everyone, and for each other signer one more
-- variant with that signer's signatures too (mx_signature_visible: a viewer sees their own signatures and the
-- owner's). So the answer is assembled from stored text, never parsed or re-encoded, and reads exactly as
-- mx_keys_query's.
--
-- The feed: every row change that can alter a user's answer (device keys and names, cross-signing keys, signatures
-- on the user's keys, an identity write in flight beside a homeserver) sends NOTIFY mxkeys_query_cache with the
-- user id, delivered to every listening instance when the transaction commits. Triggers rather than calls in each
-- writer: a writer added later (or the import, or a hand-made fix in psql) cannot forget it.
--
-- Applied at every start after the schema migrations, all families in one transaction (docs/ARCHITECTURE.md, "the
-- migration/function rule"): this file is the only definition of each function in it.

-- The stored parts of the answers about p_wanted's users (a JSON object keyed by user id, the values ignored), one
-- row per key and view: kind 'd' (a device: item its id, item_json the id as JSON text, body the device's JSON with
-- `unsigned`), 'm', 's', 'u' (master, self-signing, user-signing key: item its public key); signer '' for the view
-- anyone has, else the one signer who sees this variant. Ordered so that each user's rows, and each key's views,
-- are contiguous. With p_settle (beside a homeserver) and an identity write of one of the users in flight, only one
-- row instead: kind 'w', body the milliseconds to wait (mx_identity_pending_ms), as KEYS_QUERY_SETTLED does.
-- STABLE: everything reads the calling statement's snapshot.
CREATE OR REPLACE FUNCTION mx_keys_query_parts(p_wanted jsonb, p_settle boolean)
RETURNS TABLE (user_id text, kind text, item text, item_json text, signer text, body text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    wait_ms int;
BEGIN
    IF p_settle THEN
        wait_ms := mx_identity_pending_ms(p_wanted);
        IF wait_ms IS NOT NULL THEN
            RETURN QUERY SELECT NULL::text, 'w'::text, NULL::text, NULL::text, ''::text, wait_ms::text;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY
    WITH wanted AS MATERIALIZED (
        SELECT w AS user_id FROM jsonb_object_keys(p_wanted) w),
    -- {"<signer key id>": sig} per signed key and signer
    sigs AS MATERIALIZED (
        SELECT cs.target_user, cs.target_key_id, cs.signer_user,
               jsonb_object_agg(cs.signer_key_id, cs.signature) AS by_key
        FROM wanted w JOIN cross_signatures cs ON cs.target_user = w.user_id
        GROUP BY cs.target_user, cs.target_key_id, cs.signer_user),
    -- the views of each signed key: '' (anyone) and each signer other than the owner
    views AS MATERIALIZED (
        SELECT DISTINCT s.target_user, s.target_key_id, ''::text AS viewer FROM sigs s
        UNION
        SELECT s.target_user, s.target_key_id, s.signer_user FROM sigs s WHERE s.signer_user <> s.target_user),
    -- {"<signer user>": {...}} that each view sees
    extra AS MATERIALIZED (
        SELECT v.target_user, v.target_key_id, v.viewer, jsonb_object_agg(s.signer_user, s.by_key) AS extra
        FROM views v
        JOIN sigs s ON s.target_user = v.target_user AND s.target_key_id = v.target_key_id
                   AND mx_signature_visible(CASE WHEN v.viewer = '' THEN v.target_user ELSE v.viewer END,
                                            s.signer_user, s.target_user)
        GROUP BY v.target_user, v.target_key_id, v.viewer)
    SELECT dk.user_id, 'd'::text, dk.device_id, to_json(dk.device_id)::text, COALESCE(v.viewer, ''),
           mx_json_with_member(
               CASE WHEN e.extra IS NULL THEN dk.keys_text ELSE mx_merge_signatures(dk.keys_json, e.extra)::text END,
               'unsigned',
               CASE WHEN dk.display_name IS NULL THEN '{}'
                    ELSE '{"device_display_name": ' || to_json(dk.display_name)::text || '}' END)
    FROM wanted w
    JOIN device_keys dk ON dk.user_id = w.user_id
    LEFT JOIN views v ON v.target_user = dk.user_id AND v.target_key_id = dk.device_id
    LEFT JOIN extra e ON e.target_user = dk.user_id AND e.target_key_id = dk.device_id AND e.viewer = v.viewer
    UNION ALL
    SELECT k.user_id, CASE k.usage WHEN 'master' THEN 'm' WHEN 'self_signing' THEN 's' ELSE 'u' END, k.public_key,
           NULL::text, COALESCE(v.viewer, ''),
           CASE WHEN e.extra IS NULL THEN k.key_text ELSE mx_merge_signatures(k.key_json, e.extra)::text END
    FROM wanted w
    JOIN cross_signing_keys k ON k.user_id = w.user_id
    LEFT JOIN views v ON v.target_user = k.user_id AND v.target_key_id = k.public_key
    LEFT JOIN extra e ON e.target_user = k.user_id AND e.target_key_id = k.public_key AND e.viewer = v.viewer
    ORDER BY 1, 2, 3, 5;
END $$;

-- The feed, for tables keyed by user_id (device_keys, cross_signing_keys, identity_writes_pending). NOTIFY folds
-- identical payloads of one transaction into one, so a statement touching many rows of a user costs one message.
CREATE OR REPLACE FUNCTION mx_query_cache_notify_user() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('mxkeys_query_cache', OLD.user_id);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('mxkeys_query_cache', NEW.user_id);
    END IF;
    RETURN NULL;
END $$;

-- ... and for cross_signatures, whose answer is the target user's.
CREATE OR REPLACE FUNCTION mx_query_cache_notify_target() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('mxkeys_query_cache', OLD.target_user);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('mxkeys_query_cache', NEW.target_user);
    END IF;
    RETURN NULL;
END $$;

-- The triggers themselves (created once; CREATE OR REPLACE TRIGGER would take a lock on every start for nothing).
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('device_keys', 'mx_query_cache_notify_user'),
                                   ('cross_signing_keys', 'mx_query_cache_notify_user'),
                                   ('identity_writes_pending', 'mx_query_cache_notify_user'),
                                   ('cross_signatures', 'mx_query_cache_notify_target')) v(tab, fn) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t.tab::regclass
                       AND tgname = t.tab || '_query_cache_feed') THEN
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION %I()',
                           t.tab || '_query_cache_feed', t.tab, t.fn);
        END IF;
    END LOOP;
END $$;
