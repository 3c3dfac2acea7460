-- psql script run before the claim runs (mxkeys-bench's, then pgbench's claim.sql): gives every device of the
-- population :per_device more one-time keys (copies of its own signed fallback key's content under new ids), so both
-- runs claim one-time keys, the path being compared, however fast they go.
-- psql variables: pattern (LIKE pattern of the population's user ids), tag, per_device.
INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json)
SELECT f.user_id, f.device_id, f.algorithm, 'pgb' || :'tag' || g, f.key_json - 'fallback'
FROM fallback_keys f, generate_series(1, :per_device) g
WHERE f.user_id LIKE :'pattern'
ORDER BY g, f.user_id, f.device_id;
-- Fresh statistics, or the planner may keep treating the table as the small one it was before the top-up.
ANALYZE one_time_keys;
