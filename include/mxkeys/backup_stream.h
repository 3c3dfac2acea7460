/* Reads of backed-up sessions: the whole backup or one room streamed page by page, and the KeyBackupData writer. */
#ifndef MXKEYS_BACKUP_STREAM_H
#define MXKEYS_BACKUP_STREAM_H

#include "mxkeys/buf.h"
#include "mxkeys/call.h"

/* Columns of the BACKUP_PAGE_* and BACKUP_SESSION statements (include/mxkeys/sql/backup.def). */
enum {
    MX_BACKUP_COL_ROOM,
    MX_BACKUP_COL_SESSION,
    MX_BACKUP_COL_INDEX,
    MX_BACKUP_COL_FORWARDED,
    MX_BACKUP_COL_VERIFIED,
    MX_BACKUP_COL_DATA
};

/**
 * Answers GET /room_keys/keys (`room_id` NULL: {"rooms": ...}) or /room_keys/keys/{roomId} ({"sessions": ...}) for
 * `version` (decimal text that outlives the call): 404 when the caller has no such live version, otherwise a 200
 * body streamed one page of sessions per database round trip, never the whole backup in memory.
 */
void mx_backup_stream_sessions(mx_call_t *call, const char *version, const char *room_id);
/** Appends the KeyBackupData object of row `row` of a session result; session_data is spliced as stored. */
void mx_backup_write_key_data(mx_buf_t *out, const PGresult *res, int row);

#endif
