-- A generated database with Synapse's table layout (our own DDL: only the tables and columns `mxkeysd import
-- synapse` reads) for the import benchmark. psql -v users=N -v devices=D -v otks=K -v sessions=S -f synapse_gen.sql
-- gives N users with D devices each, K one-time keys per device, S backup sessions per user, one fallback key per
-- device, three cross-signing keys and D signatures per user. Keys are not real: import with --validation lenient
-- (or see README.md for the strict figure).
CREATE TABLE devices (user_id text NOT NULL, device_id text NOT NULL, display_name text, last_seen bigint, ip text,
                      user_agent text, hidden boolean DEFAULT false, UNIQUE (user_id, device_id));
CREATE TABLE e2e_device_keys_json (user_id text NOT NULL, device_id text NOT NULL, ts_added_ms bigint NOT NULL,
                                   key_json text NOT NULL, UNIQUE (user_id, device_id));
CREATE TABLE e2e_one_time_keys_json (user_id text NOT NULL, device_id text NOT NULL, algorithm text NOT NULL,
                                     key_id text NOT NULL, ts_added_ms bigint NOT NULL, key_json text NOT NULL);
CREATE TABLE e2e_fallback_keys_json (user_id text NOT NULL, device_id text NOT NULL, algorithm text NOT NULL,
                                     key_id text NOT NULL, key_json text NOT NULL, used boolean NOT NULL DEFAULT false,
                                     UNIQUE (user_id, device_id, algorithm));
CREATE TABLE e2e_cross_signing_keys (user_id text NOT NULL, keytype text NOT NULL, keydata text NOT NULL,
                                     stream_id bigint NOT NULL);
CREATE TABLE e2e_cross_signing_signatures (user_id text NOT NULL, key_id text NOT NULL, target_user_id text NOT NULL,
                                           target_device_id text NOT NULL, signature text NOT NULL);
CREATE TABLE e2e_room_keys_versions (user_id text NOT NULL, version bigint NOT NULL, algorithm text NOT NULL,
                                     auth_data text NOT NULL, deleted smallint NOT NULL DEFAULT 0, etag bigint);
CREATE TABLE e2e_room_keys (user_id text NOT NULL, room_id text NOT NULL, session_id text NOT NULL,
                            version bigint NOT NULL, first_message_index int, forwarded_count int, is_verified boolean,
                            session_data text NOT NULL);
CREATE TABLE device_lists_stream (stream_id bigint NOT NULL, user_id text NOT NULL, device_id text NOT NULL);

CREATE FUNCTION b64(seed text, len int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT left(replace(replace(encode(sha512(seed::bytea), 'base64'), E'\n', ''), '=', ''), len)
$$;

INSERT INTO devices (user_id, device_id, display_name)
SELECT format('@u%s:bench.test', u), format('D%s', d), format('device %s', d)
FROM generate_series(1, :users) u, generate_series(1, :devices) d;

INSERT INTO e2e_device_keys_json
SELECT user_id, device_id, 0, format(
    '{"algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"],"device_id":"%s","keys":{"curve25519:%s":"%s","ed25519:%s":"%s"},"signatures":{"%s":{"ed25519:%s":"%s"}},"user_id":"%s"}',
    device_id, device_id, b64(user_id || device_id || 'c', 43), device_id, b64(user_id || device_id || 'e', 43),
    user_id, device_id, b64(user_id || device_id || 's', 86), user_id)
FROM devices;

INSERT INTO e2e_one_time_keys_json
SELECT d.user_id, d.device_id, 'signed_curve25519', format('K%s', k), 1000 + k / 50, format(
    '{"key":"%s","signatures":{"%s":{"ed25519:%s":"%s"}}}', b64(d.user_id || d.device_id || k, 43), d.user_id,
    d.device_id, b64(d.user_id || d.device_id || k || 's', 86))
FROM devices d, generate_series(1, :otks) k;
ALTER TABLE e2e_one_time_keys_json ADD UNIQUE (user_id, device_id, algorithm, key_id);

INSERT INTO e2e_fallback_keys_json
SELECT user_id, device_id, 'signed_curve25519', 'F1', format(
    '{"fallback":true,"key":"%s","signatures":{"%s":{"ed25519:%s":"%s"}}}', b64(user_id || device_id || 'f', 43),
    user_id, device_id, b64(user_id || device_id || 'fs', 86)), device_id = 'D1'
FROM devices;

INSERT INTO e2e_cross_signing_keys
SELECT format('@u%s:bench.test', u), t.usage, format('{"keys":{"ed25519:%s":"%s"},"usage":["%s"],"user_id":"@u%s:bench.test"}',
       b64(u || t.usage, 43), b64(u || t.usage, 43), t.usage, u), u * 3 + t.n
FROM generate_series(1, :users) u, (VALUES (0, 'master'), (1, 'self_signing'), (2, 'user_signing')) t(n, usage);
CREATE UNIQUE INDEX ON e2e_cross_signing_keys (user_id, keytype, stream_id);

INSERT INTO e2e_cross_signing_signatures
SELECT user_id, 'ed25519:' || b64(substr(user_id, 3, strpos(user_id, ':') - 3) || 'self_signing', 43), user_id,
       device_id, b64(user_id || device_id || 'x', 86)
FROM devices;

INSERT INTO e2e_room_keys_versions
SELECT format('@u%s:bench.test', u), 1, 'm.megolm_backup.v1.curve25519-aes-sha2',
       format('{"public_key":"%s"}', b64(u || 'backup', 43)), 0, :sessions
FROM generate_series(1, :users) u;

INSERT INTO e2e_room_keys
SELECT format('@u%s:bench.test', u), format('!room%s:bench.test', s % 20), b64(u || 'session' || s, 43), 1, 0, 0, true,
       format('{"ciphertext":"%s","ephemeral":"%s","mac":"%s"}', b64(u || 'ct' || s, 86) || b64(u || 'ct2' || s, 86) ||
              b64(u || 'ct3' || s, 86), b64(u || 'ep' || s, 43), b64(u || 'mac' || s, 11))
FROM generate_series(1, :users) u, generate_series(1, :sessions) s;
CREATE UNIQUE INDEX ON e2e_room_keys (user_id, version, room_id, session_id);

INSERT INTO device_lists_stream SELECT row_number() OVER (), user_id, device_id FROM devices;
ANALYZE;
