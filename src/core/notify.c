/* sd_notify glue. Failures to notify are logged at debug level only: the service manager is the one that acts on
 * a missing READY=1 (it times the start out), and mxkeysd itself serves either way. */
#include "mxkeys/notify.h"
#include <stdio.h>
#include <systemd/sd-daemon.h>
#include "mxkeys/log.h"

static void notify_state(const char *state)
{
    int rc = sd_notify(0, state);
    if (rc < 0)
        mx_debug("sd_notify(%s): error %d", state, -rc);
}

void mx_notify_ready(const char *status)
{
    char msg[1100];
    snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status);
    notify_state(msg);
}

void mx_notify_stopping(void)
{
    notify_state("STOPPING=1\nSTATUS=draining in-flight requests");
}

uint64_t mx_notify_watchdog_interval_ms(void)
{
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is this process. */
    if (sd_watchdog_enabled(0, &usec) <= 0)
        return 0;
    uint64_t ms = usec / 2000;
    return ms > 0 ? ms : 1;
}

void mx_notify_watchdog(void)
{
    notify_state("WATCHDOG=1");
}
