/* log.c — structured text/JSON logging to stderr; see log.h. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static drv_log_level min_level = DRV_LOG_INFO;
static bool json_mode;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

bool drv_log_parse_level(const char *s, drv_log_level *out)
{
    static const char *const lower[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, lower[i]) == 0) {
            *out = (drv_log_level)i;
            return true;
        }
    }
    return false;
}

void drv_log_set_level(drv_log_level level)
{
    min_level = level;
}
void drv_log_set_json(bool json)
{
    json_mode = json;
}
bool drv_log_enabled(drv_log_level level)
{
    return level >= min_level;
}

/* Append s to the line, JSON-escaped or (text mode) quoted when it has spaces. */
static size_t put_value(char *line, size_t pos, size_t cap, const char *s, bool json)
{
    bool quote = json || strpbrk(s, " \"=") != NULL || *s == '\0';
    if (quote && pos < cap)
        line[pos++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p && pos + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            line[pos++] = '\\';
            line[pos++] = (char)*p;
        } else if (*p < 0x20) {
            pos += (size_t)snprintf(line + pos, cap - pos, "\\u%04x", *p);
        } else {
            line[pos++] = (char)*p;
        }
    }
    if (quote && pos < cap)
        line[pos++] = '"';
    return pos;
}

void drv_log(drv_log_level level, const char *msg, ...)
{
    if (level < min_level)
        return;
    char line[2048];
    const size_t cap = sizeof(line) - 2;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[96];
    snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    size_t pos;
    if (json_mode) {
        pos = (size_t)snprintf(line, cap, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", when,
                               level_names[level]);
        pos = put_value(line, pos, cap, msg, true);
    } else {
        pos = (size_t)snprintf(line, cap, "%s %-5s %s", when, level_names[level], msg);
    }
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key)
            break;
        const char *val = va_arg(ap, const char *);
        if (!val)
            val = "";
        if (pos + 8 >= cap)
            continue;
        if (json_mode) {
            line[pos++] = ',';
            pos = put_value(line, pos, cap, key, true);
            line[pos++] = ':';
        } else {
            pos += (size_t)snprintf(line + pos, cap - pos, " %s=", key);
        }
        if (pos < cap)
            pos = put_value(line, pos, cap, val, json_mode);
    }
    va_end(ap);
    if (pos > cap)
        pos = cap;
    if (json_mode)
        line[pos++] = '}';
    line[pos++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, pos);
    (void)w;
}
