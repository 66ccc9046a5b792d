/*
 * ident.h — the resource id rule every module shares: 1..DRV_ID_MAX bytes of
 * [A-Za-z0-9._:-] (tenants' devices, profiles, groups, templates, command
 * names; what the API router takes as a path segment).
 */
#ifndef DRV_CORE_IDENT_H
#define DRV_CORE_IDENT_H

#include <stdbool.h>
#include <stddef.h>

#define DRV_ID_MAX 128

static inline bool drv_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
}

/* s[0..n) is an id. */
static inline bool drv_id_valid_n(const char *s, size_t n)
{
    if (n < 1 || n > DRV_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!drv_id_char(s[i]))
            return false;
    return true;
}

/* The NUL-terminated s (NULL: no) is an id. */
static inline bool drv_id_valid(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++)
        if (n >= DRV_ID_MAX || !drv_id_char(s[n]))
            return false;
    return n >= 1;
}

#endif
