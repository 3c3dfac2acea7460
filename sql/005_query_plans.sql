-- POST /keys/query writes its answer as text (mx_keys_query, sql/functions/keys.sql, says why and what it cost):
-- stored objects are printed once, when they are written. (Until issue 14 this file also dropped the composed
-- SQL-language query functions of 002/004 and created the set-based mx_keys_query in their place.)

ALTER TABLE device_keys ADD COLUMN keys_text text GENERATED ALWAYS AS (keys_json::text) STORED;
ALTER TABLE cross_signing_keys ADD COLUMN key_text text GENERATED ALWAYS AS (key_json::text) STORED;
