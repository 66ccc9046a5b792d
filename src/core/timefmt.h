/*
 * timefmt.h — times as the APIs write them: milliseconds since the Unix
 * epoch, or RFC 3339 text ("2026-01-01T00:00:00Z", "…T01:00:00.250+01:00").
 * Pure, no locale, no allocation, any thread.
 */
#ifndef DRV_CORE_TIMEFMT_H
#define DRV_CORE_TIMEFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* p[0..n): an integer (ms since the epoch, optional '-') or an RFC 3339
 * date-time (seconds fraction of up to 9 digits, truncated to ms; 'Z' or
 * ±hh:mm; 't'/'z' accepted).  false when it is neither. */
bool drv_parse_time_ms(const char *p, size_t n, int64_t *out);

/* "2026-01-01T00:00:00.000Z" into buf (cap ≥ 32); returns the length. */
size_t drv_format_time_ms(int64_t ms, char *buf, size_t cap);

#endif
