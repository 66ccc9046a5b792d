/*
 * span.h — a view of bytes inside someone else's buffer (not NUL-terminated)
 * and the comparisons the HTTP/1.1 parsers make on them: the HTTP server's
 * (http/http_parse.c) and the WebSocket handshake's (net/ws.c).
 *
 * Header-only and pure: ASCII case folding only (never the locale), no
 * allocation, any thread.
 */
#ifndef DRV_CORE_SPAN_H
#define DRV_CORE_SPAN_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

/* A byte range (not NUL-terminated). */
typedef struct drv_span {
    const char *p; /* first byte */
    size_t n;      /* length */
} drv_span;

/* c in lower case when it is an ASCII upper-case letter, else c. */
static inline char drv_lower_ascii(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* a equals the literal, ASCII case-insensitively. */
static inline bool drv_span_ieq(drv_span a, const char *lit)
{
    size_t n = strlen(lit);
    if (a.n != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (drv_lower_ascii(a.p[i]) != drv_lower_ascii(lit[i]))
            return false;
    return true;
}

/* a equals the literal exactly. */
static inline bool drv_span_eq(drv_span a, const char *lit)
{
    return a.n == strlen(lit) && memcmp(a.p, lit, a.n) == 0;
}

/* An RFC 9110 §5.6.2 token character. */
static inline bool drv_is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

#endif
