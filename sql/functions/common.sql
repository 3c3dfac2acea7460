-- Functions every family uses: client errors, the device-list stream, key identity, JSON pieces.
--
-- Applied at every start after the schema migrations, all families in one transaction (docs/ARCHITECTURE.md, "the
-- migration/function rule"): this file is the only definition of each function in it.

-- The one way SQL reports a client error: raised with SQLSTATE MXERR, MESSAGE the Matrix `error` text, DETAIL
-- "<status> <errcode>" and, when the answer carries more members than errcode and error (M_WRONG_ROOM_KEYS_VERSION's
-- current_version), " <JSON object of those members>". mx_call_db_error (src/http/call.c) turns it into the Matrix
-- error; the errcode must be in include/mxkeys/errors.h with that status, or the client gets a 500.
CREATE OR REPLACE FUNCTION mx_client_error(status int, errcode text, message text, extra jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'MXERR', MESSAGE = message,
        DETAIL = status::text || ' ' || errcode || COALESCE(' ' || extra::text, '');
END $$;

-- The same without extra members (no DEFAULT on the one above: a call with three arguments would then match both).
CREATE OR REPLACE FUNCTION mx_client_error(status int, errcode text, message text) RETURNS void
LANGUAGE sql AS $$ SELECT mx_client_error(status, errcode, message, NULL::jsonb) $$;

-- Records a device-list change. Stream ids are taken under a transaction-scoped lock so that they become visible
-- in order: a reader that saw id N can never later find a smaller id committed behind it.
CREATE OR REPLACE FUNCTION mx_record_device_change(p_user text, p_device text, p_audience text) RETURNS bigint
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
CREATE OR REPLACE FUNCTION mx_key_content(v jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(v) = 'object' THEN v - 'signatures' ELSE v END
$$;

-- Merges extra signatures {"<signer>": {"<key id>": sig}} into an object's `signatures`.
CREATE OR REPLACE FUNCTION mx_merge_signatures(obj jsonb, extra jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN extra IS NULL OR extra = '{}' THEN obj
           ELSE jsonb_set(obj, '{signatures}', COALESCE(obj -> 'signatures', '{}') ||
                   (SELECT jsonb_object_agg(e.signer, COALESCE(obj -> 'signatures' -> e.signer, '{}') || e.sigs)
                    FROM jsonb_each(extra) e(signer, sigs)))
           END
$$;

-- The text of a JSON object (as jsonb prints it) with one more member appended.
CREATE OR REPLACE FUNCTION mx_json_with_member(obj_text text, name text, value_json text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN obj_text = '{}' THEN '{' ELSE left(obj_text, -1) || ', ' END
           || to_json(name)::text || ': ' || value_json || '}'
$$;

-- Braces around members already joined as text ("<name>": <value>, ...); {} when there are none (NULL).
CREATE OR REPLACE FUNCTION mx_json_object_text(pairs text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT '{' || COALESCE(pairs, '') || '}' $$;
