/*
 * topic_test.c — unit tests for the codec's validators and topic matching
 * (src/mqtt/topic.c): UTF-8 rules, topic names, topic filters, wildcard
 * matching and shared-subscription names.
 *
 * Besides hand-written tables, two exhaustive checks compare the code with
 * obviously-correct references: every code point encoded canonically (and
 * every overlong form below U+10000) through mqtt_utf8_valid, and every
 * filter/topic pair over a small alphabet through mqtt_topic_matches against
 * a level-by-level matcher.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mqtt/mqtt.h"
#include "mqtt/topic_ref.h"

#include "core/test.h"

/* -- UTF-8 ---------------------------------------------------------------------- */

static void test_utf8_table(void)
{
    static const struct {
        const char *name;
        const char *s;
        size_t len;
        bool valid;
    } cases[] = {
#define U(name, lit, valid) {name, lit, sizeof(lit) - 1, valid}
        U("empty", "", true),
        U("ascii", "hello/world", true),
        U("U+0000", "\x00", false),
        U("U+0000 inside", "a\x00b", false),
        U("U+0001", "\x01", false),
        U("U+001F", "\x1F", false),
        U("U+0020", " ", true),
        U("U+007E", "~", true),
        U("U+007F", "\x7F", false),
        U("U+0080 (C1 control)", "\xC2\x80", false),
        U("U+009F (C1 control)", "\xC2\x9F", false),
        U("U+00A0", "\xC2\xA0", true),
        U("U+00E9", "caf\xC3\xA9", true),
        U("U+07FF", "\xDF\xBF", true),
        U("U+0800", "\xE0\xA0\x80", true),
        U("U+20AC", "\xE2\x82\xAC", true),
        U("U+D7FF", "\xED\x9F\xBF", true),
        U("U+D800 (surrogate)", "\xED\xA0\x80", false),
        U("U+DBFF (surrogate)", "\xED\xAF\xBF", false),
        U("U+DC00 (surrogate)", "\xED\xB0\x80", false),
        U("U+DFFF (surrogate)", "\xED\xBF\xBF", false),
        U("surrogate pair as CESU-8", "\xED\xA0\xBD\xED\xB8\x80", false),
        U("U+E000", "\xEE\x80\x80", true),
        U("U+FDCF", "\xEF\xB7\x8F", true),
        U("U+FDD0 (non-character)", "\xEF\xB7\x90", false),
        U("U+FDEF (non-character)", "\xEF\xB7\xAF", false),
        U("U+FDF0", "\xEF\xB7\xB0", true),
        U("U+FFFD", "\xEF\xBF\xBD", true),
        U("U+FFFE (non-character)", "\xEF\xBF\xBE", false),
        U("U+FFFF (non-character)", "\xEF\xBF\xBF", false),
        U("U+10000", "\xF0\x90\x80\x80", true),
        U("U+1F600", "\xF0\x9F\x98\x80", true),
        U("U+1FFFF (non-character)", "\xF0\x9F\xBF\xBF", false),
        U("U+10FFFD (highest accepted)", "\xF4\x8F\xBF\xBD", true),
        U("U+10FFFF (max code point, non-character)", "\xF4\x8F\xBF\xBF", false),
        U("U+110000 (beyond Unicode)", "\xF4\x90\x80\x80", false),
        U("F5 lead byte", "\xF5\x80\x80\x80", false),
        U("F7 lead byte", "\xF7\xBF\xBF\xBF", false),
        U("5-byte form", "\xF8\x88\x80\x80\x80", false),
        U("6-byte form", "\xFC\x84\x80\x80\x80\x80", false),
        U("FE", "\xFE", false),
        U("FF", "\xFF", false),
        U("overlong U+0000 (C0 80)", "\xC0\x80", false),
        U("overlong '/' (C0 AF)", "\xC0\xAF", false),
        U("overlong U+007F (C1 BF)", "\xC1\xBF", false),
        U("overlong U+0000 (3 bytes)", "\xE0\x80\x80", false),
        U("overlong U+07FF (3 bytes)", "\xE0\x9F\xBF", false),
        U("overlong U+0000 (4 bytes)", "\xF0\x80\x80\x80", false),
        U("overlong U+FFFD (4 bytes)", "\xF0\x8F\xBF\xBD", false),
        U("lone continuation", "\x80", false),
        U("continuation after ascii", "a\xBF", false),
        U("truncated 2-byte", "\xC3", false),
        U("truncated 2-byte after ascii", "ab\xC3", false),
        U("truncated 3-byte (1 of 2)", "\xE2", false),
        U("truncated 3-byte (2 of 2)", "\xE2\x82", false),
        U("truncated 4-byte (3 of 3)", "\xF0\x9F\x98", false),
        U("bad continuation (ascii)", "\xE2\x28\xA1", false),
        U("bad continuation (lead)", "\xC3\xC3\xA9", false),
        U("valid then invalid", "\xC3\xA9\xFF", false),
#undef U
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_CASE(mqtt_utf8_valid((const uint8_t *)cases[i].s, cases[i].len) == cases[i].valid,
                   cases[i].name);
}

/* The policy topic.c documents: no C0/C1 controls, no DEL, no non-characters. */
static bool policy_allows(uint32_t c)
{
    if (c <= 0x1F || (c >= 0x7F && c <= 0x9F))
        return false;
    if (c >= 0xD800 && c <= 0xDFFF)
        return false;
    if ((c >= 0xFDD0 && c <= 0xFDEF) || (c & 0xFFFE) == 0xFFFE)
        return false;
    return c <= 0x10FFFF;
}

/* Encode c in exactly n bytes (n larger than needed gives an overlong form). */
static void encode_n(uint32_t c, unsigned n, uint8_t *out)
{
    static const uint8_t lead[] = {0, 0x00, 0xC0, 0xE0, 0xF0};
    for (unsigned k = n - 1; k > 0; k--) {
        out[k] = (uint8_t)(0x80 | (c & 0x3F));
        c >>= 6;
    }
    out[0] = (uint8_t)(lead[n] | c);
}

static void test_utf8_exhaustive(void)
{
    unsigned bad_accept = 0, bad_reject = 0, bad_overlong = 0;
    for (uint32_t c = 0; c <= 0x10FFFF; c++) {
        unsigned n = c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
        uint8_t buf[8];
        encode_n(c, n, buf);
        bool got = mqtt_utf8_valid(buf, n);
        if (got && !policy_allows(c))
            bad_accept++;
        if (!got && policy_allows(c))
            bad_reject++;
        /* Every longer (overlong) form is refused. */
        for (unsigned m = n + 1; m <= 4; m++) {
            encode_n(c, m, buf);
            if (mqtt_utf8_valid(buf, m))
                bad_overlong++;
        }
        /* Every truncation of a multi-byte form is refused. */
        for (unsigned k = 1; k < n; k++) {
            encode_n(c, n, buf);
            if (mqtt_utf8_valid(buf, k))
                bad_overlong++;
        }
    }
    CHECK(bad_accept == 0);
    CHECK(bad_reject == 0);
    CHECK(bad_overlong == 0);
}

/* -- topic names and filters ------------------------------------------------------ */

static void test_topic_name_valid(void)
{
    static const struct {
        const char *s;
        size_t len;
        bool valid;
    } cases[] = {
#define T(lit, valid) {lit, sizeof(lit) - 1, valid}
        T("a", true),
        T("a/b/c", true),
        T("/", true),
        T("//", true),
        T("a/b/", true),
        T("/a", true),
        T("$SYS/broker/uptime", true),
        T("caf\xC3\xA9/t", true),
        T(" ", true),
        T("", false),
        T("+", false),
        T("#", false),
        T("a/+", false),
        T("a/#", false),
        T("a+b", false),
        T("a#b", false),
        T("a\x00b", false),
        T("a/\xFF", false),
#undef T
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_CASE(mqtt_topic_name_valid((const uint8_t *)cases[i].s, cases[i].len) ==
                       cases[i].valid,
                   cases[i].s);

    /* The length limit is the two-byte string length. */
    static uint8_t big[65536];
    memset(big, 'a', sizeof(big));
    CHECK(mqtt_topic_name_valid(big, 65535));
    CHECK(!mqtt_topic_name_valid(big, 65536));
    CHECK(mqtt_topic_filter_valid(big, 65535));
    CHECK(!mqtt_topic_filter_valid(big, 65536));
}

static void test_topic_filter_valid(void)
{
    static const struct {
        const char *s;
        size_t len;
        bool valid;
    } cases[] = {
#define T(lit, valid) {lit, sizeof(lit) - 1, valid}
        T("a", true),
        T("a/b", true),
        T("#", true),
        T("+", true),
        T("/", true),
        T("/#", true),
        T("/+", true),
        T("+/", true),
        T("a/#", true),
        T("a/+", true),
        T("a/+/b", true),
        T("+/+", true),
        T("+/+/#", true),
        T("a//b", true),
        T("$SYS/#", true),
        T("$share/g/a/+", true), /* a valid filter as a string; see mqtt_shared_split */
        T("", false),
        T("##", false),
        T("a#", false),
        T("#a", false),
        T("a/#/b", false),
        T("#/", false),
        T("#/a", false),
        T("a/b#", false),
        T("++", false),
        T("a+", false),
        T("+a", false),
        T("a/+b", false),
        T("a/b+/c", false),
        T("a\x00", false),
        T("\xC0\xAF", false),
        T("a/\xED\xA0\x80", false),
#undef T
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_CASE(mqtt_topic_filter_valid((const uint8_t *)cases[i].s, cases[i].len) ==
                       cases[i].valid,
                   cases[i].s);
}

/* -- matching ------------------------------------------------------------------- */

static void test_matches_table(void)
{
    static const struct {
        const char *filter;
        const char *topic;
        bool match;
    } cases[] = {
        {"a/b", "a/b", true},
        {"a/b", "a/c", false},
        {"a/b", "a", false},
        {"a", "a/b", false},
        {"a/b", "a/b/", false},
        {"a/", "a", false},
        {"a", "a/", false},
        {"a/", "a/", true},
        {"a//b", "a//b", true},
        {"a/+", "a/b", true},
        {"a/+", "a/", true},
        {"a/+", "a", false},
        {"a/+", "a/b/c", false},
        {"a/+/c", "a/b/c", true},
        {"a/+/c", "a//c", true},
        {"a/+/c", "a/b/d", false},
        {"+", "a", true},
        {"+", "", true},
        {"+", "/", false},
        {"+/+", "/", true},
        {"+/+", "a/b", true},
        {"+/+", "a", false},
        {"/+", "/a", true},
        {"/+", "a", false},
        {"+/", "a/", true},
        {"#", "a", true},
        {"#", "a/b/c", true},
        {"#", "/", true},
        {"/#", "/", true},
        {"/#", "/a/b", true},
        {"/#", "a", false},
        {"a/#", "a", true},
        {"a/#", "a/", true},
        {"a/#", "a/b/c", true},
        {"a/#", "ab", false},
        {"a/#", "b/a", false},
        {"a/b/#", "a", false},
        {"a/+/#", "a/b", true},
        {"a/+/#", "a", false},
        {"+/#", "a", true},
        {"sport/tennis/player1/#", "sport/tennis/player1", true},
        {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
        {"sport/tennis/+", "sport/tennis/player1", true},
        {"sport/tennis/+", "sport/tennis/player1/ranking", false},
        {"sport/+", "sport", false},
        {"sport/+", "sport/", true},
        {"+/+", "/finance", true},
        {"/+", "/finance", true},
        {"+", "/finance", false},
        /* [MQTT-4.7.2-1]: $-topics and leading wildcards. */
        {"#", "$SYS/x", false},
        {"+/x", "$SYS/x", false},
        {"+/#", "$SYS/x", false},
        {"+", "$SYS", false},
        {"#", "$", false},
        {"$SYS/#", "$SYS/x", true},
        {"$SYS/#", "$SYS", true},
        {"$SYS/+", "$SYS/x", true},
        {"$SYS/x", "$SYS/x", true},
        {"a/#", "a/$b", true},
        {"a/+", "a/$b", true},
        {"#", "a$", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char name[96];
        snprintf(name, sizeof(name), "\"%s\" vs \"%s\"", cases[i].filter, cases[i].topic);
        const uint8_t *f = (const uint8_t *)cases[i].filter, *t = (const uint8_t *)cases[i].topic;
        size_t fl = strlen(cases[i].filter), tl = strlen(cases[i].topic);
        CHECK_CASE(mqtt_topic_matches(f, fl, t, tl) == cases[i].match, name);
        /* The table itself is checked against the reference. */
        CHECK_CASE(ref_matches(f, fl, t, tl) == cases[i].match, name);
    }
}

/* Every string over alphabet of length 0..maxlen, in order; returns the count. */
static size_t enumerate(const char *alphabet, size_t maxlen, char (*out)[8], size_t cap)
{
    size_t k = strlen(alphabet), n = 0;
    for (size_t len = 0; len <= maxlen; len++) {
        size_t total = 1;
        for (size_t i = 0; i < len; i++)
            total *= k;
        for (size_t idx = 0; idx < total && n < cap; idx++) {
            size_t x = idx;
            for (size_t i = 0; i < len; i++) {
                out[n][i] = alphabet[x % k];
                x /= k;
            }
            out[n][len] = '\0';
            n++;
        }
    }
    return n;
}

static void test_matches_exhaustive(void)
{
    /* Filters over {a,b,/,+,#,$} up to 5 bytes, topics over {a,b,/,$} up to 5. */
    static char filters[9331][8], topics[1365][8];
    size_t nf = enumerate("ab/+#$", 5, filters, 9331);
    size_t nt = enumerate("ab/$", 5, topics, 1365);
    CHECK(nf == 9331 && nt == 1365);
    unsigned long pairs = 0, disagree = 0, matched = 0;
    for (size_t i = 0; i < nf; i++) {
        const uint8_t *f = (const uint8_t *)filters[i];
        size_t fl = strlen(filters[i]);
        if (!mqtt_topic_filter_valid(f, fl))
            continue;
        for (size_t j = 0; j < nt; j++) {
            const uint8_t *t = (const uint8_t *)topics[j];
            size_t tl = strlen(topics[j]);
            if (!mqtt_topic_name_valid(t, tl))
                continue;
            bool got = mqtt_topic_matches(f, fl, t, tl);
            pairs++;
            matched += got;
            if (got != ref_matches(f, fl, t, tl)) {
                if (disagree++ < 5)
                    fprintf(stderr, "mismatch: filter \"%s\" topic \"%s\" got %d\n", filters[i],
                            topics[j], got);
            }
        }
    }
    CHECK(pairs > 1000000);
    CHECK(matched > 10000); /* the comparison is not vacuous */
    CHECK(disagree == 0);
}

/* -- filter coverage ------------------------------------------------------------ */

static void test_covers_table(void)
{
    static const struct {
        const char *rule, *req;
        bool covered;
    } cases[] = {
        {"devices/d1/#", "devices/d1/#", true},
        {"devices/d1/#", "devices/d1", true}, /* "a/#" matches "a" */
        {"devices/d1/#", "devices/d1/commands/+", true},
        {"devices/d1/#", "devices/d1/+/x/#", true},
        {"devices/d1/commands/#", "devices/d1/#", false},
        {"devices/d1/commands/+", "devices/d1/commands/+", true},
        {"devices/d1/commands/+", "devices/d1/commands/reboot", true},
        {"devices/d1/commands/+", "devices/d1/commands/#", false},
        {"devices/d1/commands/+", "devices/d1/commands", false},
        {"devices/d1/commands/+", "devices/d1/commands/a/b", false},
        {"devices/d1/telemetry", "devices/d1/telemetry", true},
        {"devices/d1/telemetry", "devices/d1/+", false},
        {"devices/d1/telemetry", "devices/d2/telemetry", false},
        {"devices/+/x", "devices/d1/x", true},
        {"devices/+/x", "devices/+/x", true},
        {"#", "a/b", true},
        {"#", "#", true},
        {"#", "$SYS/x", false}, /* a leading wildcard never reaches $-topics */
        {"+/#", "#", true},     /* every topic has a first level */
        {"+/+/#", "#", false},
        {"a/+/#", "a/#", false},
        {"$SYS/#", "$SYS/x", true},
        {"a", "a/", false},
        {"a/", "a/+", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char name[96];
        snprintf(name, sizeof(name), "%s covers %s", cases[i].rule, cases[i].req);
        CHECK_CASE(mqtt_filter_covers((const uint8_t *)cases[i].rule, strlen(cases[i].rule),
                                      (const uint8_t *)cases[i].req,
                                      strlen(cases[i].req)) == cases[i].covered,
                   name);
    }
}

/* Against the definition: rule covers req iff every topic req matches, rule
 * matches — over every filter up to 4 bytes and topic up to 5 of a small
 * alphabet (as bitsets of the topics each filter matches). */
static void test_covers_exhaustive(void)
{
    enum {
        NT = 1365,
        W = (NT + 63) / 64
    };
    static char filters[1555][8], topics[NT][8];
    static uint64_t sets[1555][W];
    size_t nf = enumerate("ab/+#$", 4, filters, 1555);
    size_t nt = enumerate("ab/$", 5, topics, NT);
    CHECK(nf == 1555 && nt == NT);
    size_t valid[1555], nv = 0;
    for (size_t i = 0; i < nf; i++) {
        const uint8_t *f = (const uint8_t *)filters[i];
        size_t fl = strlen(filters[i]);
        if (!mqtt_topic_filter_valid(f, fl))
            continue;
        valid[nv++] = i;
        for (size_t j = 0; j < nt; j++) {
            size_t tl = strlen(topics[j]);
            if (mqtt_topic_name_valid((const uint8_t *)topics[j], tl) &&
                mqtt_topic_matches(f, fl, (const uint8_t *)topics[j], tl))
                sets[i][j / 64] |= 1ull << (j % 64);
        }
    }
    unsigned long pairs = 0, covered = 0, disagree = 0;
    for (size_t a = 0; a < nv; a++) {
        for (size_t b = 0; b < nv; b++) {
            size_t r = valid[a], q = valid[b];
            bool want = true;
            for (size_t w = 0; w < W && want; w++)
                want = (sets[q][w] & ~sets[r][w]) == 0;
            bool got = mqtt_filter_covers((const uint8_t *)filters[r], strlen(filters[r]),
                                          (const uint8_t *)filters[q], strlen(filters[q]));
            pairs++;
            covered += got;
            if (got != want && disagree++ < 5)
                fprintf(stderr, "covers: rule \"%s\" request \"%s\" got %d\n", filters[r],
                        filters[q], got);
        }
    }
    CHECK(pairs > 10000);
    CHECK(covered > 1000); /* not vacuous */
    CHECK(disagree == 0);
}

/* -- shared subscriptions --------------------------------------------------------- */

static void test_shared_split(void)
{
    static const struct {
        const char *s;
        bool shared;
        bool valid;
        const char *group;
        const char *filter;
    } cases[] = {
        {"$share/g/a/b", true, true, "g", "a/b"},
        {"$share/g/#", true, true, "g", "#"},
        {"$share/group-1/+/x", true, true, "group-1", "+/x"},
        {"$share/g/$SYS/#", true, true, "g", "$SYS/#"},
        {"$share/g//", true, true, "g", "/"},
        {"$share/g/", true, false, NULL, NULL},   /* no filter */
        {"$share/g", true, false, NULL, NULL},    /* no filter */
        {"$share/", true, false, NULL, NULL},     /* no group */
        {"$share//a", true, false, NULL, NULL},   /* empty group */
        {"$share/g+/a", true, false, NULL, NULL}, /* wildcard in group */
        {"$share/#/a", true, false, NULL, NULL},
        {"$share/+/a", true, false, NULL, NULL},
        {"$share/g/a#", true, false, NULL, NULL}, /* bad filter */
        {"$share/g/a/#/b", true, false, NULL, NULL},
        {"$share", false, false, NULL, NULL},
        {"$sharex/g/a", false, false, NULL, NULL},
        {"$SHARE/g/a", false, false, NULL, NULL},
        {"share/g/a", false, false, NULL, NULL},
        {"a/b", false, false, NULL, NULL},
        {"", false, false, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mqtt_bytes group = {NULL, 0}, filter = {NULL, 0};
        bool valid = true;
        const uint8_t *s = (const uint8_t *)cases[i].s;
        size_t len = strlen(cases[i].s);
        bool shared = mqtt_shared_split(s, len, &group, &filter, &valid);
        CHECK_CASE(shared == cases[i].shared, cases[i].s);
        CHECK_CASE(valid == cases[i].valid, cases[i].s);
        if (cases[i].group) {
            CHECK_CASE(group.len == strlen(cases[i].group) &&
                           memcmp(group.p, cases[i].group, group.len) == 0,
                       cases[i].s);
            CHECK_CASE(filter.len == strlen(cases[i].filter) &&
                           memcmp(filter.p, cases[i].filter, filter.len) == 0,
                       cases[i].s);
            /* Views into the input, not copies. */
            CHECK_CASE(group.p == s + 7 && filter.p + filter.len == s + len, cases[i].s);
        }
    }
}

int main(void)
{
    test_utf8_table();
    test_utf8_exhaustive();
    test_topic_name_valid();
    test_topic_filter_valid();
    test_matches_table();
    test_matches_exhaustive();
    test_covers_table();
    test_covers_exhaustive();
    test_shared_split();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
