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

struct st_mx_call_t;
/** Checks one user's value in a request map; returns how many entries it counts for, or -1 after answering. */
typedef long (*mx_keys_user_value_check)(struct st_mx_call_t *call, const char *user_id, const json_t *value);

/**
 * Reads the body member `member` of a /keys/query or /keys/claim: a map of user id -> value (`shape` describes it for
 * the error message), plus an optional integer `timeout`. Validates user ids and every value with `check`, enforces
 * the per-request entry cap, and splits local users from other servers'. Returns the local part as JSON text, or NULL
 * after answering the call. Other servers' users go to `*remote` (JSON text, NULL when there are none) when it is
 * given (beside a homeserver, which asks their servers); without it they are reported in `*failures`, which is the
 * encoded `failures` object either way (request memory).
 */
const char *mx_keys_split_request(struct st_mx_call_t *call, const char *member, const char *shape,
                                  mx_keys_user_value_check check, mx_buf_t **failures, const char **remote);

/** Appends the members of the object `obj` that name other servers' users as JSON text without braces (with a
 * leading comma when `comma`); returns how many. A homeserver's answer about local users is not taken. */
size_t mx_keys_remote_members(const json_t *obj, const char *server_name, bool comma, mx_buf_t *out);

/** The `timeout` of a query or claim (milliseconds; 10 s when absent, as the spec's default). */
unsigned mx_keys_timeout_ms(const struct st_mx_call_t *call);

/**
 * Appends `failures` for a homeserver answer about other servers' users: its own `failures` members when it
 * answered (`answer` parsed, may be NULL), else one entry per server named in `remote` (the users asked about)
 * saying why (`why`).
 */
void mx_keys_remote_failures(const json_t *answer, const char *remote, const char *server_name, const char *why,
                             mx_buf_t *out);

/* Other servers' users of a query or claim, asked of the homeserver (beside one) while the local part runs. */
typedef struct st_mx_keys_remote_ask_t {
    const char *remote; /* the users asked about, JSON text */
    bool pending;       /* no answer yet */
    json_t *answer;     /* the homeserver's answer, parsed; NULL when there is none, and `why` says why */
    const char *why;
    void (*then)(struct st_mx_call_t *call); /* runs once the answer (or its absence) is in */
} mx_keys_remote_ask_t;

/**
 * Sends {`member`: remote, "timeout": the request's} to the homeserver path the client called, and returns the ask
 * (request memory; its answer is freed with the request), with `then` to run when the answer is in. NULL when the
 * call was answered (the homeserver cannot be asked at all). Kept in call->ext meanwhile.
 */
mx_keys_remote_ask_t *mx_keys_remote_ask(struct st_mx_call_t *call, const char *remote, const char *member,
                                         bool retry_safe, void (*then)(struct st_mx_call_t *call));

#endif
