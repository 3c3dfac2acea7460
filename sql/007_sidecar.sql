-- Beside a homeserver (--auth homeserver): markers of identity writes in flight to the homeserver. Why queries wait
-- for them and how long a marker counts: sql/functions/sidecar.sql.
CREATE SEQUENCE identity_write_seq;
CREATE TABLE identity_writes_pending (
    user_id    text        NOT NULL,
    write_id   bigint      NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, write_id)
);
CREATE INDEX identity_writes_pending_by_write ON identity_writes_pending (write_id);
