/*
 * num.h — number parsing and formatting shared by the payload decoders
 * (src/pipeline), the CSV import and JSON output.
 *
 * Exact and locale-free in practice: decimal text → double is correctly
 * rounded (a fast exact path for short numbers, strtod for the rest, which
 * runs in the C locale because the server never calls setlocale), and
 * double → text is the shortest of %.15g/%.16g/%.17g that parses back to
 * the same bits.  Pure, no allocation, any thread.  Inputs are spans, not
 * C strings: nothing is read at or past p[n].
 */
#ifndef DRV_CORE_NUM_H
#define DRV_CORE_NUM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Longest text drv_parse_double accepts (longer: false, whatever it holds). */
#define DRV_NUM_MAX_TEXT 1024u

/* Room drv_format_double needs, NUL included. */
#define DRV_NUM_FORMAT_CAP 32u

/*
 * p[0..n) is an optional '-' or '+' then one or more ASCII digits (leading
 * zeros allowed) whose value fits int64: *out = the value, true.  Anything
 * else (empty, spaces, other characters, overflow): false, *out unchanged.
 */
bool drv_parse_i64(const char *p, size_t n, int64_t *out);

/*
 * p[0..n) is a JSON number (RFC 8259 §6: no leading zeros, digits on both
 * sides of a '.', optional exponent), optionally with a leading '+', and at
 * most DRV_NUM_MAX_TEXT bytes: *out = the nearest double (ties to even),
 * true.  A magnitude too large for a double gives ±inf (the caller decides
 * whether that is an error), too small gives ±0 or a subnormal; "-0" gives
 * -0.0.  No "nan", "inf", hex, spaces or locale decimal separators: false,
 * *out unchanged.
 */
bool drv_parse_double(const char *p, size_t n, double *out);

/*
 * Write v as the shortest of "%.15g", "%.16g", "%.17g" that drv_parse_double
 * reads back to the same bits, NUL-terminated, into buf (DRV_NUM_FORMAT_CAP
 * bytes), and return its length.  Integral values with |v| ≤ 1e15 print as
 * plain integers ("21", "-0"); the exponent has no '+' and no leading zeros
 * ("1e+20" → "1e20", "1e-07" → "1e-7").  The text is always a valid JSON
 * number.  NaN and ±inf are not JSON: return 0 (buf = "") so the caller can
 * write null.
 */
int drv_format_double(double v, char buf[DRV_NUM_FORMAT_CAP]);

#endif
