/* The service manager's readiness protocol (systemd's sd_notify, Type=notify). Every call is a no-op when
 * NOTIFY_SOCKET is unset, so mxkeysd runs the same without systemd. */
#ifndef MXKEYS_NOTIFY_H
#define MXKEYS_NOTIFY_H

#include <stdint.h>

/** Sends READY=1 with a one-line STATUS= text (no newline in it). */
void mx_notify_ready(const char *status);
/** Sends STOPPING=1: the drain has begun. */
void mx_notify_stopping(void);
/** How often to send mx_notify_watchdog (half of WATCHDOG_USEC, in ms), or 0 when no watchdog is asked for. */
uint64_t mx_notify_watchdog_interval_ms(void);
/** Sends WATCHDOG=1. */
void mx_notify_watchdog(void);

#endif
