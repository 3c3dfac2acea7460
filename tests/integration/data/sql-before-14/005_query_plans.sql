-- POST /keys/query as one set-based statement that writes the answer's JSON text directly.
--
-- The first version composed SQL-language functions (per device: visible signatures, then a merge) and built the
-- answer as jsonb. Two costs dominated, measured with pgbench on 10 users x 5 devices (bench/pgbench/query.sql):
--  * PostgreSQL plans a non-inlinable SQL function again on every execution of the calling statement and starts it
--    once per row. PL/pgSQL keeps the plan of its statement for the life of the connection: 534 -> 1760 tx/s.
--  * Building a 30 KB jsonb value from 50 stored jsonb objects, only to print it as text for the server, costs
--    three times what printing each stored object and joining the pieces as text does (1810 vs 5420 tx/s for the
--    device part alone).
-- So every piece below is text: stored objects are printed when they are written (generated columns), names
-- quoted with to_json, maps joined with string_agg; jsonb is only touched to merge in cross-signatures. Object keys
-- are unique by construction (jsonb_each of the request; primary keys of the tables). Together: 534 -> ~2600 tx/s,
-- 3.9 -> 0.74 ms for one query on an idle connection.
--
-- Semantics are those of 002/004 unchanged: users map to {} when they have no devices; a non-empty list selects
-- devices; every device carries `unsigned`; user_signing_keys only for the viewer. Visibility (spec,
-- "Cross-signing"): a viewer sees signatures made by their own keys and devices, and the owner's signatures on the
-- owner's keys; never those of a third user's user-signing key, not even on the viewer's own master key.

ALTER TABLE device_keys ADD COLUMN keys_text text GENERATED ALWAYS AS (keys_json::text) STORED;
ALTER TABLE cross_signing_keys ADD COLUMN key_text text GENERATED ALWAYS AS (key_json::text) STORED;

-- The text of a JSON object (as jsonb prints it) with one more member appended.
CREATE FUNCTION mx_json_with_member(obj_text text, name text, value_json text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN obj_text = '{}' THEN '{' ELSE left(obj_text, -1) || ', ' END
           || to_json(name)::text || ': ' || value_json || '}'
$$;

-- Braces around members already joined as text ("<name>": <value>, ...); {} when there are none (NULL).
CREATE FUNCTION mx_json_object_text(pairs text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT '{' || COALESCE(pairs, '') || '}' $$;

DROP FUNCTION mx_keys_query(text, jsonb);
DROP FUNCTION mx_query_device_keys(text, jsonb);
DROP FUNCTION mx_query_cross_signing_keys(text, jsonb, text);
DROP FUNCTION mx_visible_device_signatures(text, text, text);
DROP FUNCTION mx_visible_signatures(text, text, text);
CREATE FUNCTION mx_keys_query(p_viewer text, p_wanted jsonb) RETURNS text
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
                  WHERE cs.signer_user IN (p_viewer, cs.target_user)
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
