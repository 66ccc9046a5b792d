/*
 * decode_int.h — what the payload decoders share (decode.c); private to
 * src/pipeline/decode*.c.
 *
 * Every helper that can fail returns a drv_err and sets *why to a static
 * string naming what was wrong; none allocates.
 */
#ifndef DRV_PIPELINE_DECODE_INT_H
#define DRV_PIPELINE_DECODE_INT_H

#include "pipeline/decode.h"
#include "pipeline/json_scan.h"

/* Fail with e and the static message msg. */
static inline drv_err dec_fail(const char **why, drv_err e, const char *msg)
{
    *why = msg;
    return e;
}

/* Start a decode: out->n and arena_used to 0, *why to NULL. */
void dec_begin(drv_decode_out *out, const char **why);

/* End a decode with e: on failure out->n goes back to 0 (nothing of it is kept). */
drv_err dec_end(drv_decode_out *out, drv_err e);

/* The next free sample in *s (zeroed but for ts_ms = ts), or DRV_LIMIT past the cap. */
drv_err dec_sample(drv_decode_out *out, int64_t ts, drv_sample **s, const char **why);

/* n bytes of the arena in *p, or DRV_LIMIT when it has not that many left. */
drv_err dec_alloc(drv_decode_out *out, size_t n, char **p, const char **why);

/*
 * key is a valid sample key: 1..DRV_SAMPLE_MAX_KEY bytes (else DRV_LIMIT) of
 * UTF-8 without control characters (C0, DEL, C1; else DRV_MALFORMED).
 */
drv_err dec_check_key(drv_span key, const char **why);

/* p[0..n) holds no control character (C0, DEL, C1 as UTF-8); p is valid UTF-8. */
bool dec_no_controls(const char *p, size_t n);

/* ts (ms) may be a device time: not before 1970, not past recv_ms + max_future_ms. */
drv_err dec_check_time(const drv_decode_in *in, int64_t ts, const char **why);

/*
 * A JSON number token's text as a value: INT when integer is set and it fits
 * int64, else DOUBLE; a magnitude beyond a double is "number out of range".
 */
drv_err dec_number(drv_span text, bool integer, drv_value *v, const char **why);

/*
 * A STRING token's text as a string value: the payload bytes themselves when
 * there are no escapes, else unescaped into the arena; at most
 * DRV_SAMPLE_MAX_STRING bytes.
 */
drv_err dec_string(drv_decode_out *out, const drv_json_token *t, drv_span *s, const char **why);

/* The scanner's error as a decode error. */
drv_err dec_scan_error(const drv_json_scan *s, const char **why);

#endif
