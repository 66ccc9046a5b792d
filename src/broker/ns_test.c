/*
 * ns_test.c — unit tests for tenant namespaces (src/broker/ns.c, ADR-0009):
 * which namespaces are valid, which global topics are allowed under "$T/",
 * the internal form of a client's filters, and session keys.
 *
 * One exhaustive check states the isolation property itself: over a small
 * alphabet, a filter of one namespace (in its internal form) never matches a
 * topic of another namespace, a global filter that does not start with "$T"
 * never matches a namespaced topic, and stripping the prefix of every topic a
 * namespace's filter matches gives back the topic the tenant published.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"

#include "core/test.h"

static void test_ns_valid(void)
{
    static const struct {
        const char *ns;
        bool valid;
    } cases[] = {
        {"$T/acme", true},    {"$T/a", true},     {"$T/caf\xC3\xA9", true},
        {"$T/a-b_c.d", true}, {"", false},        {"$T/", false},
        {"$T", false},        {"$t/acme", false}, {"T/acme", false},
        {"acme", false},      {"$T/a/b", false},  {"$T/a+", false},
        {"$T/#", false},      {"$T/\xC3", false}, {"$SYS/x", false},
        {"$share/g", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_CASE(drv_auth_ns_valid(cases[i].ns, strlen(cases[i].ns)) == cases[i].valid,
                   cases[i].ns);
    char big[DRV_AUTH_NS_MAX + 2];
    memset(big, 'x', sizeof(big));
    memcpy(big, "$T/", 3);
    CHECK(drv_auth_ns_valid(big, DRV_AUTH_NS_MAX));
    CHECK(!drv_auth_ns_valid(big, DRV_AUTH_NS_MAX + 1));
    CHECK(!drv_auth_ns_valid("$T/a\0b", 6)); /* a NUL would cut the session key */
}

static void test_global_topic_ok(void)
{
    static const struct {
        const char *t;
        bool ok;
    } cases[] = {
        {"a/b", true},
        {"$SYS/x", true}, /* refused elsewhere (handle_publish), not a namespace matter */
        {"$T", true},
        {"$Tx/a", true},
        {"$T/acme/x", true},
        {"$T/acme/x/y", true},
        {"$T/acme//", true},
        {"$T/acme", false},
        {"$T/acme/", false},
        {"$T//x", false},
        {"$T/", false},
        {"$T/acme/$SYS/x", false},
        {"$T/acme/$x", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_CASE(ns_global_topic_ok((const uint8_t *)cases[i].t, strlen(cases[i].t)) ==
                       cases[i].ok,
                   cases[i].t);
}

/* A session as the broker builds it, without a broker (enough for ns.c). */
static session *fake_session(const char *id, const char *ns)
{
    uint8_t key[512];
    size_t klen = session_key(key, (const uint8_t *)id, strlen(id), ns, strlen(ns));
    session *s = drv_calloc(1, offsetof(session, client_id) + klen + 1);
    if (!s)
        return NULL;
    memcpy(s->client_id, key, klen);
    s->h.key = s->client_id;
    s->h.klen = (uint32_t)klen;
    s->ns_len = (uint8_t)strlen(ns);
    return s;
}

static void test_session_key(void)
{
    session *g = fake_session("sensor-1", "");
    session *a = fake_session("sensor-1", "$T/acme");
    CHECK(g && a);
    if (!g || !a)
        return;
    CHECK(g->h.klen == 8 && strcmp(session_ns(g), "") == 0 && session_prefix_len(g) == 0);
    CHECK(a->h.klen == 8 + 1 + 7);
    CHECK(strcmp(a->client_id, "sensor-1") == 0); /* still a C string */
    CHECK(strcmp(session_ns(a), "$T/acme") == 0 && session_prefix_len(a) == 8);
    CHECK(memcmp(a->client_id, "sensor-1\0$T/acme", 16) == 0);
    drv_free(g);
    drv_free(a);
}

static void test_internal_filter(void)
{
    session *g = fake_session("c", "");
    session *a = fake_session("c", "$T/acme");
    CHECK(g && a);
    if (!g || !a)
        return;
    static const struct {
        const char *in, *global, *acme;
    } cases[] = {
        {"#", "#", "$T/acme/#"},
        {"a/+/c", "a/+/c", "$T/acme/a/+/c"},
        {"$share/g/jobs/#", "$share/g/jobs/#", "$share/g/$T/acme/jobs/#"},
        {"$share/g/#", "$share/g/#", "$share/g/$T/acme/#"},
        /* Malformed share names are refused before this; they stay inside anyway. */
        {"$share/g", "$share/g", "$T/acme/$share/g"},
        {"/", "/", "$T/acme//"},
    };
    char buf[16]; /* small: some results take the allocation path */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int w = 0; w < 2; w++) {
            const session *s = w ? a : g;
            const char *want = w ? cases[i].acme : cases[i].global;
            size_t len = 0;
            char *f = ns_internal_filter(s, (const uint8_t *)cases[i].in, strlen(cases[i].in), buf,
                                         sizeof(buf), &len);
            CHECK_CASE(f && len == strlen(want) && strcmp(f, want) == 0, cases[i].in);
            if (f != buf)
                drv_free(f);
        }
    }
    /* The internal form must fit 16-bit lengths (msg topics, log strings). */
    static uint8_t big[65535];
    memset(big, 'x', sizeof(big));
    size_t len = 0;
    char *f = ns_internal_filter(g, big, sizeof(big), buf, sizeof(buf), &len);
    CHECK(f && len == sizeof(big));
    if (f != buf)
        drv_free(f);
    /* "$T/acme/" is 8 bytes: 65,527 bytes of filter fit exactly, one more does not. */
    f = ns_internal_filter(a, big, sizeof(big) - 8, buf, sizeof(buf), &len);
    CHECK(f && len == 65535 && memcmp(f, "$T/acme/xx", 10) == 0);
    if (f != buf)
        drv_free(f);
    CHECK(!ns_internal_filter(a, big, sizeof(big) - 7, buf, sizeof(buf), &len) && len == 65536);
    drv_free(g);
    drv_free(a);
}

