/* The Matrix identifier grammars (spec, appendices "Server name" and "User identifiers"), in one place: the command
 * line, the request checks and the key endpoints all ask here. */
#ifndef MXKEYS_MATRIX_IDS_H
#define MXKEYS_MATRIX_IDS_H

#include <stdbool.h>

/** A server name: a DNS name or IPv4 address (letters, digits, '-', '.'; at most 255) or a bracketed IPv6 literal,
 * then an optional ":port" (1-65535). */
bool mx_server_name_valid(const char *s);
/** A user id: "@localpart:server_name", visible ASCII only (the historical localpart grammar), at most 255 bytes,
 * with a valid server name after the first ':'. */
bool mx_user_id_valid(const char *user_id);
/** The server name part of a (valid) user id: everything after the first ':'. */
const char *mx_user_id_server(const char *user_id);

#endif
