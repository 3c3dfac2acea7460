-- POST /keys/claim of one signed_curve25519 key from a random device, as mxkeys issues it: one statement.
-- Run claim_topup.sql first so the claims take one-time keys (the path mxkeys-bench measures), not fallback keys.
-- Variables (pgbench -D, from mxkeys-bench --pgbench-out): prefix server users devices.
\set u random(0, :users - 1)
\set d random(0, :devices - 1)
SELECT mx_keys_claim(('{"@' || :prefix || '-' || :u || ':' || :server || '":{"DEV' || :d
                      || '":"signed_curve25519"}}')::jsonb)::text;
