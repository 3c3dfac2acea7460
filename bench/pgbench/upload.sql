-- POST /keys/upload of fresh signed one-time keys as mxkeys issues it: one statement. Each transaction uploads to a
-- device of its own (:tag, client, counter), so the per-device cap never refuses it, and makes the key ids fresh
-- by replacing the template's KEYID_ prefix. The device keys are left out (NULL): in mxkeys-bench's upload they are
-- an identical re-upload, which the statement answers from one primary-key read.
-- Variables (pgbench -D): prefix server (from mxkeys-bench --pgbench-out), otks (the template: run.sh writes 50 signed
-- keys of the real size), tag (unique per run) and k=0.
\set k :k + 1
SELECT mx_keys_upload('@' || :prefix || '-0:' || :server, 'PGB' || :tag || '-' || :client_id || '-' || :k, NULL,
    replace(:otks, 'KEYID_', :k || '_')::jsonb, NULL, 500)::text;
