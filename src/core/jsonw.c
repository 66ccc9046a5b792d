/*
 * jsonw.c — see jsonw.h.
 */
#include "core/jsonw.h"

#include <stdio.h>
#include <string.h>

#include "core/num.h"

void drv_jw_raw(drv_jw *w, const char *s, size_t n)
{
    if (!w->failed && drv_buf_append(w->b, s, n) != DRV_OK)
        w->failed = true;
}

void drv_jw_lit(drv_jw *w, const char *s)
{
    drv_jw_raw(w, s, strlen(s));
}

void drv_jw_str(drv_jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    drv_jw_raw(w, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        drv_jw_raw(w, s + start, i - start);
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            drv_jw_raw(w, esc, 2);
        } else if (c == '\n') {
            drv_jw_raw(w, "\\n", 2);
        } else {
            drv_jw_raw(w, esc, 6);
        }
        start = i + 1;
    }
    drv_jw_raw(w, s + start, n - start);
    drv_jw_raw(w, "\"", 1);
}

void drv_jw_cstr(drv_jw *w, const char *s)
{
    drv_jw_str(w, s, strlen(s));
}

void drv_jw_i64(drv_jw *w, int64_t v)
{
    char buf[24];
    int n = snprintf(buf, sizeof(buf), "%lld", (long long)v);
    drv_jw_raw(w, buf, (size_t)n);
}

void drv_jw_f64(drv_jw *w, double v)
{
    char buf[DRV_NUM_FORMAT_CAP];
    int n = drv_format_double(v, buf);
    if (n <= 0)
        drv_jw_lit(w, "null");
    else
        drv_jw_raw(w, buf, (size_t)n);
}

void drv_jw_value(drv_jw *w, const drv_value *v)
{
    switch (v->type) {
    case DRV_VALUE_DOUBLE:
        drv_jw_f64(w, v->d);
        break;
    case DRV_VALUE_INT:
        drv_jw_i64(w, v->i);
        break;
    case DRV_VALUE_BOOL:
        drv_jw_lit(w, v->b ? "true" : "false");
        break;
    case DRV_VALUE_STRING:
        if (v->s.p)
            drv_jw_str(w, v->s.p, v->s.n);
        else
            drv_jw_lit(w, "null");
        break;
    }
}
