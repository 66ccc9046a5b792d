/*
 * fuzz_topic.c — libFuzzer harness for the codec's validators and topic
 * matching (src/mqtt/topic.c).
 *
 * Input: "<filter>\0<topic>" (split at the first NUL; without one, the whole
 * input is used as both).  Both halves are copied into heap blocks of their
 * exact size so that any read past them is an ASan report.  Every validator
 * and mqtt_topic_matches run on them whatever they contain; then, for a
 * valid filter and a valid topic name, mqtt_topic_matches is compared with
 * a simple level-by-level reference matcher, and mqtt_utf8_valid with a
 * reference validator written from Unicode Table 3-7.  Any disagreement
 * aborts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/mqtt.h"
#include "mqtt/topic_ref.h"

#include "fuzz.h"

/*
 * Reference UTF-8 validator: the well-formed byte sequences of Unicode
 * Table 3-7, then the policy topic.c documents (no C0/C1 controls, no DEL,
 * no non-characters).
 */
static bool ref_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        uint32_t c;
        size_t n;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (b <= 0x7F) {
            c = b;
            n = 1;
        } else if (b >= 0xC2 && b <= 0xDF) {
            c = b & 0x1F;
            n = 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            c = b & 0x0F;
            n = 3;
            if (b == 0xE0)
                lo = 0xA0;
            if (b == 0xED)
                hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            c = b & 0x07;
            n = 4;
            if (b == 0xF0)
                lo = 0x90;
            if (b == 0xF4)
                hi = 0x8F;
        } else {
            return false;
        }
        if (len - i < n)
            return false;
        for (size_t k = 1; k < n; k++) {
            uint8_t x = s[i + k];
            if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF))
                return false;
            c = c << 6 | (x & 0x3F);
        }
        if (c <= 0x1F || (c >= 0x7F && c <= 0x9F))
            return false;
        if ((c >= 0xFDD0 && c <= 0xFDEF) || (c & 0xFFFE) == 0xFFFE)
            return false;
        i += n;
    }
    return true;
}

/* Reference filter syntax: non-empty, '#' only as a whole last level, '+' only as a whole level. */
static bool ref_filter_syntax(const uint8_t *f, size_t flen)
{
    if (flen == 0 || flen > 0xFFFF)
        return false;
    size_t pos = 0;
    const uint8_t *lvl;
    size_t n;
    while (ref_next_level(f, flen, &pos, &lvl, &n)) {
        bool last = pos > flen;
        for (size_t i = 0; i < n; i++) {
            if (lvl[i] == '+' && n != 1)
                return false;
            if (lvl[i] == '#' && (n != 1 || !last))
                return false;
        }
    }
    return true;
}

static uint8_t *copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    FUZZ_ASSERT(c != NULL);
    if (n)
        memcpy(c, p, n);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = size ? memchr(data, 0, size) : NULL;
    size_t flen = nul ? (size_t)(nul - data) : size;
    size_t tlen = nul ? size - flen - 1 : size;
    uint8_t *f = copy(data, flen);
    uint8_t *t = copy(nul ? nul + 1 : data, tlen);

    bool f_utf8 = mqtt_utf8_valid(f, flen);
    bool t_utf8 = mqtt_utf8_valid(t, tlen);
    FUZZ_ASSERT(f_utf8 == ref_utf8_valid(f, flen));
    FUZZ_ASSERT(t_utf8 == ref_utf8_valid(t, tlen));

    bool f_valid = mqtt_topic_filter_valid(f, flen);
    bool t_name = mqtt_topic_name_valid(t, tlen);
    FUZZ_ASSERT(f_valid == (f_utf8 && ref_filter_syntax(f, flen)));
    FUZZ_ASSERT(t_name == (t_utf8 && tlen > 0 && tlen <= 0xFFFF && !memchr(t, '+', tlen) &&
                           !memchr(t, '#', tlen)));
    /* A topic name is also a filter (one without wildcards). */
    if (t_name)
        FUZZ_ASSERT(mqtt_topic_filter_valid(t, tlen));
    (void)mqtt_topic_name_valid(f, flen);
    (void)mqtt_topic_filter_valid(t, tlen);

    /* Matching must be memory-safe on anything, valid or not. */
    bool m = mqtt_topic_matches(f, flen, t, tlen);
    (void)mqtt_topic_matches(t, tlen, f, flen);
    if (f_valid && t_name) {
        if (m != ref_matches(f, flen, t, tlen)) {
            fprintf(stderr, "filter \"%.*s\" topic \"%.*s\": mqtt_topic_matches=%d\n", (int)flen,
                    (const char *)f, (int)tlen, (const char *)t, m);
            abort();
        }
        /* A topic always matches itself as a filter. */
        FUZZ_ASSERT(mqtt_topic_matches(t, tlen, t, tlen));
    }

    mqtt_bytes group = {NULL, 0}, filter = {NULL, 0};
    bool valid = true;
    bool shared = mqtt_shared_split(f, flen, &group, &filter, &valid);
    FUZZ_ASSERT(shared == (flen >= 7 && memcmp(f, "$share/", 7) == 0));
    if (!shared)
        FUZZ_ASSERT(!valid);
    if (valid) {
        FUZZ_ASSERT(group.len > 0 && group.p == f + 7);
        FUZZ_ASSERT(!memchr(group.p, '/', group.len) && !memchr(group.p, '+', group.len) &&
                    !memchr(group.p, '#', group.len));
        FUZZ_ASSERT(filter.p == group.p + group.len + 1 && filter.p + filter.len == f + flen);
        FUZZ_ASSERT(mqtt_topic_filter_valid(filter.p, filter.len));
        if (t_name) {
            bool sm = mqtt_topic_matches(filter.p, filter.len, t, tlen);
            FUZZ_ASSERT(sm == ref_matches(filter.p, filter.len, t, tlen));
        }
    }
    free(f);
    free(t);
    return 0;
}
