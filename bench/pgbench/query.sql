-- POST /keys/query as mxkeys issues it: one statement, the viewer and the wanted map (:qusers users from a random
-- start, every device: []) as text that the statement parses to jsonb, as the server's parameter is.
-- Variables (pgbench -D, from mxkeys-bench --pgbench-out): prefix server users qusers.
\set u random(0, :users - 1)
\set v random(0, :users - 1)
SELECT mx_keys_query('@' || :prefix || '-' || :v || ':' || :server,
    (SELECT '{' || string_agg('"@' || :prefix || '-' || ((:u + i) % :users) || ':' || :server || '":[]', ',') || '}'
     FROM generate_series(0, :qusers - 1) i)::jsonb)::text;
