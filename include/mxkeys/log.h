/* Logging to stderr, one write(2) per line so lines from several workers never interleave. Never log tokens or key
 * material: callers pass identifiers only. */
#ifndef MXKEYS_LOG_H
#define MXKEYS_LOG_H

typedef enum en_mx_log_level_t { MX_LOG_DEBUG, MX_LOG_INFO, MX_LOG_WARN, MX_LOG_ERROR } mx_log_level_t;

/** Sets the minimum level written. */
void mx_log_set_level(mx_log_level_t level);
/** Parses "debug|info|warn|error"; returns -1 on anything else. */
int mx_log_parse_level(const char *s, mx_log_level_t *out) __attribute__((warn_unused_result));
/** True when `level` would be written. */
int mx_log_enabled(mx_log_level_t level);
/** Writes one line: "<UTC timestamp> <level> <message>\n". */
void mx_log(mx_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define mx_debug(...) mx_log(MX_LOG_DEBUG, __VA_ARGS__)
#define mx_info(...) mx_log(MX_LOG_INFO, __VA_ARGS__)
#define mx_warn(...) mx_log(MX_LOG_WARN, __VA_ARGS__)
#define mx_error(...) mx_log(MX_LOG_ERROR, __VA_ARGS__)

#endif
