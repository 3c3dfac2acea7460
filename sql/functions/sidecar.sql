-- Beside a homeserver (--auth homeserver): identity writes in flight, /sync counts, token revocations (tables: sql/007,
-- sql/008).
--
-- The homeserver announces a device-list change the moment it stores the keys, and the clients it wakes query
-- mxkeys at once; a write the homeserver refuses (the user-interactive-auth 401 of a cross-signing reset, an error)
-- must never be seen at all. So an identity write leaves a marker (identity_writes_pending) before it is forwarded,
-- and settles it in the same transaction that stores the keys once the homeserver said yes (or drops it otherwise).
-- A query about a user with a live marker waits until the marker is gone, rather than answer with keys that are
-- about to change or may never exist. Markers expire (the writer crashed, the database went away): a writer may
-- settle only before expires_at, readers honour a marker until expires_at + 1 s, so a settle that passed its check
-- still commits before any reader stops waiting.
--
-- Applied at every start after the schema migrations, all families in one transaction (docs/ARCHITECTURE.md, "the
-- migration/function rule"): this file is the only definition of each function in it.

-- Marks an identity write concerning p_users (the writer, and users whose keys it signs); returns its id.
CREATE OR REPLACE FUNCTION mx_identity_begin(p_users text[], p_ttl_ms int) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    id bigint := nextval('identity_write_seq');
BEGIN
    -- The marker need not survive a crash of the database (it only makes queries wait, and nothing it guards is
    -- stored until the settle, which commits durably): its transaction does not wait for the WAL flush, which
    -- halves the flushes of an identity write. Nor a failover: this commit does not wait for a synchronous standby
    -- either, but a marker the promoted server lacks is one that expired, and mx_identity_settle refuses to store the
    -- write then (503; the client sends it again). So no acknowledged write depends on it. It must run in a
    -- transaction of its own (or with reads only): set_config(..., true) covers the whole transaction.
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM identity_writes_pending
    WHERE user_id = ANY (p_users) AND expires_at < clock_timestamp() - interval '1 minute';
    INSERT INTO identity_writes_pending (user_id, write_id, expires_at)
    SELECT u, id, clock_timestamp() + make_interval(secs => p_ttl_ms / 1000.0)
    FROM (SELECT DISTINCT u FROM unnest(p_users) u) d;
    RETURN id;
END $$;

-- The device keys of an upload need the homeserver only when they differ from what is stored (what
-- mx_keys_upload compares): then a write is begun and its id returned; NULL when they are the stored ones.
CREATE OR REPLACE FUNCTION mx_identity_begin_device_keys(p_user text, p_device text, p_device_keys jsonb, p_ttl_ms int)
RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT keys_json FROM device_keys WHERE user_id = p_user AND device_id = p_device)
       IS NOT DISTINCT FROM (p_device_keys - 'unsigned') THEN
        RETURN NULL;
    END IF;
    RETURN mx_identity_begin(ARRAY[p_user], p_ttl_ms);
END $$;

-- First statement of the transaction that stores a write the homeserver accepted: refuses (and so rolls back the
-- rest) when the marker expired meanwhile, since a reader may already have stopped waiting for it.
CREATE OR REPLACE FUNCTION mx_identity_settle(p_write bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM identity_writes_pending WHERE write_id = p_write AND expires_at > clock_timestamp();
    IF NOT FOUND THEN
        PERFORM mx_client_error(503, 'M_UNKNOWN',
            'the homeserver accepted this change, but too late for mxkeys to store it safely; send it again');
    END IF;
END $$;

-- A write the homeserver refused (or that failed): its marker goes, nothing else was written. A lost end (a crash, a
-- failover) leaves a marker that makes queries wait until it expires. Never with other writes in one transaction
-- (they would commit asynchronously too): a removal retried after its first try drops its marker with IDENTITY_DROP.
CREATE OR REPLACE FUNCTION mx_identity_end(p_write bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true); -- as for mx_identity_begin
    DELETE FROM identity_writes_pending WHERE write_id = p_write;
END $$;

-- Milliseconds a query about p_wanted's users (a JSON object keyed by user id) should wait for identity writes in
-- flight, or NULL when there are none. STABLE: called from the query's own statement, it reads the same snapshot.
CREATE OR REPLACE FUNCTION mx_identity_pending_ms(p_wanted jsonb) RETURNS int
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT ceil(extract(epoch FROM max(expires_at) + interval '1 second' - now()) * 1000)::int
            FROM identity_writes_pending
            WHERE user_id IN (SELECT jsonb_object_keys(p_wanted)) AND expires_at + interval '1 second' > now());
END $$;

-- The one-time key counts and the unused fallback key types of a device, as /sync reports them (JSON texts).
-- PL/pgSQL: its plans are kept for the connection's life (an SQL function that is not inlined is planned again on
-- every call, measured 105 us against 17 us).
CREATE OR REPLACE FUNCTION mx_sync_key_counts(p_user text, p_device text, OUT otk_counts text, OUT fallback_types text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    otk_counts := mx_otk_counts(p_user, p_device)::text;
    SELECT COALESCE(json_agg(algorithm ORDER BY algorithm), '[]')::text INTO fallback_types FROM fallback_keys
    WHERE user_id = p_user AND device_id = p_device AND NOT used;
END $$;

-- Records revoked access tokens (p_devices NULL: every device of the user) in token_revocations, the stream every
-- worker of every instance polls (src/auth/revocations.c); returns the newest entry's seq.
CREATE OR REPLACE FUNCTION mx_revoke_tokens(p_user text, p_devices text[]) RETURNS bigint
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
