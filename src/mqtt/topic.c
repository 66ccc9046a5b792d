/*
 * topic.c — UTF-8 rules (§1.5.4), topic name and filter validation (§4.7),
 * topic matching and shared-subscription names (§4.8.2).
 *
 * UTF-8: besides well-formedness (no overlongs, no surrogates, nothing past
 * U+10FFFF) we refuse U+0000 as the spec requires, and also the control
 * characters U+0001..U+001F and U+007F..U+009F and the non-characters, which
 * the spec says a receiver MAY refuse; refusing them keeps log lines, topic
 * names and downstream JSON clean.
 */
#include <string.h>

#include "mqtt/mqtt_int.h"

bool mqtt_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint32_t c = s[i];
        unsigned n;
        if (c < 0x80) {
            n = 0;
        } else if ((c & 0xE0) == 0xC0) {
            c &= 0x1F;
            n = 1;
        } else if ((c & 0xF0) == 0xE0) {
            c &= 0x0F;
            n = 2;
        } else if ((c & 0xF8) == 0xF0) {
            c &= 0x07;
            n = 3;
        } else {
            return false;
        }
        if (n > 0 && i + n >= len)
            return false; /* truncated sequence */
        for (unsigned k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            c = (c << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 1 && c < 0x80) || (n == 2 && c < 0x800) || (n == 3 && c < 0x10000))
            return false; /* overlong */
        if (c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
            return false;
        if (c <= 0x1F || (c >= 0x7F && c <= 0x9F))
            return false;
        if ((c >= 0xFDD0 && c <= 0xFDEF) || (c & 0xFFFE) == 0xFFFE)
            return false;
        i += n + 1;
    }
    return true;
}

bool mqtt_topic_name_valid(const uint8_t *s, size_t len)
{
    if (len == 0 || len > 0xFFFF)
        return false;
    if (memchr(s, '+', len) || memchr(s, '#', len))
        return false;
    return mqtt_utf8_valid(s, len);
}

bool mqtt_topic_filter_valid(const uint8_t *s, size_t len)
{
    if (len == 0 || len > 0xFFFF)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+') {
            if ((i > 0 && s[i - 1] != '/') || (i + 1 < len && s[i + 1] != '/'))
                return false;
        } else if (s[i] == '#') {
            if (i + 1 != len || (i > 0 && s[i - 1] != '/'))
                return false;
        }
    }
    return mqtt_utf8_valid(s, len);
}

bool mqtt_topic_matches(const uint8_t *f, size_t flen, const uint8_t *t, size_t tlen)
{
    size_t fi = 0, ti = 0;
    /* [MQTT-4.7.2-1] $-topics are not matched by a filter starting with a wildcard. */
    if (tlen > 0 && t[0] == '$' && flen > 0 && (f[0] == '+' || f[0] == '#'))
        return false;
    for (;;) {
        if (fi < flen && f[fi] == '#')
            return true; /* matches this level and everything below, parent included */
        if (fi < flen && f[fi] == '+') {
            while (ti < tlen && t[ti] != '/')
                ti++;
            fi++;
        } else {
            while (fi < flen && ti < tlen && f[fi] != '/' && t[ti] != '/') {
                if (f[fi] != t[ti])
                    return false;
                fi++;
                ti++;
            }
            if ((fi < flen && f[fi] != '/') || (ti < tlen && t[ti] != '/'))
                return false;
        }
        /* Both at a level end. */
        if (fi == flen && ti == tlen)
            return true;
        if (fi == flen)
            return false;
        if (ti == tlen) {
            /* "a/#" matches "a": the filter may end with "/#". */
            return flen - fi == 2 && f[fi] == '/' && f[fi + 1] == '#';
        }
        fi++; /* skip '/' in both */
        ti++;
    }
}

bool mqtt_filter_covers(const uint8_t *f, size_t flen, const uint8_t *q, size_t qlen)
{
    /* [MQTT-4.7.2-1]: a leading wildcard in the rule does not reach $-topics, and
     * a request that could name one (leading '$', or a leading wildcard, which
     * matches no $-topic either) is judged by the same rule as a name. */
    if (qlen > 0 && q[0] == '$' && flen > 0 && (f[0] == '+' || f[0] == '#'))
        return false;
    size_t fi = 0, qi = 0;
    for (;;) {
        if (fi < flen && f[fi] == '#')
            return true; /* this level and everything below, parent included */
        size_t fe = fi, qe = qi;
        while (fe < flen && f[fe] != '/')
            fe++;
        while (qe < qlen && q[qe] != '/')
            qe++;
        bool q_plus = qe - qi == 1 && q[qi] == '+';
        bool q_hash = qe - qi == 1 && q[qi] == '#';
        if (q_hash) {
            /* Only a rule '#' (above) covers a request '#' — except that a rule
             * "+/#" there covers it when the request's parent would be the empty
             * topic ("#", "/#"), which is no topic: '#' then needs a level too. */
            bool empty_parent = qi == 0 || (qi == 1 && q[0] == '/');
            return empty_parent && flen - fi == 3 && memcmp(f + fi, "+/#", 3) == 0;
        }
        if (fe - fi == 1 && f[fi] == '+') {
            /* covers a literal or '+' */
        } else if (q_plus || fe - fi != qe - qi || memcmp(f + fi, q + qi, fe - fi) != 0) {
            return false;
        }
        fi = fe;
        qi = qe;
        if (fi == flen && qi == qlen)
            return true;
        if (fi == flen)
            return false; /* the request goes deeper than the rule */
        if (qi == qlen)   /* "a/#" covers "a" */
            return flen - fi == 2 && f[fi] == '/' && f[fi + 1] == '#';
        fi++; /* skip '/' in both */
        qi++;
    }
}

bool mqtt_shared_split(const uint8_t *s, size_t len, mqtt_bytes *group, mqtt_bytes *filter,
                       bool *valid)
{
    static const char prefix[] = "$share/";
    const size_t plen = sizeof(prefix) - 1;
    *valid = false;
    if (len < plen || memcmp(s, prefix, plen) != 0)
        return false;
    const uint8_t *g = s + plen;
    const uint8_t *slash = memchr(g, '/', len - plen);
    if (!slash || slash == g)
        return true;
    for (const uint8_t *p = g; p < slash; p++)
        if (*p == '+' || *p == '#')
            return true;
    group->p = g;
    group->len = (uint32_t)(slash - g);
    filter->p = slash + 1;
    filter->len = (uint32_t)(len - plen - group->len - 1);
    *valid = filter->len > 0 && mqtt_topic_filter_valid(filter->p, filter->len);
    return true;
}
