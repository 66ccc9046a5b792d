/*
 * jsonw.h — a small JSON writer into a capped drv_buf, for answers built
 * straight from data rather than through jansson: telemetry query results
 * (tens of thousands of samples) and live-stream events (one per message).
 * Doubles are written with the shortest text that reads back to the same
 * value (drv_format_double); NaN and infinities, which JSON cannot carry,
 * become null.
 *
 * Errors are sticky: once an append fails (the buffer's cap), `failed` is
 * set and every later call does nothing, so a caller checks once at the end.
 */
#ifndef DRV_CORE_JSONW_H
#define DRV_CORE_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/sample.h"

typedef struct drv_jw {
    drv_buf *b;
    bool failed;
} drv_jw;

/* Bytes as they are (already JSON). */
void drv_jw_raw(drv_jw *w, const char *s, size_t n);
/* A NUL-terminated literal as it is ("{", "null", ...). */
void drv_jw_lit(drv_jw *w, const char *s);
/* A JSON string of n bytes (quotes added, escapes as needed). */
void drv_jw_str(drv_jw *w, const char *s, size_t n);
/* A JSON string of a NUL-terminated C string. */
void drv_jw_cstr(drv_jw *w, const char *s);
void drv_jw_i64(drv_jw *w, int64_t v);
/* A double; NaN and infinities are null. */
void drv_jw_f64(drv_jw *w, double v);
/* A sample value (a STRING without bytes at hand is null). */
void drv_jw_value(drv_jw *w, const drv_value *v);

#endif
