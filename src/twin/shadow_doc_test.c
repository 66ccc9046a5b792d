/*
 * shadow_doc_test.c — unit tests for the shadow document model
 * (src/twin/shadow_doc.c): every example of RFC 7386 appendix A applied as a
 * desired patch, removals, nested merges, whole-array replacement, section
 * clears, no-op updates (no version, no timestamp), versions, the metadata
 * mirror through every change of shape, the delta, expected versions, the
 * size and depth limits at their edge and one past it, every refusal of the
 * request parser, client tokens, shadow names, the stored form (round trip
 * and every malformed shape), rendering, drv_shadow_meta_of, and allocation
 * failure at every allocation (jansson allocates through core/alloc here,
 * so drv_mem_fail_at reaches it and drv_mem_used finds leaks).
 *
 * The metadata checks do not trust the implementation's view of a change:
 * stamps_ok() walks the old and new sections itself and requires the old
 * stamp exactly where the leaf kept its value, and `now` everywhere else.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "twin/shadow_doc.h"

#include "core/test.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

/* Parse test JSON (any value); NULL and a message when the text is bad. */
static json_t *J(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if (!j)
        fprintf(stderr, "bad test JSON: %s: %s\n", text, err.text);
    return j;
}

/* v equals the JSON text. */
static bool same(const json_t *v, const char *text)
{
    json_t *w = J(text);
    bool eq = v && w && json_equal(v, w);
    json_decref(w);
    return eq;
}

/* The metadata mirror a section would have if every leaf was set at ms. */
static json_t *mirror_of(const json_t *v, int64_t ms)
{
    json_t *m = json_object();
    if (!json_is_object(v)) {
        json_object_set_new(m, "timestamp", json_integer(ms));
        return m;
    }
    const char *k;
    json_t *c;
    json_object_foreach((json_t *)v, k, c) json_object_set_new(m, k, mirror_of(c, ms));
    return m;
}

/* meta has exactly section's shape: an object per object, {"timestamp": N}
 * per leaf. */
static bool mirror_shape(const json_t *section, const json_t *meta)
{
    if (!json_is_object(meta) || json_object_size(meta) != json_object_size(section))
        return false;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)section, k, v)
    {
        json_t *m = json_object_get(meta, k);
        if (json_is_object(v)) {
            if (!mirror_shape(v, m))
                return false;
        } else if (json_object_size(m) != 1 || !json_is_integer(json_object_get(m, "timestamp"))) {
            return false;
        }
    }
    return true;
}

/*
 * The timestamps of the new section's leaves: a leaf whose value is the
 * same as at the same path of the old section keeps its old stamp, every
 * other leaf (added, changed, or under a member that changed shape) has now.
 */
static bool stamps_ok(const json_t *old, const json_t *old_meta, const json_t *cur,
                      const json_t *meta, int64_t now)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)cur, k, v)
    {
        json_t *ov = json_is_object(old) ? json_object_get(old, k) : NULL;
        json_t *om = json_is_object(old_meta) ? json_object_get(old_meta, k) : NULL;
        json_t *m = json_object_get(meta, k);
        if (json_is_object(v)) {
            if (!stamps_ok(json_is_object(ov) ? ov : NULL, om, v, m, now))
                return false;
            continue;
        }
        json_int_t ts = json_integer_value(json_object_get(m, "timestamp"));
        bool kept = ov && !json_is_object(ov) && json_equal(ov, v);
        json_int_t want = kept ? json_integer_value(json_object_get(om, "timestamp")) : now;
        if (ts != want)
            return false;
    }
    return true;
}

/* The timestamp at a dotted path of a mirror; -1 when there is none. */
static int64_t ts_at(const json_t *meta, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    const json_t *m = meta;
    for (char *save = NULL, *p = strtok_r(buf, ".", &save); p; p = strtok_r(NULL, ".", &save))
        m = json_object_get(m, p);
    json_t *t = json_object_get(m, "timestamp");
    return json_is_integer(t) ? json_integer_value(t) : -1;
}

/* Parse and apply one request; the request is released afterwards. */
static drv_err update_max(drv_shadow *sh, const char *req_text, int64_t now, size_t max,
                          bool *changed)
{
    json_t *req = J(req_text);
    drv_shadow_update up;
    const char *why = NULL;
    bool ch = false;
    drv_err e = drv_shadow_parse_update(req, &up, &why);
    if (e == DRV_OK)
        e = drv_shadow_apply(sh, &up, now, max, &ch, &why);
    if (e != DRV_OK && e != DRV_CONFLICT && e != DRV_NOMEM)
        CHECK_CASE(why != NULL, req_text);
    if (changed)
        *changed = ch;
    json_decref(req);
    return e;
}

static drv_err update(drv_shadow *sh, const char *req_text, int64_t now, bool *changed)
{
    return update_max(sh, req_text, now, 65536, changed);
}

/* Apply a patch to one section ("desired" or "reported"). */
static drv_err patch(drv_shadow *sh, const char *section, const char *patch_text, int64_t now,
                     bool *changed)
{
    char req[4096];
    snprintf(req, sizeof(req), "{\"state\":{\"%s\":%s}}", section, patch_text);
    return update(sh, req, now, changed);
}

/* A deep enough picture of sh to tell whether anything moved. */
static json_t *snapshot(const drv_shadow *sh)
{
    json_t *s = drv_shadow_to_stored(sh);
    if (s) {
        json_object_set_new(s, "version", json_integer(sh->version));
        json_object_set_new(s, "ts", json_integer(sh->ts_ms));
    }
    return s;
}

static bool unchanged(const drv_shadow *sh, const json_t *snap)
{
    json_t *now = snapshot(sh);
    bool eq = now && json_equal(now, snap);
    json_decref(now);
    return eq;
}

/* A section-level patch nesting `depth` objects: {"a":{"a":..{"a":1}}}. */
static json_t *nested_objects(int depth)
{
    json_t *v = json_integer(1);
    for (int i = 0; i < depth; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "a", v);
        v = o;
    }
    return v;
}

/* {"a": [[..[1]..]]} with `arrays` arrays: the section is arrays + 1 deep. */
static json_t *nested_arrays(int arrays)
{
    json_t *v = json_integer(1);
    for (int i = 0; i < arrays; i++) {
        json_t *a = json_array();
        json_array_append_new(a, v);
        v = a;
    }
    json_t *o = json_object();
    json_object_set_new(o, "a", v);
    return o;
}

/* ------------------------------------------------------------------------ */
/* Names and tokens                                                          */

