/* Shared pieces of the key-backup endpoints: the known algorithms, version numbers, KeyBackupData checks. */
#ifndef MXKEYS_BACKUP_COMMON_H
#define MXKEYS_BACKUP_COMMON_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "mxkeys/call.h"

/** True for a backup algorithm strict mode accepts (the list lives in backup_common.c). */
bool mx_backup_algorithm_known(const char *algorithm);
/** Parses a version number ("1".."999999999999999999"); -1 for anything else (which is 404 M_NOT_FOUND). */
int64_t mx_backup_parse_version(const char *s);
/**
 * Checks one KeyBackupData; answers the call and returns -1 on a problem. `where` names it in the message
 * ("rooms[!r:x].sessions[abc]").
 */
int mx_backup_check_key_data(mx_call_t *call, const json_t *data, const char *where);
/** The `version` query parameter of a sessions request; answers (400 or 404) and returns -1 when unusable. */
int64_t mx_backup_query_version(mx_call_t *call);

#endif
