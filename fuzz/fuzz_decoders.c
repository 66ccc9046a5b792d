/*
 * fuzz_decoders.c — libFuzzer harness for the payload decoders
 * (src/pipeline/decode*.c), their JSON scanner (json_scan.c) and the number
 * parsing they share (src/core/num.c).
 *
 * Input: a mode byte, then the payload, copied into a heap block of its
 * exact size so a read past it is an ASan report.  Mode bits 0-1 pick the
 * target: 0 json, 1 senml, 2 numeric, 3 numbers.  Bit 2 selects small
 * limits (1..8 samples, an arena of 0..112 bytes, 0 meaning none) to reach
 * the limit paths; bit 3 gives the numeric decoder an empty topic key.
 *
 * Decoders: the answer is OK, MALFORMED or LIMIT, `why` is set exactly on
 * failure and n is then 0; n ≤ cap, arena_used ≤ arena_cap; every key is
 * 1..128 bytes of UTF-8 without control characters and, like every string
 * value (≤ 4096 bytes, valid UTF-8), lies inside the payload, the arena or
 * the topic key; DOUBLE values are finite; device times lie in [0, recv +
 * skew]; decoding again gives the same answer and the same samples.  For
 * the JSON-based decoders the scanner is checked against jansson: a
 * document one accepts the other accepts too, except for jansson's numeric
 * overflow (the scanner leaves ranges to the decoders), "\u0000" in a
 * member name (jansson's keys are C strings), nesting beyond 32
 * (the scanner's limit) and a NUL byte after the value (jansson stops
 * there).
 *
 * Numbers: drv_parse_double accepts exactly the JSON number grammar (plus a
 * leading '+', up to 1024 bytes) and then agrees with strtod to the bit;
 * drv_parse_i64 agrees with a reference; drv_format_double of any finite
 * double (the parsed value, and the first 8 bytes taken as a bit pattern)
 * is a JSON number that parses back to the same bits.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/num.h"
#include "pipeline/decode.h"
#include "pipeline/json_scan.h"

#include "fuzz.h"

#define RECV INT64_C(1767225600000)
#define SKEW INT64_C(60000)

static drv_sample samples_a[DRV_DECODE_MAX_SAMPLES], samples_b[DRV_DECODE_MAX_SAMPLES];
static char arena_a[1 << 16], arena_b[1 << 16];

static bool inside(drv_span s, const char *base, size_t n)
{
    return base && s.p >= base && s.p + s.n <= base + n;
}

/* Valid UTF-8 per Unicode Table 3-7, written apart from json_scan.c. */
static bool ref_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            k = 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            k = 3;
            lo = b == 0xE0 ? 0xA0 : 0x80;
            hi = b == 0xED ? 0x9F : 0xBF;
        } else if (b >= 0xF0 && b <= 0xF4) {
            k = 4;
            lo = b == 0xF0 ? 0x90 : 0x80;
            hi = b == 0xF4 ? 0x8F : 0xBF;
        } else {
            return false;
        }
        if (n - i < k || s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t j = 2; j < k; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xBF)
                return false;
        i += k;
    }
    return true;
}

/* A valid sample key: 1..128 bytes of UTF-8, no C0, DEL or C1. */
static bool ref_key(drv_span k)
{
    const uint8_t *u = (const uint8_t *)k.p;
    if (k.n == 0 || k.n > DRV_SAMPLE_MAX_KEY || !ref_utf8(u, k.n))
        return false;
    for (size_t i = 0; i < k.n; i++) {
        if (u[i] < 0x20 || u[i] == 0x7F)
            return false;
        if (u[i] == 0xC2 && i + 1 < k.n && u[i + 1] < 0xA0)
            return false;
    }
    return true;
}

/* The JSON number grammar, optionally with a leading '+'. */
static bool ref_json_number(const char *p, size_t n)
{
    size_t i = 0;
    if (i < n && (p[i] == '-' || p[i] == '+'))
        i++;
    if (i == n || p[i] < '0' || p[i] > '9')
        return false;
    if (p[i] == '0')
        i++;
    else
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    if (i < n && p[i] == '.') {
        i++;
        if (i == n || p[i] < '0' || p[i] > '9')
            return false;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i == n || p[i] < '0' || p[i] > '9')
            return false;
        while (i < n && p[i] >= '0' && p[i] <= '9')
            i++;
    }
    return i == n;
}

static bool same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

/* format(v) is a JSON number that reads back as v. */
static void check_format(double v)
{
    char buf[DRV_NUM_FORMAT_CAP];
    int n = drv_format_double(v, buf);
    if (!isfinite(v)) {
        FUZZ_ASSERT(n == 0 && buf[0] == '\0');
        return;
    }
    FUZZ_ASSERT(n > 0 && n < (int)DRV_NUM_FORMAT_CAP && (size_t)n == strlen(buf));
    FUZZ_ASSERT(buf[0] != '+' && ref_json_number(buf, (size_t)n) && !strchr(buf, '+'));
    double back;
    FUZZ_ASSERT(drv_parse_double(buf, (size_t)n, &back) && same_bits(back, v));
}

