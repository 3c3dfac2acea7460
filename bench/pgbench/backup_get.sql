-- GET /room_keys/keys?version=V of a random user's whole backup: the rows and columns mxkeys streams, in its order.
-- mxkeys reads them as keyset pages of 2,000 rows (sql in include/mxkeys/sql/backup.def); this is the same read
-- as one statement, so the raw figure is, if anything, flattered.
-- Variables (pgbench -D): prefix server users version (from mxkeys-bench --pgbench-out).
\set u random(0, :users - 1)
SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data::text
FROM backup_sessions
WHERE user_id = '@' || :prefix || '-' || :u || ':' || :server AND version = :version::bigint
ORDER BY room_id, session_id;
