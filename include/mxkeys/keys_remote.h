/* Sorting the users of a /keys/query or /keys/claim into local ones and other servers' (reported in `failures`:
 * mxkeys does not speak federation). */
#ifndef MXKEYS_KEYS_REMOTE_H
#define MXKEYS_KEYS_REMOTE_H

#include <jansson.h>
#include <stdbool.h>
#include "mxkeys/buf.h"

typedef struct st_mx_keys_remote_t {
    const char *server_name;
    json_t *servers; /* set of other servers seen */
} mx_keys_remote_t;

void mx_keys_remote_init(mx_keys_remote_t *r, const char *server_name);
/** True when `user_id` is local; otherwise remembers its server and returns false. */
bool mx_keys_remote_note(mx_keys_remote_t *r, const char *user_id);
/** Appends the `failures` object: one entry per other server. */
void mx_keys_remote_encode(const mx_keys_remote_t *r, mx_buf_t *out);
void mx_keys_remote_free(mx_keys_remote_t *r);

#endif