static void fuzz_numbers(const char *p, size_t n)
{
    char *z = malloc(n + 1);
    FUZZ_ASSERT(z != NULL);
    memcpy(z, p, n);
    z[n] = '\0';

    double d = 0;
    bool ok = drv_parse_double(p, n, &d);
    bool want = n <= DRV_NUM_MAX_TEXT && ref_json_number(p, n);
    FUZZ_ASSERT(ok == want);
    if (ok) {
        char *end;
        double s = strtod(z, &end);
        FUZZ_ASSERT(end == z + n && same_bits(s, d));
        check_format(d);
    }

    int64_t i = 0;
    ok = drv_parse_i64(p, n, &i);
    size_t k = (n > 0 && (p[0] == '-' || p[0] == '+')) ? 1 : 0;
    bool digits = k < n;
    for (size_t j = k; j < n; j++)
        digits = digits && p[j] >= '0' && p[j] <= '9';
    if (digits) {
        errno = 0;
        char *end;
        long long r = strtoll(z, &end, 10);
        FUZZ_ASSERT(ok == (errno == 0));
        if (ok)
            FUZZ_ASSERT(i == r && end == z + n);
    } else {
        FUZZ_ASSERT(!ok);
    }

    if (n >= 8) {
        double v;
        memcpy(&v, p, sizeof(v));
        check_format(v);
    }
    free(z);
}

/* The sample invariants of one decode. */
static void check_out(const drv_decode_in *in, const drv_decode_out *out, drv_err e,
                      const char *why, bool numeric)
{
    FUZZ_ASSERT(e == DRV_OK || e == DRV_MALFORMED || e == DRV_LIMIT);
    FUZZ_ASSERT((e == DRV_OK) == (why == NULL));
    FUZZ_ASSERT(why == NULL || why[0] != '\0');
    if (e != DRV_OK)
        FUZZ_ASSERT(out->n == 0);
    FUZZ_ASSERT(out->n <= out->cap && out->n <= DRV_DECODE_MAX_SAMPLES);
    FUZZ_ASSERT(out->arena_used <= out->arena_cap);
    /* The arena bound decode.h promises: payload.n + 128 per sample. */
    if (e == DRV_OK)
        FUZZ_ASSERT(out->arena_used <= in->payload.n + (size_t)DRV_SAMPLE_MAX_KEY * out->n);
    if (numeric && e == DRV_OK)
        FUZZ_ASSERT(out->n == 1 && out->samples[0].key.p == in->topic_key.p);
    for (uint32_t i = 0; i < out->n; i++) {
        const drv_sample *s = &out->samples[i];
        FUZZ_ASSERT(ref_key(s->key));
        FUZZ_ASSERT(inside(s->key, in->payload.p, in->payload.n) ||
                    inside(s->key, out->arena, out->arena_used) ||
                    inside(s->key, in->topic_key.p, in->topic_key.n));
        FUZZ_ASSERT(s->ts_ms >= 0 && s->ts_ms <= in->recv_ms + in->max_future_ms);
        switch (s->v.type) {
        case DRV_VALUE_DOUBLE:
            FUZZ_ASSERT(isfinite(s->v.d));
            break;
        case DRV_VALUE_INT:
        case DRV_VALUE_BOOL:
            break;
        case DRV_VALUE_STRING:
            FUZZ_ASSERT(s->v.s.n <= DRV_SAMPLE_MAX_STRING);
            FUZZ_ASSERT(s->v.s.n == 0 || inside(s->v.s, in->payload.p, in->payload.n) ||
                        inside(s->v.s, out->arena, out->arena_used));
            FUZZ_ASSERT(s->v.s.n == 0 || ref_utf8((const uint8_t *)s->v.s.p, s->v.s.n));
            break;
        default:
            FUZZ_ASSERT(!"bad value type");
        }
    }
}

static bool same_sample(const drv_sample *a, const drv_sample *b)
{
    if (a->key.n != b->key.n || memcmp(a->key.p, b->key.p, a->key.n) != 0 || a->ts_ms != b->ts_ms ||
        a->v.type != b->v.type)
        return false;
    switch (a->v.type) {
    case DRV_VALUE_DOUBLE:
        return same_bits(a->v.d, b->v.d);
    case DRV_VALUE_INT:
        return a->v.i == b->v.i;
    case DRV_VALUE_BOOL:
        return a->v.b == b->v.b;
    default:
        return a->v.s.n == b->v.s.n && (a->v.s.n == 0 || memcmp(a->v.s.p, b->v.s.p, a->v.s.n) == 0);
    }
}

