-- /keys/claim (tables: sql/002).
--
-- Applied at every start after the schema migrations, all families in one transaction (docs/ARCHITECTURE.md, "the
-- migration/function rule"): this file is the only definition of each function in it.

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
CREATE OR REPLACE FUNCTION mx_keys_claim(p_wanted jsonb) RETURNS jsonb
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
