-- Cross-signing keys and signatures, and the hooks device uploads and removals call into (tables: sql/004).
--
-- Applied at every start after the schema migrations, all families in one transaction (docs/ARCHITECTURE.md, "the
-- migration/function rule"): this file is the only definition of each function in it.

-- Signatures made on a device's previous keys no longer mean anything.
CREATE OR REPLACE FUNCTION mx_device_keys_replaced(p_user text, p_device text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM cross_signatures WHERE target_user = p_user AND target_key_id = p_device
$$;

-- A device id may not equal one of the user's cross-signing public keys (and the other way round).
CREATE OR REPLACE FUNCTION mx_device_id_forbidden(p_user text, p_device text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM cross_signing_keys WHERE user_id = p_user AND public_key = p_device)
$$;

-- Account deletion removes the cross-signing identity too.
CREATE OR REPLACE FUNCTION mx_user_deleted(p_user text) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM cross_signing_keys WHERE user_id = p_user;
    DELETE FROM cross_signatures WHERE target_user = p_user OR signer_user = p_user;
    DELETE FROM cross_signing_replacement WHERE user_id = p_user;
$$;

-- The stored keys the server needs to check a POST /keys/device_signing/upload: {"<usage>": key_json}, plus
-- "replacement_allowed" and "device_ids" (devices whose id equals one of the uploaded public keys).
CREATE OR REPLACE FUNCTION mx_xsign_upload_context(p_user text, p_public_keys jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'keys', (SELECT COALESCE(jsonb_object_agg(usage, key_json), '{}') FROM cross_signing_keys WHERE user_id = p_user),
        'replacement_allowed', EXISTS (SELECT 1 FROM cross_signing_replacement
                                       WHERE user_id = p_user AND allowed_until > now()),
        'device_ids', (SELECT COALESCE(jsonb_agg(device_id), '[]') FROM device_keys
                       WHERE user_id = p_user AND device_id IN (SELECT jsonb_array_elements_text(p_public_keys))))
$$;

-- The rule of a new current key for a usage, shared by uploads and the import: signatures on the key it replaces
-- (p_old_public_key; NULL when there was none), and those made by that key, are void; then the new key is current.
-- History and device-list announcements are the caller's.
CREATE OR REPLACE FUNCTION mx_xsign_set_current(p_user text, p_usage text, p_old_public_key text, p_public_key text,
                                                p_key_json jsonb) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM cross_signatures
    WHERE p_old_public_key IS NOT NULL AND target_user = p_user AND target_key_id = p_old_public_key;
    DELETE FROM cross_signatures
    WHERE p_old_public_key IS NOT NULL AND signer_user = p_user AND signer_key_id = 'ed25519:' || p_old_public_key;
    INSERT INTO cross_signing_keys (user_id, usage, public_key, key_json)
    VALUES (p_user, p_usage, p_public_key, p_key_json)
    ON CONFLICT (user_id, usage) DO UPDATE SET public_key = EXCLUDED.public_key, key_json = EXCLUDED.key_json;
$$;

-- POST /keys/device_signing/upload, after the server checked shapes, signatures and the replacement policy.
-- p_keys: {"master": key_json, "self_signing": ..., "user_signing": ...} (any subset). p_expect_master: the master
-- public key the checks were made against (NULL: none was stored); if it changed since, nothing is written.
CREATE OR REPLACE FUNCTION mx_xsign_upload(p_user text, p_keys jsonb, p_expect_master text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k record;
    old record;
    current_master text;
BEGIN
    PERFORM pg_advisory_xact_lock(72836, hashtext(p_user));
    SELECT public_key INTO current_master FROM cross_signing_keys WHERE user_id = p_user AND usage = 'master';
    IF current_master IS DISTINCT FROM p_expect_master THEN
        PERFORM mx_client_error(400, 'M_INVALID_PARAM',
                                'the master key changed while this upload was being checked; upload again');
    END IF;
    FOR k IN SELECT key AS usage, value AS key_json,
                    (SELECT e.value #>> '{}' FROM jsonb_each(value -> 'keys') e LIMIT 1) AS public_key
             FROM jsonb_each(p_keys) ORDER BY 1
    LOOP
        SELECT public_key, key_json INTO old FROM cross_signing_keys WHERE user_id = p_user AND usage = k.usage;
        IF FOUND AND old.key_json = k.key_json THEN
            CONTINUE;
        END IF;
        PERFORM mx_xsign_set_current(p_user, k.usage, CASE WHEN FOUND THEN old.public_key END, k.public_key,
                                     k.key_json);
        INSERT INTO cross_signing_keys_history (user_id, usage, public_key, key_json)
        VALUES (p_user, k.usage, k.public_key, k.key_json);
        -- master and self-signing keys concern everyone who shares a room with the user; user-signing only them
        PERFORM mx_record_device_change(p_user, NULL, CASE WHEN k.usage = 'user_signing' THEN p_user END);
    END LOOP;
    IF p_expect_master IS NOT NULL AND p_keys ? 'master' THEN
        DELETE FROM cross_signing_replacement WHERE user_id = p_user; -- a replacement closes the window
    END IF;
END $$;

-- Admin: open the replacement window. Returns false when the user has no master key.
CREATE OR REPLACE FUNCTION mx_xsign_allow_replacement(p_user text, p_window_ms bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM cross_signing_keys WHERE user_id = p_user AND usage = 'master') THEN
        RETURN false;
    END IF;
    INSERT INTO cross_signing_replacement (user_id, allowed_until)
    VALUES (p_user, now() + make_interval(secs => p_window_ms / 1000.0))
    ON CONFLICT (user_id) DO UPDATE SET allowed_until = EXCLUDED.allowed_until;
    RETURN true;
END $$;

-- What POST /keys/signatures/upload needs to verify: the caller's cross-signing keys and device keys, the
-- targets' current master keys and device keys. p_targets: {"<user>": ["<key id>", ...]}.
CREATE OR REPLACE FUNCTION mx_xsign_signatures_context(p_caller text, p_targets jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'caller_keys', (SELECT COALESCE(jsonb_object_agg(usage, key_json), '{}') FROM cross_signing_keys
                        WHERE user_id = p_caller),
        'caller_devices', (SELECT COALESCE(jsonb_object_agg(device_id, keys_json -> 'keys' ->> ('ed25519:' || device_id)), '{}')
                           FROM device_keys WHERE user_id = p_caller),
        'masters', (SELECT COALESCE(jsonb_object_agg(user_id, key_json), '{}') FROM cross_signing_keys
                    WHERE usage = 'master' AND user_id IN (SELECT jsonb_object_keys(p_targets))),
        'devices', (SELECT COALESCE(jsonb_object_agg(d.user_id || '|' || d.device_id, d.keys_json), '{}')
                    FROM device_keys d, jsonb_each(p_targets) t
                    WHERE d.user_id = t.key AND d.device_id IN (SELECT jsonb_array_elements_text(t.value))))
$$;

-- Stores verified signatures: p_sigs is a list of {target_user, target_key_id, signer_key_id, signature}, all made
-- by p_caller. Signatures on the caller's own keys are a change for everyone; on another user's keys only for the
-- signer.
CREATE OR REPLACE FUNCTION mx_xsign_store_signatures(p_caller text, p_sigs jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    INSERT INTO cross_signatures (target_user, target_key_id, signer_user, signer_key_id, signature)
    SELECT s ->> 'target_user', s ->> 'target_key_id', p_caller, s ->> 'signer_key_id', s ->> 'signature'
    FROM jsonb_array_elements(p_sigs) s
    ON CONFLICT (target_user, target_key_id, signer_user, signer_key_id) DO UPDATE SET signature = EXCLUDED.signature;
    FOR t IN SELECT DISTINCT s ->> 'target_user' AS target_user FROM jsonb_array_elements(p_sigs) s ORDER BY 1 LOOP
        PERFORM mx_record_device_change(t.target_user, NULL,
                                        CASE WHEN t.target_user = p_caller THEN NULL ELSE p_caller END);
    END LOOP;
END $$;