/* The scanner accepts p[0..n) as one JSON document (checking every token on the way). */
static bool scan_all(const char *p, size_t n)
{
    drv_json_scan s;
    drv_json_token t;
    drv_json_init(&s, p, n);
    drv_json_type type;
    size_t tokens = 0;
    while ((type = drv_json_next(&s, &t)) != DRV_JSON_END && type != DRV_JSON_ERROR) {
        FUZZ_ASSERT(++tokens <= n); /* progress: at most one token per byte */
        FUZZ_ASSERT(s.depth <= DRV_JSON_MAX_DEPTH);
        if (type == DRV_JSON_KEY || type == DRV_JSON_STRING) {
            FUZZ_ASSERT(inside(t.text, p, n) || t.text.n == 0);
            size_t len = drv_json_unescaped_len(t.text);
            FUZZ_ASSERT(len <= t.text.n && (len < t.text.n) == t.escaped);
            char *buf = malloc(len ? len : 1);
            FUZZ_ASSERT(buf && drv_json_unescape(t.text, buf, len) == len);
            FUZZ_ASSERT(ref_utf8((const uint8_t *)buf, len));
            if (len)
                FUZZ_ASSERT(drv_json_unescape(t.text, buf, len - 1) == SIZE_MAX);
            free(buf);
        }
        if (type == DRV_JSON_NUMBER) {
            FUZZ_ASSERT(ref_json_number(t.text.p, t.text.n) && t.text.p[0] != '+');
            bool plain = !memchr(t.text.p, '.', t.text.n) && !memchr(t.text.p, 'e', t.text.n) &&
                         !memchr(t.text.p, 'E', t.text.n);
            FUZZ_ASSERT(t.integer == plain);
        }
    }
    if (type == DRV_JSON_ERROR)
        FUZZ_ASSERT(s.why != NULL && drv_json_next(&s, &t) == DRV_JSON_ERROR);
    return type == DRV_JSON_END;
}

/* Deepest nesting of p[0..n) outside strings (for the jansson comparison). */
static size_t nesting(const char *p, size_t n)
{
    size_t d = 0, max = 0;
    bool str = false;
    for (size_t i = 0; i < n; i++) {
        if (str) {
            if (p[i] == '\\')
                i++;
            else if (p[i] == '"')
                str = false;
        } else if (p[i] == '"') {
            str = true;
        } else if (p[i] == '{' || p[i] == '[') {
            if (++d > max)
                max = d;
        } else if ((p[i] == '}' || p[i] == ']') && d > 0) {
            d--;
        }
    }
    return max;
}

static void check_scanner(const char *p, size_t n)
{
    bool ours = scan_all(p, n);
    json_error_t err;
    json_t *j = json_loadb(p, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    bool theirs = j != NULL;
    json_decref(j);
    if (ours && !theirs)
        FUZZ_ASSERT(json_error_code(&err) == json_error_numeric_overflow ||
                    json_error_code(&err) == json_error_null_byte_in_key);
    /* jansson also stops at a NUL byte after the value; RFC 8259 allows only whitespace. */
    if (theirs && !ours)
        FUZZ_ASSERT(nesting(p, n) > DRV_JSON_MAX_DEPTH || memchr(p, '\0', n));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    size_t n = size - 1;
    char *payload = malloc(n ? n : 1);
    FUZZ_ASSERT(payload != NULL);
    memcpy(payload, data + 1, n);

    if ((mode & 3) == 3) {
        fuzz_numbers(payload, n);
        free(payload);
        return 0;
    }
    const drv_decoder_ops *dec = (mode & 3) == 0   ? drv_decoder_find("json")
                                 : (mode & 3) == 1 ? drv_decoder_find("senml")
                                                   : drv_decoder_find("numeric");
    FUZZ_ASSERT(dec != NULL);
    bool numeric = (mode & 3) == 2;
    uint32_t cap = DRV_DECODE_MAX_SAMPLES;
    size_t arena_cap = sizeof(arena_a);
    if (mode & 4) {
        cap = 1 + (mode >> 4 & 7);
        arena_cap = (size_t)(mode >> 5 & 7) * 16;
    }
    static char topic[] = "temp";
    drv_decode_in in = {
        .payload = {payload, n},
        .topic_key = {topic, numeric && !(mode & 8) ? 4 : 0},
        .recv_ms = RECV,
        .max_future_ms = SKEW,
    };
    drv_decode_out a = {.samples = samples_a,
                        .cap = cap,
                        .arena = arena_cap ? arena_a : NULL,
                        .arena_cap = arena_cap};
    drv_decode_out b = {.samples = samples_b,
                        .cap = cap,
                        .arena = arena_cap ? arena_b : NULL,
                        .arena_cap = arena_cap};
    const char *why_a = "unset", *why_b = "unset";
    drv_err ea = dec->decode(&in, &a, &why_a);
    check_out(&in, &a, ea, why_a, numeric);
    drv_err eb = dec->decode(&in, &b, &why_b);
    FUZZ_ASSERT(ea == eb && why_a == why_b && a.n == b.n && a.arena_used == b.arena_used);
    for (uint32_t i = 0; i < a.n; i++)
        FUZZ_ASSERT(same_sample(&a.samples[i], &b.samples[i]));

    if (!numeric) {
        check_scanner(payload, n);
        /* A decoded message is one valid JSON document. */
        if (ea == DRV_OK)
            FUZZ_ASSERT(scan_all(payload, n));
    }
    free(payload);
    return 0;
}
