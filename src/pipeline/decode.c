/*
 * decode.c — the decoder table (drv_decoder_find) and the helpers every
 * decoder shares (decode_int.h): sample and arena slots with their limits,
 * key and time checks, JSON numbers and strings as sample values.
 *
 * Invariants the helpers keep for every decoder: out->n never passes
 * min(out->cap, DRV_DECODE_MAX_SAMPLES), out->arena_used never passes
 * out->arena_cap, and a failed decode leaves out->n at 0.
 */
#include "pipeline/decode_int.h"

#include <math.h>
#include <string.h>

#include "core/num.h"

static const drv_decoder_ops *const decoders[] = {
    &drv_decoder_json,
    &drv_decoder_senml,
    &drv_decoder_numeric,
};

const drv_decoder_ops *drv_decoder_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof(decoders) / sizeof(decoders[0]); i++)
        if (strcmp(decoders[i]->name, name) == 0)
            return decoders[i];
    return NULL;
}

void dec_begin(drv_decode_out *out, const char **why)
{
    out->n = 0;
    out->arena_used = 0;
    *why = NULL;
}

drv_err dec_end(drv_decode_out *out, drv_err e)
{
    if (e != DRV_OK)
        out->n = 0;
    return e;
}

drv_err dec_sample(drv_decode_out *out, int64_t ts, drv_sample **s, const char **why)
{
    uint32_t cap = out->cap < DRV_DECODE_MAX_SAMPLES ? out->cap : DRV_DECODE_MAX_SAMPLES;
    if (out->n >= cap || !out->samples)
        return dec_fail(why, DRV_LIMIT, "too many samples in one message");
    *s = &out->samples[out->n++];
    memset(*s, 0, sizeof(**s));
    (*s)->ts_ms = ts;
    return DRV_OK;
}

drv_err dec_alloc(drv_decode_out *out, size_t n, char **p, const char **why)
{
    if (n == 0) { /* nothing to place (and no arithmetic on a NULL arena) */
        *p = out->arena ? out->arena + out->arena_used : NULL;
        return DRV_OK;
    }
    if (!out->arena || n > out->arena_cap - out->arena_used)
        return dec_fail(
            why, DRV_LIMIT,
            "decode buffer too small for this message's nested keys and escaped strings");
    *p = out->arena + out->arena_used;
    out->arena_used += n;
    return DRV_OK;
}

bool dec_no_controls(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)p[i];
        if (c < 0x20 || c == 0x7F)
            return false;
        /* U+0080..U+009F are C2 80..C2 9F in UTF-8. */
        if (c == 0xC2 && i + 1 < n && (uint8_t)p[i + 1] <= 0x9F)
            return false;
    }
    return true;
}

drv_err dec_check_key(drv_span key, const char **why)
{
    if (key.n == 0)
        return dec_fail(why, DRV_MALFORMED, "empty key");
    if (key.n > DRV_SAMPLE_MAX_KEY)
        return dec_fail(why, DRV_LIMIT, "key longer than 128 bytes");
    if (!drv_json_utf8_valid(key.p, key.n))
        return dec_fail(why, DRV_MALFORMED, "key is not valid UTF-8");
    if (!dec_no_controls(key.p, key.n))
        return dec_fail(why, DRV_MALFORMED, "control character in a key");
    return DRV_OK;
}

drv_err dec_check_time(const drv_decode_in *in, int64_t ts, const char **why)
{
    if (ts < 0)
        return dec_fail(why, DRV_MALFORMED, "timestamp before 1970");
    int64_t skew = in->max_future_ms > 0 ? in->max_future_ms : 0;
    /* ts - skew cannot overflow (ts ≥ 0); recv_ms + skew could. */
    if (ts - skew > in->recv_ms)
        return dec_fail(why, DRV_MALFORMED, "timestamp in the future");
    return DRV_OK;
}

drv_err dec_number(drv_span text, bool integer, drv_value *v, const char **why)
{
    if (integer && drv_parse_i64(text.p, text.n, &v->i)) {
        v->type = DRV_VALUE_INT;
        return DRV_OK;
    }
    double d;
    if (!drv_parse_double(text.p, text.n, &d))
        return dec_fail(why, DRV_LIMIT, "number longer than 1024 characters");
    if (isinf(d))
        return dec_fail(why, DRV_MALFORMED, "number out of range");
    v->type = DRV_VALUE_DOUBLE;
    v->d = d;
    return DRV_OK;
}

drv_err dec_string(drv_decode_out *out, const drv_json_token *t, drv_span *s, const char **why)
{
    if (!t->escaped) {
        if (t->text.n > DRV_SAMPLE_MAX_STRING)
            return dec_fail(why, DRV_LIMIT, "string value longer than 4096 bytes");
        *s = t->text;
        return DRV_OK;
    }
    size_t n = drv_json_unescaped_len(t->text);
    if (n > DRV_SAMPLE_MAX_STRING)
        return dec_fail(why, DRV_LIMIT, "string value longer than 4096 bytes");
    char *p;
    drv_err e = dec_alloc(out, n, &p, why);
    if (e != DRV_OK)
        return e;
    if (drv_json_unescape(t->text, p, n) != n)
        return dec_fail(why, DRV_MALFORMED, "invalid escape in a string"); /* not reached */
    *s = (drv_span){p, n};
    return DRV_OK;
}

drv_err dec_scan_error(const drv_json_scan *s, const char **why)
{
    return dec_fail(why, DRV_MALFORMED, s->why ? s->why : "malformed JSON");
}