/* -- the isolation property, exhaustively over a small alphabet --------------------- */

/* Every string of length 1..max over alphabet, as topics (no wildcards) or filters. */
static size_t gen(const char *alphabet, size_t max, char out[][8], size_t cap)
{
    size_t n = 0, k = strlen(alphabet);
    for (size_t len = 1; len <= max; len++) {
        size_t total = 1;
        for (size_t i = 0; i < len; i++)
            total *= k;
        for (size_t v = 0; v < total && n < cap; v++) {
            size_t x = v;
            for (size_t i = 0; i < len; i++, x /= k)
                out[n][i] = alphabet[x % k];
            out[n][len] = '\0';
            n++;
        }
    }
    return n;
}

static void test_isolation_exhaustive(void)
{
    static const char *const nss[] = {"$T/a", "$T/b", "$T/ab"};
    static char topics[2000][8], filters[2000][8];
    /* Tenant topics: no leading '$' (refused), valid names. */
    size_t nt = gen("a/$", 4, topics, 2000);
    size_t nf = gen("a/+#$", 4, filters, 2000);
    char it[64], ifl[64];
    size_t checked = 0;
    for (size_t ti = 0; ti < nt; ti++) {
        const char *t = topics[ti];
        if (t[0] == '$' || !mqtt_topic_name_valid((const uint8_t *)t, strlen(t)))
            continue;
        for (size_t na = 0; na < 3; na++) {
            snprintf(it, sizeof(it), "%s/%s", nss[na], t);
            size_t il = strlen(it);
            for (size_t fi = 0; fi < nf; fi++) {
                const char *f = filters[fi];
                size_t fl = strlen(f);
                if (!mqtt_topic_filter_valid((const uint8_t *)f, fl))
                    continue;
                /* A global filter that does not name "$T" never sees tenant topics. */
                if (f[0] != '$')
                    CHECK_CASE(!mqtt_topic_matches((const uint8_t *)f, fl, (const uint8_t *)it, il),
                               it);
                if (f[0] == '$')
                    continue; /* refused for namespaced clients */
                for (size_t nb = 0; nb < 3; nb++) {
                    snprintf(ifl, sizeof(ifl), "%s/%s", nss[nb], f);
                    bool m = mqtt_topic_matches((const uint8_t *)ifl, strlen(ifl),
                                                (const uint8_t *)it, il);
                    bool plain =
                        mqtt_topic_matches((const uint8_t *)f, fl, (const uint8_t *)t, strlen(t));
                    /* Inside one namespace, matching is exactly the client's view. */
                    CHECK_CASE(m == (na == nb && plain), ifl);
                    checked++;
                }
            }
        }
    }
    CHECK(checked > 10000);
}

int main(void)
{
    test_ns_valid();
    test_global_topic_ok();
    test_session_key();
    test_internal_filter();
    test_isolation_exhaustive();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
