/*
 * topic_ref.h — a deliberately naive reference topic matcher, for the unit
 * tests and the fuzzer to check mqtt_topic_matches against.  Not used by the
 * broker: it splits both strings level by level and is easy to read, not fast.
 *
 * '+' matches exactly one level, '#' the remaining levels including none
 * ("a/#" matches "a"); a filter starting with a wildcard does not match a
 * topic starting with '$' [MQTT-4.7.2-1].
 */
#ifndef DRV_MQTT_TOPIC_REF_H
#define DRV_MQTT_TOPIC_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The next '/'-separated level of s from *pos; false after the last one. */
static inline bool ref_next_level(const uint8_t *s, size_t len, size_t *pos, const uint8_t **lvl,
                                  size_t *lvl_len)
{
    if (*pos > len)
        return false;
    const uint8_t *start = s + *pos;
    size_t n = 0;
    while (*pos + n < len && start[n] != '/')
        n++;
    *lvl = start;
    *lvl_len = n;
    *pos += n + 1; /* past the '/' (or one past the end) */
    return true;
}

static inline bool ref_matches(const uint8_t *f, size_t flen, const uint8_t *t, size_t tlen)
{
    if (tlen > 0 && t[0] == '$' && flen > 0 && (f[0] == '+' || f[0] == '#'))
        return false;
    size_t fp = 0, tp = 0;
    const uint8_t *fl, *tl;
    size_t fn, tn;
    for (;;) {
        bool fmore = ref_next_level(f, flen, &fp, &fl, &fn);
        if (fmore && fn == 1 && fl[0] == '#')
            return true;
        bool tmore = ref_next_level(t, tlen, &tp, &tl, &tn);
        if (!fmore || !tmore)
            return fmore == tmore;
        if (fn == 1 && fl[0] == '+')
            continue;
        if (fn != tn || memcmp(fl, tl, fn) != 0)
            return false;
    }
}

#endif
