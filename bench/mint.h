/* Access tokens from a command: the template's {user} and {device} are replaced by the shell-quoted ids, the command
 * runs under /bin/sh, and the first line it prints is the token (`mxkeysd token create` prints exactly that). */
#ifndef MXKEYS_BENCH_MINT_H
#define MXKEYS_BENCH_MINT_H

#include <stddef.h>

/** Runs the template for one device. Returns a malloc'd token, or NULL with a reason in `err` (256 bytes). */
char *bench_mint(const char *tpl, const char *user_id, const char *device_id, char *err);

#endif
