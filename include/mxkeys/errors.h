/* The Matrix error table: every (HTTP status, errcode) pair mxkeys answers with, in one place. */
#ifndef MXKEYS_ERRORS_H
#define MXKEYS_ERRORS_H

#define MX_ERRORS(X)                                                                                                   \
    X(MX_ERR_UNRECOGNIZED_PATH, 404, "M_UNRECOGNIZED")                                                                 \
    X(MX_ERR_UNRECOGNIZED_METHOD, 405, "M_UNRECOGNIZED")                                                               \
    X(MX_ERR_BAD_REQUEST, 400, "M_UNKNOWN")                                                                            \
    X(MX_ERR_NOT_JSON, 400, "M_NOT_JSON")                                                                              \
    X(MX_ERR_BAD_JSON, 400, "M_BAD_JSON")                                                                              \
    X(MX_ERR_MISSING_PARAM, 400, "M_MISSING_PARAM")                                                                    \
    X(MX_ERR_INVALID_PARAM, 400, "M_INVALID_PARAM")                                                                    \
    X(MX_ERR_INVALID_SIGNATURE, 400, "M_INVALID_SIGNATURE")                                                            \
    X(MX_ERR_TOO_LARGE, 413, "M_TOO_LARGE")                                                                            \
    X(MX_ERR_MISSING_TOKEN, 401, "M_MISSING_TOKEN")                                                                    \
    X(MX_ERR_UNKNOWN_TOKEN, 401, "M_UNKNOWN_TOKEN")                                                                    \
    X(MX_ERR_UNAUTHORIZED, 401, "M_UNAUTHORIZED")                                                                      \
    X(MX_ERR_FORBIDDEN, 403, "M_FORBIDDEN")                                                                            \
    X(MX_ERR_WRONG_ROOM_KEYS_VERSION, 403, "M_WRONG_ROOM_KEYS_VERSION")                                                \
    X(MX_ERR_NOT_FOUND, 404, "M_NOT_FOUND")                                                                            \
    X(MX_ERR_LIMIT_EXCEEDED, 503, "M_LIMIT_EXCEEDED")                                                                  \
    X(MX_ERR_RATE_LIMITED, 429, "M_LIMIT_EXCEEDED")                                                                    \
    X(MX_ERR_UNAVAILABLE, 503, "M_UNKNOWN")                                                                            \
    X(MX_ERR_HS_UNREACHABLE, 502, "M_UNKNOWN")                                                                         \
    X(MX_ERR_HS_TIMEOUT, 504, "M_UNKNOWN")                                                                             \
    X(MX_ERR_INTERNAL, 500, "M_UNKNOWN")

typedef enum en_mx_err_t {
#define MX_ERR_ENUM(name, status, errcode) name,
    MX_ERRORS(MX_ERR_ENUM)
#undef MX_ERR_ENUM
        MX_ERR__COUNT
} mx_err_t;

/** HTTP status of an error. */
int mx_err_status(mx_err_t err);
/** Matrix errcode string of an error (static storage). */
const char *mx_err_code(mx_err_t err);
/** Finds the table entry for an errcode string and status; returns -1 when the pair is not in the table. */
int mx_err_lookup(const char *errcode, int status);

#endif
