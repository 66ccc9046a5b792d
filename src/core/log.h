/*
 * log.h — structured logging.
 *
 * A log line is a level, a message and key=value fields.  In text mode
 * (default on a terminal) it prints `2026-11-28T19:00:00.123Z INFO msg k=v`;
 * in JSON mode one object per line: {"ts":..,"level":..,"msg":..,"k":"v"}.
 * Fields are alternating key and value C strings; text mode quotes values
 * that contain spaces, quotes or '='.
 *
 * Logging is synchronous to stderr with one write() per line, which is atomic
 * for lines under PIPE_BUF and safe from several threads.
 */
#ifndef DRV_CORE_LOG_H
#define DRV_CORE_LOG_H

#include <stdbool.h>

typedef enum {
    DRV_LOG_DEBUG,
    DRV_LOG_INFO,
    DRV_LOG_WARN,
    DRV_LOG_ERROR,
} drv_log_level;

/* Parse "debug"/"info"/"warn"/"error"; false if unknown. */
bool drv_log_parse_level(const char *s, drv_log_level *out);
void drv_log_set_level(drv_log_level level);
/* json=true: one JSON object per line; false: human-readable text. */
void drv_log_set_json(bool json);
bool drv_log_enabled(drv_log_level level);

/*
 * Log msg with fields given as NULL-terminated alternating key, value C
 * strings: drv_log(DRV_LOG_INFO, "client connected", "client", id, NULL).
 */
void drv_log(drv_log_level level, const char *msg, ...);

#define drv_debug(...) drv_log(DRV_LOG_DEBUG, __VA_ARGS__, (const char *)0)
#define drv_info(...) drv_log(DRV_LOG_INFO, __VA_ARGS__, (const char *)0)
#define drv_warn(...) drv_log(DRV_LOG_WARN, __VA_ARGS__, (const char *)0)
#define drv_error(...) drv_log(DRV_LOG_ERROR, __VA_ARGS__, (const char *)0)

#endif
