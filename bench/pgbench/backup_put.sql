-- PUT /room_keys/keys?version=V with the sessions of mxkeys-bench's backup-put (:rooms, the same encrypted
-- session data) to a random user, as mxkeys issues it: one statement. Each transaction lowers first_message_index
-- so that, as in mxkeys-bench, every write replaces the stored sessions instead of being a no-op.
-- Variables (pgbench -D): prefix server users version rooms (from mxkeys-bench --pgbench-out), start (a
-- first_message_index below anything written so far, within 32 bits: bench/scenarios.c, bench_index_start), clients
-- (pgbench -c) and k=0. Each transaction takes the next index below start, one per transaction over all clients.
\set u random(0, :users - 1)
\set k :k + 1
\set index :start - (:k - 1) * :clients - :client_id
SELECT mx_backup_put('@' || :prefix || '-' || :u || ':' || :server, :version::bigint,
    replace(:rooms, '"first_message_index":0,', '"first_message_index":' || :index || ',')::jsonb)::text;
