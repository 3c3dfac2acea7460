-- Server-side room-key backup. `etag` and `count` live in the version row and change in the same transaction as
-- every session write, so they are exact under any number of concurrent writers; nothing counts rows on a read.
-- The functions: sql/functions/backup.sql.

-- Deleted versions stay as tombstones so that version numbers are never reused.
CREATE TABLE backup_versions (
    user_id   text    NOT NULL,
    version   bigint  NOT NULL,
    algorithm text    NOT NULL,
    auth_data jsonb   NOT NULL,
    etag      bigint  NOT NULL DEFAULT 0,
    count     bigint  NOT NULL DEFAULT 0,
    deleted   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_sessions (
    user_id             text    NOT NULL,
    version             bigint  NOT NULL,
    room_id             text    COLLATE "C" NOT NULL, -- byte order: cheap comparisons, stable keyset paging
    session_id          text    COLLATE "C" NOT NULL,
    first_message_index bigint  NOT NULL,
    forwarded_count     bigint  NOT NULL,
    is_verified         boolean NOT NULL,
    session_data        jsonb   NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
