/*
 * decode_numeric.c — the "numeric" payload decoder: the whole payload is one
 * value and its key is the topic's last level (in->topic_key), for devices
 * that publish "21.5" to .../temp.
 *
 * Surrounding ASCII whitespace (space, tab, CR, LF, FF, VT) is ignored.
 * "true"/"false" → BOOL; an optional sign and digits that fit int64 → INT
 * (leading zeros allowed: "007" is 7); a JSON-grammar number, optionally
 * with '+' → DOUBLE (±inf is "number out of range"); anything else,
 * including "nan", hex, "1,5" and an empty payload, is "payload is not a
 * number".  The one sample carries recv_ms; its key points at
 * in->topic_key's bytes, so nothing goes into the arena.
 */
#include "pipeline/decode_int.h"

#include <math.h>

#include "core/num.h"

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static drv_err decode(const drv_decode_in *in, drv_decode_out *out, const char **why)
{
    if (in->topic_key.n == 0)
        return dec_fail(why, DRV_MALFORMED, "empty key (the topic's last level names the value)");
    drv_err e = dec_check_key(in->topic_key, why);
    if (e != DRV_OK)
        return e;
    const char *p = in->payload.p ? in->payload.p : "";
    const char *end = p + (in->payload.p ? in->payload.n : 0);
    while (p < end && is_space(*p))
        p++;
    while (end > p && is_space(end[-1]))
        end--;
    drv_span text = {p, (size_t)(end - p)};

    drv_value v;
    double d;
    if (drv_span_eq(text, "true") || drv_span_eq(text, "false")) {
        v.type = DRV_VALUE_BOOL;
        v.b = text.p[0] == 't';
    } else if (drv_parse_i64(text.p, text.n, &v.i)) {
        v.type = DRV_VALUE_INT;
    } else if (drv_parse_double(text.p, text.n, &d)) {
        if (isinf(d))
            return dec_fail(why, DRV_MALFORMED, "number out of range");
        v.type = DRV_VALUE_DOUBLE;
        v.d = d;
    } else {
        return dec_fail(why, DRV_MALFORMED, "payload is not a number");
    }
    drv_sample *s;
    e = dec_sample(out, in->recv_ms, &s, why);
    if (e != DRV_OK)
        return e;
    s->key = in->topic_key;
    s->v = v;
    return DRV_OK;
}

static drv_err numeric_decode(const drv_decode_in *in, drv_decode_out *out, const char **why)
{
    dec_begin(out, why);
    return dec_end(out, decode(in, out, why));
}

const drv_decoder_ops drv_decoder_numeric = {
    .name = "numeric",
    .decode = numeric_decode,
};