static void test_names(void)
{
    static const struct {
        const char *name;
        bool ok;
    } cases[] = {
        {"", true},          {"ok", true},           {"firmware-v2:main_1", true},
        {"ABCxyz019", true}, {"classic", false},     {"$x", false},
        {"$", false},        {"a b", false},         {"a/b", false},
        {"a.b", false},      {"caf\xc3\xa9", false}, {"+", false},
        {"#", false},        {"Classic", true}, /* only the exact REST name is reserved */
        {"classic2", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_CASE(drv_shadow_name_valid(cases[i].name) == cases[i].ok, cases[i].name);
    CHECK(!drv_shadow_name_valid(NULL));

    char name[DRV_SHADOW_NAME_MAX + 2];
    memset(name, 'n', sizeof(name));
    name[DRV_SHADOW_NAME_MAX] = '\0';
    CHECK(drv_shadow_name_valid(name)); /* 64 */
    name[DRV_SHADOW_NAME_MAX] = 'n';
    name[DRV_SHADOW_NAME_MAX + 1] = '\0';
    CHECK(!drv_shadow_name_valid(name)); /* 65 */
}

static void test_client_token(void)
{
    char text[256];
    char tok[DRV_SHADOW_TOKEN_MAX + 2];
    memset(tok, 't', sizeof(tok));
    tok[DRV_SHADOW_TOKEN_MAX] = '\0';

    json_t *req = J("{\"state\":{\"reported\":{}},\"client_token\":\"abc\"}");
    CHECK(strcmp(drv_shadow_client_token(req), "abc") == 0);
    json_decref(req);

    /* A request that does not parse still gives its token back. */
    req = J("{\"state\":5,\"client_token\":\"t1\",\"bogus\":1}");
    drv_shadow_update up;
    const char *why = NULL;
    CHECK(drv_shadow_parse_update(req, &up, &why) == DRV_INVAL);
    CHECK(strcmp(drv_shadow_client_token(req), "t1") == 0);
    json_decref(req);

    snprintf(text, sizeof(text), "{\"client_token\":\"%s\"}", tok);
    req = J(text);
    CHECK(drv_shadow_client_token(req) && strlen(drv_shadow_client_token(req)) == 64);
    json_decref(req);
    tok[DRV_SHADOW_TOKEN_MAX] = 't';
    tok[DRV_SHADOW_TOKEN_MAX + 1] = '\0';
    snprintf(text, sizeof(text), "{\"client_token\":\"%s\"}", tok);
    req = J(text);
    CHECK(drv_shadow_client_token(req) == NULL); /* 65 bytes */
    json_decref(req);

    static const char *const none[] = {"{}",
                                       "{\"client_token\":5}",
                                       "{\"client_token\":null}",
                                       "{\"client_token\":[\"a\"]}",
                                       "[\"client_token\"]",
                                       "\"client_token\""};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        req = J(none[i]);
        CHECK_CASE(drv_shadow_client_token(req) == NULL, none[i]);
        json_decref(req);
    }
    CHECK(drv_shadow_client_token(NULL) == NULL);

    /* A NUL inside would cut the C string the caller echoes. */
    req = json_object();
    json_object_set_new(req, "client_token", json_stringn("a\0b", 3));
    CHECK(drv_shadow_client_token(req) == NULL);
    json_decref(req);
}

/* ------------------------------------------------------------------------ */
/* Parsing update requests                                                   */

static void test_parse_errors(void)
{
    static const char *const bad[] = {
        "[]",
        "1",
        "null",
        "\"state\"",
        "{}",
        "{\"version\":1}",
        "{\"state\":{\"desired\":{}},\"foo\":1}",
        "{\"state\":{\"desired\":{}},\"State\":1}",
        "{\"state\":1}",
        "{\"state\":[]}",
        "{\"state\":null}",
        "{\"state\":\"x\"}",
        "{\"state\":{}}",
        "{\"state\":{\"delta\":{}}}",
        "{\"state\":{\"desired\":{},\"delta\":{}}}",
        "{\"state\":{\"desired\":1}}",
        "{\"state\":{\"desired\":\"x\"}}",
        "{\"state\":{\"desired\":true}}",
        "{\"state\":{\"desired\":[]}}",
        "{\"state\":{\"reported\":[1]}}",
        "{\"state\":{\"reported\":{},\"desired\":2.5}}",
        "{\"state\":{\"reported\":{}},\"version\":0}",
        "{\"state\":{\"reported\":{}},\"version\":-1}",
        "{\"state\":{\"reported\":{}},\"version\":1.5}",
        "{\"state\":{\"reported\":{}},\"version\":1.0}",
        "{\"state\":{\"reported\":{}},\"version\":\"1\"}",
        "{\"state\":{\"reported\":{}},\"version\":null}",
        "{\"state\":{\"reported\":{}},\"client_token\":1}",
        "{\"state\":{\"reported\":{}},\"client_token\":null}",
        "{\"state\":{\"reported\":{}},\"client_token\":{}}",
        ("{\"state\":{\"reported\":{}},\"client_token\":"
         "\"01234567890123456789012345678901234567890123456789012345678901234\"}"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *req = J(bad[i]);
        drv_shadow_update up;
        const char *why = NULL;
        CHECK_CASE(drv_shadow_parse_update(req, &up, &why) == DRV_INVAL, bad[i]);
        CHECK_CASE(why != NULL && why[0] != '\0', bad[i]);
        CHECK_CASE(!up.desired && !up.reported && !up.expected_version && !up.client_token, bad[i]);
        json_decref(req);
    }
    /* why may be NULL. */
    json_t *req = J("{}");
    drv_shadow_update up;
    CHECK(drv_shadow_parse_update(req, &up, NULL) == DRV_INVAL);
    json_decref(req);
}

static void test_parse_ok(void)
{
    drv_shadow_update up;
    const char *why = NULL;
    json_t *req = J("{\"state\":{\"reported\":{\"a\":1}},\"version\":3,\"client_token\":\"tok\"}");
    CHECK(drv_shadow_parse_update(req, &up, &why) == DRV_OK);
    CHECK(up.desired == NULL && same(up.reported, "{\"a\":1}"));
    CHECK(up.expected_version == 3 && strcmp(up.client_token, "tok") == 0);
    json_decref(req);

    req = J("{\"state\":{\"desired\":null}}");
    CHECK(drv_shadow_parse_update(req, &up, &why) == DRV_OK);
    CHECK(json_is_null(up.desired) && up.reported == NULL);
    CHECK(up.expected_version == 0 && up.client_token == NULL);
    json_decref(req);

    req = J("{\"client_token\":\"\",\"state\":{\"desired\":{},\"reported\":null}}");
    CHECK(drv_shadow_parse_update(req, &up, &why) == DRV_OK);
    CHECK(same(up.desired, "{}") && json_is_null(up.reported));
    CHECK(up.client_token && up.client_token[0] == '\0');
    json_decref(req);
}

/* ------------------------------------------------------------------------ */
/* Merging                                                                   */

/* sh with desired set to the JSON text by hand (any members, even null
 * ones, which no update can produce), every leaf stamped at ms. */
static void shadow_with(drv_shadow *sh, json_t *desired, int64_t ms)
{
    CHECK(drv_shadow_init(sh) == DRV_OK);
    json_decref(sh->desired);
    json_decref(sh->meta_desired);
    sh->desired = desired;
    sh->meta_desired = mirror_of(desired, ms);
    sh->version = 1;
    sh->ts_ms = ms;
}

/* Apply patch to desired = orig and compare with result (RFC 7386 terms:
 * a JSON null result means the member is gone). */
static void merge_case(json_t *orig, json_t *patch_v, json_t *result, const char *name)
{
    drv_shadow sh;
    shadow_with(&sh, json_deep_copy(orig), 1000);
    json_t *old = json_deep_copy(sh.desired), *old_meta = json_deep_copy(sh.meta_desired);
    drv_shadow_update up = {.desired = patch_v};
    bool changed = false;
    const char *why = NULL;
    CHECK_CASE(drv_shadow_apply(&sh, &up, 2000, 65536, &changed, &why) == DRV_OK, name);
    CHECK_CASE(json_equal(sh.desired, result), name);
    CHECK_CASE(changed == !json_equal(old, result), name);
    CHECK_CASE(sh.version == (changed ? 2 : 1) && sh.ts_ms == (changed ? 2000 : 1000), name);
    CHECK_CASE(mirror_shape(sh.desired, sh.meta_desired), name);
    CHECK_CASE(stamps_ok(old, old_meta, sh.desired, sh.meta_desired, 2000), name);
    CHECK_CASE(same(sh.reported, "{}") && same(sh.meta_reported, "{}"), name);
    json_decref(old);
    json_decref(old_meta);
    drv_shadow_clear(&sh);
}

static void test_rfc7386(void)
{
    /* RFC 7386 appendix A, every row. */
    static const char *const rows[][3] = {
        {"{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
        {"{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}"},
        {"{\"a\":\"b\"}", "{\"a\":null}", "{}"},
        {"{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}"},
        {"{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}"},
        {"{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}"},
        {"{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}"},
        {"{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}"},
        {"[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]"},
        {"{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]"},
        {"{\"a\":\"foo\"}", "null", "null"},
        {"{\"a\":\"foo\"}", "\"bar\"", "\"bar\""},
        {"{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}"},
        {"[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}"},
        {"{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        json_t *o = J(rows[i][0]), *p = J(rows[i][1]), *r = J(rows[i][2]);
        /* As a member of desired, so targets and patches that are not
         * objects are covered too: {"x": orig} + {"x": patch}. */
        json_t *wo = json_object(), *wp = json_object(), *wr = json_object();
        json_object_set(wo, "x", o);
        json_object_set(wp, "x", p);
        if (!json_is_null(r))
            json_object_set(wr, "x", r);
        merge_case(wo, wp, wr, rows[i][1]);
        /* And as the whole section where both are objects. */
        if (json_is_object(o) && json_is_object(p))
            merge_case(o, p, r, rows[i][1]);
        json_decref(wo);
        json_decref(wp);
        json_decref(wr);
        json_decref(o);
        json_decref(p);
        json_decref(r);
    }
}

static void test_merge(void)
{
    drv_shadow sh;
    bool changed = false;
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    CHECK(sh.version == 0 && sh.ts_ms == 0);

    CHECK(patch(&sh, "desired", "{\"a\":1,\"b\":{\"c\":2,\"d\":{\"e\":3}},\"l\":[1,2,3]}", 10,
                &changed) == DRV_OK);
    CHECK(changed && sh.version == 1 && sh.ts_ms == 10);

    /* Nested merge: only the named members move. */
    CHECK(patch(&sh, "desired", "{\"b\":{\"d\":{\"f\":4}}}", 20, &changed) == DRV_OK);
    CHECK(changed && same(sh.desired, "{\"a\":1,\"b\":{\"c\":2,\"d\":{\"e\":3,\"f\":4}},"
                                      "\"l\":[1,2,3]}"));
    /* Null removes, at any level; removing what is not there is nothing. */
    CHECK(patch(&sh, "desired", "{\"a\":null,\"b\":{\"d\":{\"e\":null}}}", 30, &changed) == DRV_OK);
    CHECK(changed && same(sh.desired, "{\"b\":{\"c\":2,\"d\":{\"f\":4}},\"l\":[1,2,3]}"));
    CHECK(patch(&sh, "desired", "{\"zz\":null,\"b\":{\"nope\":null}}", 40, &changed) == DRV_OK);
    CHECK(!changed && sh.version == 3);
    /* Arrays replace whole, never merge element-wise. */
    CHECK(patch(&sh, "desired", "{\"l\":[9]}", 50, &changed) == DRV_OK);
    CHECK(changed && same(json_object_get(sh.desired, "l"), "[9]"));
    CHECK(patch(&sh, "desired", "{\"l\":[{\"x\":null}]}", 60, &changed) == DRV_OK);
    CHECK(changed && same(json_object_get(sh.desired, "l"), "[{\"x\":null}]"));
    CHECK(mirror_shape(sh.desired, sh.meta_desired));

    /* Section null clears that section only. */
    CHECK(patch(&sh, "reported", "{\"r\":1}", 70, &changed) == DRV_OK && changed);
    int64_t v = sh.version;
    CHECK(patch(&sh, "desired", "null", 80, &changed) == DRV_OK);
    CHECK(changed && sh.version == v + 1 && sh.ts_ms == 80);
    CHECK(same(sh.desired, "{}") && same(sh.meta_desired, "{}"));
    CHECK(same(sh.reported, "{\"r\":1}") && ts_at(sh.meta_reported, "r") == 70);
    /* Clearing an empty section changes nothing. */
    CHECK(patch(&sh, "desired", "null", 90, &changed) == DRV_OK);
    CHECK(!changed && sh.version == v + 1 && sh.ts_ms == 80);
    drv_shadow_clear(&sh);
    drv_shadow_clear(&sh); /* twice is harmless */
}

static void test_noop(void)
{
    drv_shadow sh;
    bool changed = true;
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    const char *req =
        "{\"state\":{\"reported\":{\"t\":21.5,\"o\":{\"x\":[1,{\"y\":2}]},\"s\":\"on\","
        "\"e\":{}},\"desired\":{\"s\":\"on\"}}}";
    CHECK(update(&sh, req, 100, &changed) == DRV_OK && changed && sh.version == 1);
    json_t *snap = snapshot(&sh);
    const char *const noops[] = {
        req, /* the very same report */
        "{\"state\":{\"reported\":{\"t\":21.5}}}",
        "{\"state\":{\"reported\":{}}}",
        "{\"state\":{\"reported\":{\"o\":{}}}}",
        "{\"state\":{\"reported\":{\"e\":{}}}}",
        "{\"state\":{\"reported\":{\"missing\":null,\"o\":{\"gone\":null}}}}",
        "{\"state\":{\"desired\":{\"s\":\"on\"},\"reported\":{\"s\":\"on\"}}}",
        "{\"state\":{\"desired\":{}}}",
        "{\"state\":{\"reported\":{\"t\":21.5}},\"version\":1}",
    };
    for (size_t i = 0; i < sizeof(noops) / sizeof(noops[0]); i++) {
        changed = true;
        CHECK_CASE(update(&sh, noops[i], 500 + (int64_t)i, &changed) == DRV_OK, noops[i]);
        CHECK_CASE(!changed, noops[i]);
        CHECK_CASE(unchanged(&sh, snap), noops[i]);
    }
    /* The same report after a real change still costs nothing. */
    CHECK(update(&sh, "{\"state\":{\"reported\":{\"t\":22}}}", 600, &changed) == DRV_OK);
    CHECK(changed && sh.version == 2 && sh.ts_ms == 600);
    CHECK(update(&sh, "{\"state\":{\"reported\":{\"t\":22}}}", 700, &changed) == DRV_OK);
    CHECK(!changed && sh.version == 2 && sh.ts_ms == 600 && ts_at(sh.meta_reported, "t") == 600);
    json_decref(snap);
    drv_shadow_clear(&sh);
}

static void test_versions(void)
{
    drv_shadow sh;
    bool changed;
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    for (int i = 1; i <= 20; i++) {
        char req[128];
        snprintf(req, sizeof(req), "{\"state\":{\"reported\":{\"n\":%d}}}", i % 3);
        int64_t before = sh.version;
        CHECK(update(&sh, req, 1000 + i, &changed) == DRV_OK);
        /* n cycles 1,2,0,1,..: every one is a change. */
        CHECK(changed && sh.version == before + 1 && sh.ts_ms == 1000 + i);
    }
    /* Both sections in one update: still one version. */
    CHECK(update(&sh, "{\"state\":{\"desired\":{\"a\":1},\"reported\":{\"a\":2}}}", 5000,
                 &changed) == DRV_OK);
    CHECK(changed && sh.version == 21 && sh.ts_ms == 5000);
    drv_shadow_clear(&sh);
}

static void test_metadata(void)
{
    drv_shadow sh;
    bool changed;
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    struct step {
        const char *patch;
        int64_t now;
    } steps[] = {
        {"{\"a\":1,\"b\":{\"c\":2,\"d\":3}}", 100},
        {"{\"b\":{\"c\":5}}", 200},          /* nested leaf changes */
        {"{\"b\":{\"c\":5,\"d\":4}}", 250},  /* one same, one changed */
        {"{\"a\":null}", 300},               /* removed: no metadata */
        {"{\"b\":7}", 400},                  /* object -> leaf */
        {"{\"b\":{\"x\":1,\"y\":{}}}", 500}, /* leaf -> object */
        {"{\"e\":[1,2]}", 600},              /* arrays are leaves */
        {"{\"e\":[1,2]}", 700},              /* the same array */
        {"{\"e\":[2,1]}", 800},              /* order matters */
        {"{\"t\":{\"timestamp\":5}}", 900},  /* a leaf named timestamp */
        {"{\"n\":1}", 1000},                 /* integer ... */
        {"{\"n\":1.0}", 1100},               /* ... then real: a change (json_equal) */
        {"{\"b\":{\"y\":{\"z\":null}}}", 1200} /* nothing */,
        {"{\"b\":{\"y\":null}}", 1300},     /* removes an empty object */
        {"{\"s\":\"x\",\"b\":null}", 1400}, /* removes a subtree */
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        json_t *old = json_deep_copy(sh.desired), *old_meta = json_deep_copy(sh.meta_desired);
        CHECK_CASE(patch(&sh, "desired", steps[i].patch, steps[i].now, &changed) == DRV_OK,
                   steps[i].patch);
        CHECK_CASE(mirror_shape(sh.desired, sh.meta_desired), steps[i].patch);
        CHECK_CASE(stamps_ok(old, old_meta, sh.desired, sh.meta_desired, steps[i].now),
                   steps[i].patch);
        switch (steps[i].now) {
        case 100:
            CHECK(ts_at(sh.meta_desired, "a") == 100 && ts_at(sh.meta_desired, "b.c") == 100);
            break;
        case 200:
            CHECK(ts_at(sh.meta_desired, "b.c") == 200 && ts_at(sh.meta_desired, "b.d") == 100);
            CHECK(ts_at(sh.meta_desired, "a") == 100);
            break;
        case 250:
            CHECK(ts_at(sh.meta_desired, "b.c") == 200 && ts_at(sh.meta_desired, "b.d") == 250);
            break;
        case 300:
            CHECK(json_object_get(sh.meta_desired, "a") == NULL);
            break;
        case 400:
            CHECK(same(json_object_get(sh.meta_desired, "b"), "{\"timestamp\":400}"));
            break;
        case 500:
            CHECK(same(json_object_get(sh.meta_desired, "b"),
                       "{\"x\":{\"timestamp\":500},\"y\":{}}"));
            break;
        case 700:
            CHECK(!changed && ts_at(sh.meta_desired, "e") == 600);
            break;
        case 800:
            CHECK(changed && ts_at(sh.meta_desired, "e") == 800);
            break;
        case 900:
            CHECK(
                same(json_object_get(sh.meta_desired, "t"), "{\"timestamp\":{\"timestamp\":900}}"));
            break;
        case 1100:
            CHECK(changed && ts_at(sh.meta_desired, "n") == 1100);
            break;
        case 1200:
            CHECK(!changed);
            break;
        case 1300:
            CHECK(changed &&
                  same(json_object_get(sh.meta_desired, "b"), "{\"x\":{\"timestamp\":500}}"));
            break;
        case 1400:
            CHECK(json_object_get(sh.meta_desired, "b") == NULL);
            break;
        }
        json_decref(old);
        json_decref(old_meta);
    }
    drv_shadow_clear(&sh);
}

/* ------------------------------------------------------------------------ */
/* Delta, meta_of and rendering                                              */

static void test_delta(void)
{
    drv_shadow sh;
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    json_t *d = drv_shadow_delta(&sh);
    CHECK(same(d, "{}"));
    json_decref(d);

    CHECK(update(&sh,
                 "{\"state\":{\"desired\":{\"a\":1,\"b\":2,\"c\":{\"x\":1,\"y\":2},\"d\":[1,2],"
                 "\"e\":{\"z\":1},\"f\":\"new\",\"g\":{\"k\":1},\"h\":{},\"i\":{},"
                 "\"j\":{\"p\":{\"q\":[1]}},\"n\":1},"
                 "\"reported\":{\"a\":1,\"b\":3,\"c\":{\"x\":1,\"y\":5,\"w\":0},\"d\":[1],"
                 "\"e\":{\"z\":1},\"g\":5,\"i\":{\"o\":1},\"j\":{\"p\":{\"q\":[1],\"r\":2}},"
                 "\"r\":9,\"n\":1.0}}}",
                 10, NULL) == DRV_OK);
    d = drv_shadow_delta(&sh);
    /* differing scalars, nested objects only their differing leaves, arrays
     * whole, desired members missing in reported (even {}), object vs
     * leaf whole; equal members, reported-only keys and objects that agree
     * on every desired member left out; 1 vs 1.0 differs (json_equal). */
    CHECK(same(d, "{\"b\":2,\"c\":{\"y\":2},\"d\":[1,2],\"f\":\"new\",\"g\":{\"k\":1},"
                  "\"h\":{},\"n\":1}"));

    /* Its metadata comes from the desired mirror, path by path. */
    json_t *m = drv_shadow_meta_of(d, sh.meta_desired);
    CHECK(same(m, "{\"b\":{\"timestamp\":10},\"c\":{\"y\":{\"timestamp\":10}},"
                  "\"d\":{\"timestamp\":10},\"f\":{\"timestamp\":10},"
                  "\"g\":{\"k\":{\"timestamp\":10}},\"h\":{},\"n\":{\"timestamp\":10}}"));
    json_decref(m);
    json_decref(d);

    /* Reported catches up: the delta empties. */
    CHECK(update(&sh,
                 "{\"state\":{\"reported\":{\"b\":2,\"c\":{\"y\":2},\"d\":[1,2],\"f\":\"new\","
                 "\"g\":{\"k\":1,\"extra\":true},\"h\":{},\"n\":1}}}",
                 20, NULL) == DRV_OK);
    d = drv_shadow_delta(&sh);
    CHECK(same(d, "{}"));
    json_decref(d);
    drv_shadow_clear(&sh);
}

static void test_meta_of(void)
{
    json_t *meta = J("{\"a\":{\"timestamp\":1},\"b\":{\"c\":{\"timestamp\":2},"
                     "\"d\":{\"timestamp\":3}},\"x\":{},\"l\":{\"timestamp\":4}}");
    json_t *part = J("{\"a\":5,\"b\":{\"c\":0},\"gone\":null,\"missing\":1,\"x\":{\"y\":null},"
                     "\"a2\":{\"q\":1},\"l\":[1]}");
    json_t *m = drv_shadow_meta_of(part, meta);
    CHECK(same(m, "{\"a\":{\"timestamp\":1},\"b\":{\"c\":{\"timestamp\":2}},\"x\":{},"
                  "\"l\":{\"timestamp\":4}}"));
    json_decref(m);
    /* A removal of a member the mirror still has (the patch before the
     * apply, say) is still left out. */
    json_t *rm = J("{\"a\":null}");
    m = drv_shadow_meta_of(rm, meta);
    CHECK(same(m, "{}"));
    json_decref(m);
    json_decref(rm);
    /* Not an object (a section null, say): nothing. */
    json_t *n = json_null();
    m = drv_shadow_meta_of(n, meta);
    CHECK(same(m, "{}"));
    json_decref(m);
    m = drv_shadow_meta_of(NULL, meta);
    CHECK(same(m, "{}"));
    json_decref(m);
    m = drv_shadow_meta_of(part, NULL);
    CHECK(same(m, "{}"));
    json_decref(m);
    json_decref(part);
    json_decref(meta);

    /* After an apply, meta_of(patch) is the metadata of what it set. */
    drv_shadow sh;
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    CHECK(patch(&sh, "reported", "{\"a\":1,\"b\":{\"c\":1}}", 5, NULL) == DRV_OK);
    json_t *req = J("{\"state\":{\"reported\":{\"b\":{\"d\":2},\"a\":null}}}");
    drv_shadow_update up;
    bool changed;
    CHECK(drv_shadow_parse_update(req, &up, NULL) == DRV_OK);
    CHECK(drv_shadow_apply(&sh, &up, 9, 65536, &changed, NULL) == DRV_OK && changed);
    m = drv_shadow_meta_of(up.reported, sh.meta_reported);
    CHECK(same(m, "{\"b\":{\"d\":{\"timestamp\":9}}}"));
    json_decref(m);
    json_decref(req);
    drv_shadow_clear(&sh);
}

static void test_render(void)
{
    drv_shadow sh;
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    json_t *doc = drv_shadow_render(&sh);
    CHECK(same(doc, "{\"state\":{\"desired\":{},\"reported\":{}},\"metadata\":{\"desired\":{},"
                    "\"reported\":{}},\"version\":0,\"timestamp\":0}"));
    json_decref(doc);

    CHECK(update(&sh, "{\"state\":{\"desired\":{\"p\":1,\"q\":2},\"reported\":{\"p\":1}}}", 77,
                 NULL) == DRV_OK);
    doc = drv_shadow_render(&sh);
    CHECK(same(doc, "{\"state\":{\"desired\":{\"p\":1,\"q\":2},\"reported\":{\"p\":1},"
                    "\"delta\":{\"q\":2}},"
                    "\"metadata\":{\"desired\":{\"p\":{\"timestamp\":77},\"q\":{\"timestamp\":77}},"
                    "\"reported\":{\"p\":{\"timestamp\":77}}},\"version\":1,\"timestamp\":77}"));
    /* A new value: changing it leaves sh alone. */
    json_object_set_new(json_object_get(json_object_get(doc, "state"), "desired"), "p",
                        json_integer(5));
    CHECK(same(sh.desired, "{\"p\":1,\"q\":2}"));
    json_decref(doc);

    CHECK(patch(&sh, "reported", "{\"q\":2}", 88, NULL) == DRV_OK);
    doc = drv_shadow_render(&sh);
    json_t *state = json_object_get(doc, "state");
    CHECK(json_object_get(state, "delta") == NULL && json_object_size(state) == 2);
    CHECK(json_integer_value(json_object_get(doc, "version")) == 2);
    CHECK(json_integer_value(json_object_get(doc, "timestamp")) == 88);
    json_decref(doc);
    drv_shadow_clear(&sh);
}

/* ------------------------------------------------------------------------ */
/* Conflicts and limits                                                      */

static void test_conflict(void)
{
    drv_shadow sh;
    bool changed = true;
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    /* Version 0 (never written) matches no expected version. */
    CHECK(update(&sh, "{\"state\":{\"reported\":{\"a\":1}},\"version\":1}", 1, &changed) ==
          DRV_CONFLICT);
    CHECK(!changed && sh.version == 0 && same(sh.reported, "{}"));
    CHECK(update(&sh, "{\"state\":{\"reported\":{\"a\":1}}}", 1, &changed) == DRV_OK);
    CHECK(update(&sh, "{\"state\":{\"reported\":{\"a\":2}},\"version\":1}", 2, &changed) == DRV_OK);
    CHECK(changed && sh.version == 2);
    json_t *snap = snapshot(&sh);
    /* Stale, future, and a stale no-op: all refused, nothing moves. */
    static const char *const stale[] = {
        "{\"state\":{\"reported\":{\"a\":3}},\"version\":1}",
        "{\"state\":{\"reported\":{\"a\":3}},\"version\":3}",
        "{\"state\":{\"reported\":{\"a\":2}},\"version\":1}",
    };
    for (size_t i = 0; i < sizeof(stale) / sizeof(stale[0]); i++) {
        changed = true;
        CHECK_CASE(update(&sh, stale[i], 3, &changed) == DRV_CONFLICT, stale[i]);
        CHECK_CASE(!changed && unchanged(&sh, snap), stale[i]);
    }
    json_decref(snap);
    drv_shadow_clear(&sh);
}

static void test_max_bytes(void)
{
    static const char *const req = "{\"state\":{\"reported\":{\"a\":\"xxxxxxxxxx\"}}}";
    const size_t n = strlen("{\"desired\":{},\"reported\":{\"a\":\"xxxxxxxxxx\"}}");
    drv_shadow sh;
    bool changed = true;

    /* Exactly at the limit passes. */
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    CHECK(update_max(&sh, req, 1, n, &changed) == DRV_OK && changed && sh.version == 1);
    drv_shadow_clear(&sh);

    /* One over fails and leaves sh as it was. */
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    json_t *snap = snapshot(&sh);
    changed = true;
    CHECK(update_max(&sh, req, 1, n - 1, &changed) == DRV_TOOBIG);
    CHECK(!changed && unchanged(&sh, snap) && sh.version == 0);
    json_decref(snap);

    /* With a state already there: both sections count, whichever changes. */
    CHECK(update(&sh, "{\"state\":{\"reported\":{\"r\":1},\"desired\":{\"d\":2}}}", 5, NULL) ==
          DRV_OK);
    snap = snapshot(&sh);
    const char *grow = "{\"state\":{\"desired\":{\"e\":\"12345\"}}}";
    const size_t m = strlen("{\"desired\":{\"d\":2,\"e\":\"12345\"},\"reported\":{\"r\":1}}");
    CHECK(update_max(&sh, grow, 6, m - 1, &changed) == DRV_TOOBIG);
    CHECK(unchanged(&sh, snap));
    CHECK(update_max(&sh, grow, 6, m, &changed) == DRV_OK && changed && sh.version == 2);
    json_decref(snap);

    /* A no-op is not refused even when the state is over a lowered limit:
     * nothing new is stored. */
    CHECK(update_max(&sh, grow, 7, 10, &changed) == DRV_OK && !changed && sh.version == 2);
    /* A change that grows it is refused; one that shrinks it goes through,
     * so the shadow can be trimmed below the new limit. */
    CHECK(update_max(&sh, "{\"state\":{\"desired\":{\"f\":1}}}", 7, 10, &changed) == DRV_TOOBIG);
    CHECK(update_max(&sh, "{\"state\":{\"desired\":{\"e\":null}}}", 7, 10, &changed) == DRV_OK &&
          changed && sh.version == 3);
    drv_shadow_clear(&sh);

    /* Multi-byte UTF-8 counts in bytes, as serialised. */
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    const size_t u = strlen("{\"desired\":{\"u\":\"\xc3\xa9\"},\"reported\":{}}");
    CHECK(update_max(&sh, "{\"state\":{\"desired\":{\"u\":\"\xc3\xa9\"}}}", 1, u - 1, &changed) ==
          DRV_TOOBIG);
    CHECK(update_max(&sh, "{\"state\":{\"desired\":{\"u\":\"\xc3\xa9\"}}}", 1, u, &changed) ==
          DRV_OK);
    drv_shadow_clear(&sh);
}

/* A request {"state": {"desired": section}} around a built section. */
static json_t *request_with(json_t *section)
{
    json_t *req = json_object(), *state = json_object();
    json_object_set_new(state, "desired", section);
    json_object_set_new(req, "state", state);
    return req;
}

static void depth_case(json_t *section, bool ok, const char *name)
{
    drv_shadow sh;
    drv_shadow_update up;
    const char *why = NULL;
    bool changed = false;
    json_t *req = request_with(section);

    /* The parser. */
    CHECK_CASE(drv_shadow_parse_update(req, &up, &why) == (ok ? DRV_OK : DRV_INVAL), name);
    CHECK_CASE(ok || why != NULL, name);

    /* apply on its own, given the same patch without the parser. */
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    drv_shadow_update raw = {.desired = section};
    why = NULL;
    CHECK_CASE(drv_shadow_apply(&sh, &raw, 1, 1 << 20, &changed, &why) == (ok ? DRV_OK : DRV_INVAL),
               name);
    CHECK_CASE(ok ? changed && sh.version == 1 : !changed && sh.version == 0 && why, name);
    CHECK_CASE(ok ? json_equal(sh.desired, section) : json_object_size(sh.desired) == 0, name);

    /* And the stored form: depth 8 reads back, deeper is corrupt. */
    json_t *stored = J("{\"desired\":{},\"reported\":{},\"metadata\":{\"desired\":{},"
                       "\"reported\":{}}}");
    json_object_set(stored, "desired", section);
    json_object_set_new(json_object_get(stored, "metadata"), "desired", mirror_of(section, 1));
    drv_shadow back;
    CHECK_CASE(drv_shadow_from_stored(stored, 1, 1, &back) == (ok ? DRV_OK : DRV_CORRUPT), name);
    drv_shadow_clear(&back);
    json_decref(stored);
    json_decref(req);
    drv_shadow_clear(&sh);
}

static void test_depth(void)
{
    depth_case(nested_objects(1), true, "objects 1");
    depth_case(nested_objects(DRV_SHADOW_MAX_DEPTH), true, "objects 8");
    depth_case(nested_objects(DRV_SHADOW_MAX_DEPTH + 1), false, "objects 9");
    depth_case(nested_arrays(DRV_SHADOW_MAX_DEPTH - 1), true, "arrays 8");
    depth_case(nested_arrays(DRV_SHADOW_MAX_DEPTH), false, "arrays 9");
    /* Far deeper than anything jansson's parser would give (2048), built by
     * hand: refused after looking at nine levels, not 3000. */
    depth_case(nested_objects(3000), false, "objects 3000");
    depth_case(nested_arrays(3000), false, "arrays 3000");

    /* The limit is on the result as well: a deep patch under an existing
     * member counts from the section. */
    drv_shadow sh;
    bool changed;
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    json_t *inner = nested_objects(DRV_SHADOW_MAX_DEPTH - 1); /* depth 7 */
    json_t *outer = json_object();
    json_object_set_new(outer, "w", inner); /* depth 8 */
    json_t *req = request_with(outer);
    drv_shadow_update up;
    CHECK(drv_shadow_parse_update(req, &up, NULL) == DRV_OK);
    CHECK(drv_shadow_apply(&sh, &up, 1, 1 << 20, &changed, NULL) == DRV_OK && changed);
    json_decref(req);
    json_t *deeper = json_object();
    json_object_set_new(deeper, "w", nested_objects(DRV_SHADOW_MAX_DEPTH));
    req = request_with(deeper);
    CHECK(drv_shadow_parse_update(req, &up, NULL) == DRV_INVAL);
    json_decref(req);
    drv_shadow_clear(&sh);
}

/* ------------------------------------------------------------------------ */
/* Stored form                                                               */

static void test_stored(void)
{
    drv_shadow sh;
    CHECK(drv_shadow_init(&sh) == DRV_OK);
    CHECK(update(&sh,
                 "{\"state\":{\"desired\":{\"a\":1,\"o\":{\"x\":[1,{\"k\":null}],\"y\":{}},"
                 "\"t\":{\"timestamp\":3}},\"reported\":{\"a\":2,\"s\":\"\\u00e9\"}}}",
                 111, NULL) == DRV_OK);
    CHECK(patch(&sh, "reported", "{\"b\":true}", 222, NULL) == DRV_OK);

    json_t *stored = drv_shadow_to_stored(&sh);
    CHECK(json_object_size(stored) == 3 &&
          json_object_size(json_object_get(stored, "metadata")) == 2);
    /* Through text, as the store keeps it. */
    char *text = json_dumps(stored, JSON_COMPACT);
    json_t *loaded = J(text);
    drv_free(text);
    drv_shadow back;
    CHECK(drv_shadow_from_stored(loaded, sh.version, sh.ts_ms, &back) == DRV_OK);
    CHECK(json_equal(back.desired, sh.desired) && json_equal(back.reported, sh.reported));
    CHECK(json_equal(back.meta_desired, sh.meta_desired));
    CHECK(json_equal(back.meta_reported, sh.meta_reported));
    CHECK(back.version == 2 && back.ts_ms == 222);
    json_t *r1 = drv_shadow_render(&sh), *r2 = drv_shadow_render(&back);
    CHECK(r1 && json_equal(r1, r2));
    json_decref(r1);
    json_decref(r2);
    /* from_stored borrowed: the copy is its own. */
    json_object_set_new(json_object_get(loaded, "desired"), "a", json_integer(99));
    CHECK(json_integer_value(json_object_get(back.desired, "a")) == 1);
    drv_shadow_clear(&back);
    json_decref(loaded);
    json_decref(stored);

    /* An empty shadow round-trips too. */
    drv_shadow empty;
    CHECK(drv_shadow_init(&empty) == DRV_OK);
    stored = drv_shadow_to_stored(&empty);
    CHECK(same(stored, "{\"desired\":{},\"reported\":{},\"metadata\":{\"desired\":{},"
                       "\"reported\":{}}}"));
    CHECK(drv_shadow_from_stored(stored, 0, 0, &back) == DRV_OK && back.version == 0);
    drv_shadow_clear(&back);
    json_decref(stored);
    drv_shadow_clear(&empty);
    drv_shadow_clear(&sh);

    /* A leaf named timestamp whose mirror is an object under "timestamp". */
    json_t *odd = J("{\"desired\":{\"t\":{\"timestamp\":1}},\"reported\":{},\"metadata\":"
                    "{\"desired\":{\"t\":{\"timestamp\":{\"timestamp\":5}}},\"reported\":{}}}");
    CHECK(drv_shadow_from_stored(odd, 1, 5, &back) == DRV_OK);
    drv_shadow_clear(&back);
    json_decref(odd);

#define EMPTY_META "\"metadata\":{\"desired\":{},\"reported\":{}}"
    static const char *const corrupt[] = {
        "[]",
        "null",
        "\"x\"",
        "{}",
        "{\"reported\":{}," EMPTY_META "}",
        "{\"desired\":{}," EMPTY_META "}",
        "{\"desired\":{},\"reported\":{}}",
        "{\"desired\":[],\"reported\":{}," EMPTY_META "}",
        "{\"desired\":{},\"reported\":null," EMPTY_META "}",
        "{\"desired\":{},\"reported\":{},\"metadata\":[]}",
        "{\"desired\":{},\"reported\":{},\"metadata\":{\"desired\":{}}}",
        "{\"desired\":{},\"reported\":{},\"metadata\":{\"desired\":{},\"reported\":5}}",
        "{\"desired\":{},\"reported\":{},\"metadata\":{\"desired\":{},\"reported\":{},\"x\":{}}}",
        "{\"desired\":{},\"reported\":{}," EMPTY_META ",\"extra\":1}",
        /* mirror missing a key, with an extra key, of the wrong shape */
        "{\"desired\":{\"a\":1},\"reported\":{}," EMPTY_META "}",
        "{\"desired\":{},\"reported\":{},\"metadata\":{\"desired\":{\"a\":{\"timestamp\":1}},"
        "\"reported\":{}}}",
        "{\"desired\":{\"a\":1},\"reported\":{},\"metadata\":{\"desired\":{\"b\":{\"timestamp\":1}}"
        ","
        "\"reported\":{}}}",
        "{\"desired\":{\"a\":1},\"reported\":{},\"metadata\":{\"desired\":{\"a\":1},"
        "\"reported\":{}}}",
        "{\"desired\":{\"a\":1},\"reported\":{},\"metadata\":{\"desired\":{\"a\":{}},"
        "\"reported\":{}}}",
        "{\"desired\":{\"a\":1},\"reported\":{},\"metadata\":{\"desired\":{\"a\":{\"timestamp\":"
        "1.5}},\"reported\":{}}}",
        "{\"desired\":{\"a\":1},\"reported\":{},\"metadata\":{\"desired\":{\"a\":{\"timestamp\":"
        "\"1\"}},\"reported\":{}}}",
        "{\"desired\":{\"a\":1},\"reported\":{},\"metadata\":{\"desired\":{\"a\":{\"timestamp\":"
        "1,\"x\":2}},\"reported\":{}}}",
        "{\"desired\":{\"a\":{\"b\":1}},\"reported\":{},\"metadata\":{\"desired\":{\"a\":"
        "{\"timestamp\":1}},\"reported\":{}}}",
        "{\"desired\":{\"a\":{\"b\":1}},\"reported\":{},\"metadata\":{\"desired\":{\"a\":{\"b\":"
        "{\"timestamp\":1}}},\"reported\":{\"a\":{\"timestamp\":1}}}}",
        /* a null member, which no merge leaves */
        "{\"desired\":{\"a\":null},\"reported\":{},\"metadata\":{\"desired\":{\"a\":"
        "{\"timestamp\":1}},\"reported\":{}}}",
        "{\"desired\":{},\"reported\":{\"a\":{\"b\":null}},\"metadata\":{\"desired\":{},"
        "\"reported\":{\"a\":{\"b\":{\"timestamp\":1}}}}}",
        /* too deep (9) */
        "{\"desired\":{},\"reported\":{\"a\":[[[[[[[[1]]]]]]]]}," EMPTY_META "}",
    };
#undef EMPTY_META
    for (size_t i = 0; i < sizeof(corrupt) / sizeof(corrupt[0]); i++) {
        json_t *c = J(corrupt[i]);
        memset(&back, 0x5a, sizeof(back));
        CHECK_CASE(drv_shadow_from_stored(c, 1, 1, &back) == DRV_CORRUPT, corrupt[i]);
        /* Nothing held on failure; clear is still safe. */
        CHECK_CASE(!back.desired && !back.reported && !back.meta_desired && !back.meta_reported,
                   corrupt[i]);
        drv_shadow_clear(&back);
        json_decref(c);
    }
    CHECK(drv_shadow_from_stored(NULL, 1, 1, &back) == DRV_CORRUPT);
    json_t *ok = J("{\"desired\":{},\"reported\":{},\"metadata\":{\"desired\":{},"
                   "\"reported\":{}}}");
    CHECK(drv_shadow_from_stored(ok, -1, 1, &back) == DRV_CORRUPT);
    json_decref(ok);
}

/* ------------------------------------------------------------------------ */
/* Allocation failure                                                        */

/* A shadow with something in every part. */
static void rich(drv_shadow *sh)
{
    CHECK(drv_shadow_init(sh) == DRV_OK);
    CHECK(update(sh,
                 "{\"state\":{\"desired\":{\"a\":1,\"b\":{\"c\":[1,2],\"d\":\"x\"},\"e\":{}},"
                 "\"reported\":{\"a\":2,\"b\":{\"c\":[1]}}}}",
                 10, NULL) == DRV_OK);
}

static void test_nomem(void)
{
    drv_shadow sh;
    rich(&sh);
    json_t *snap = snapshot(&sh);
    json_t *req = J("{\"state\":{\"desired\":{\"a\":null,\"b\":{\"c\":[3],\"n\":{\"m\":1}},"
                    "\"z\":\"new\"},\"reported\":{\"b\":5}},\"client_token\":\"t\"}");
    drv_shadow_update up;
    CHECK(drv_shadow_parse_update(req, &up, NULL) == DRV_OK);

    /* apply: every allocation fails once; sh stays exactly as it was. */
    int nomem = 0;
    bool done = false;
    for (uint64_t nth = 1; nth < 2000 && !done; nth++) {
        bool changed = true;
        drv_mem_fail_at(nth);
        drv_err e = drv_shadow_apply(&sh, &up, 20, 65536, &changed, NULL);
        drv_mem_fail_at(0);
        if (e == DRV_NOMEM) {
            nomem++;
            CHECK(!changed && unchanged(&sh, snap));
        } else {
            CHECK(e == DRV_OK && changed && sh.version == 2);
            done = true;
        }
    }
    CHECK(done && nomem > 5);
    json_decref(req);
    json_decref(snap);

    /* The builders: NULL (or NOMEM) until every allocation succeeds. */
    json_t *stored = drv_shadow_to_stored(&sh);
    int fails[5] = {0};
    for (uint64_t nth = 1; nth < 2000; nth++) {
        int got = 0;
        drv_mem_fail_at(nth);
        json_t *v = drv_shadow_render(&sh);
        drv_mem_fail_at(0);
        fails[0] += !v;
        got += !!v;
        json_decref(v);

        drv_mem_fail_at(nth);
        v = drv_shadow_to_stored(&sh);
        drv_mem_fail_at(0);
        fails[1] += !v;
        got += !!v;
        json_decref(v);

        drv_mem_fail_at(nth);
        v = drv_shadow_delta(&sh);
        drv_mem_fail_at(0);
        fails[2] += !v;
        got += !!v;
        json_decref(v);

        drv_mem_fail_at(nth);
        v = drv_shadow_meta_of(sh.desired, sh.meta_desired);
        drv_mem_fail_at(0);
        fails[3] += !v;
        got += !!v;
        json_decref(v);

        drv_shadow back;
        drv_mem_fail_at(nth);
        drv_err e = drv_shadow_from_stored(stored, 2, 20, &back);
        drv_mem_fail_at(0);
        CHECK(e == DRV_OK || (e == DRV_NOMEM && !back.desired && !back.meta_reported));
        fails[4] += e == DRV_NOMEM;
        got += e == DRV_OK;
        drv_shadow_clear(&back);
        if (got == 5)
            break;
    }
    for (int i = 0; i < 5; i++)
        CHECK_CASE(fails[i] > 0, "every builder saw a failure");
    json_decref(stored);

    drv_shadow fresh;
    drv_mem_fail_at(1);
    CHECK(drv_shadow_init(&fresh) == DRV_NOMEM && !fresh.desired);
    drv_mem_fail_at(4);
    CHECK(drv_shadow_init(&fresh) == DRV_NOMEM && !fresh.desired && !fresh.meta_desired);
    drv_mem_fail_at(0);
    drv_shadow_clear(&sh);
}

int main(void)
{
    /* jansson allocates through core/alloc: drv_mem_fail_at reaches it and
     * drv_mem_used shows what was not released. */
    json_set_alloc_funcs(drv_malloc, drv_free);
    size_t base = drv_mem_used();

    test_names();
    test_client_token();
    test_parse_errors();
    test_parse_ok();
    test_rfc7386();
    test_merge();
    test_noop();
    test_versions();
    test_metadata();
    test_delta();
    test_meta_of();
    test_render();
    test_conflict();
    test_max_bytes();
    test_depth();
    test_stored();
    test_nomem();

    CHECK(drv_mem_used() == base);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
