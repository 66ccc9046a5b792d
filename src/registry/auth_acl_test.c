/*
 * auth_acl_test.c — unit tests for compiled device profile ACLs (auth_acl.c).
 *
 * Compilation (access words, placeholders, malformed rules), matching with
 * {device} and {tenant} substituted (publish = match, subscribe = cover),
 * ids that would change a rule's shape, and the cache against a real SQLite
 * registry: devices of one profile share one compiled ACL, an edited profile
 * is compiled again while sessions keep the old one, and a device without a
 * profile gets none (the default rule).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "registry/auth_acl.h"

#include "core/test.h"

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, 0, &err);
    if (!v)
        fprintf(stderr, "bad test JSON: %s\n", err.text);
    return v;
}

static reg_acl *compile(const char *text)
{
    json_t *rules = J(text);
    reg_acl *acl = NULL;
    drv_err e = reg_acl_compile(rules, &acl);
    json_decref(rules);
    return e == DRV_OK ? acl : NULL;
}

static void test_compile(void)
{
    static const char *const bad[] = {
        "[]",
        "{}",
        "[{\"access\": \"read\", \"topic\": \"a\"}]",
        "[{\"access\": \"publish\"}]",
        "[{\"access\": \"publish\", \"topic\": \"\"}]",
        "[{\"access\": \"publish\", \"topic\": \"a/#/b\"}]",
        "[{\"access\": \"publish\", \"topic\": \"devices/{dev}/x\"}]",
        "[{\"access\": \"publish\", \"topic\": \"a/{device}+\"}]",
        "[{\"access\": \"publish\", \"topic\": \"a/\\u0001\"}]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        reg_acl *acl = compile(bad[i]);
        CHECK_CASE(acl == NULL, bad[i]);
        reg_acl_release(acl);
    }
    reg_acl *acl = compile("[{\"access\": \"both\", \"topic\": \"devices/{device}/#\"}]");
    CHECK(acl != NULL);
    reg_acl_release(acl);
    reg_acl_release(NULL);
}

static void test_allows(void)
{
    reg_acl *acl =
        compile("["
                "{\"access\": \"publish\", \"topic\": \"devices/{device}/telemetry\"},"
                "{\"access\": \"subscribe\", \"topic\": \"devices/{device}/commands/#\"},"
                "{\"access\": \"subscribe\", \"topic\": \"broadcast/#\"},"
                "{\"access\": \"both\", \"topic\": \"devices/{device}/t-{tenant}/+\"}"
                "]");
    CHECK(acl != NULL);
    if (!acl)
        return;
    static const struct {
        drv_acl_access access;
        const char *topic;
        bool allowed;
    } cases[] = {
        {DRV_ACL_WRITE, "devices/d1/telemetry", true},
        {DRV_ACL_READ, "devices/d1/telemetry", false},
        {DRV_ACL_WRITE, "devices/d1/other", false},
        {DRV_ACL_WRITE, "devices/d2/telemetry", false},
        {DRV_ACL_WRITE, "devices/d1/commands/x", false},
        {DRV_ACL_READ, "devices/d1/commands/x", true},
        {DRV_ACL_READ, "devices/d1/commands/+", true},
        {DRV_ACL_READ, "devices/d1/commands/#", true},
        {DRV_ACL_READ, "devices/d1/commands", true},
        {DRV_ACL_READ, "devices/d1/#", false},
        {DRV_ACL_READ, "devices/+/commands/x", false},
        {DRV_ACL_READ, "broadcast/fw/v2", true},
        {DRV_ACL_WRITE, "broadcast/fw/v2", false},
        {DRV_ACL_READ, "#", false},
        {DRV_ACL_WRITE, "devices/d1/t-acme/x", true},
        {DRV_ACL_READ, "devices/d1/t-acme/+", true},
        {DRV_ACL_WRITE, "devices/d1/t-other/x", false},
        {DRV_ACL_WRITE, "devices/d1/t-acme/x/y", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECK_CASE(reg_acl_allows(acl, cases[i].access, cases[i].topic, "d1", "acme") ==
                       cases[i].allowed,
                   cases[i].topic);
    /* An id that would add a level or a wildcard matches nothing. */
    CHECK(!reg_acl_allows(acl, DRV_ACL_WRITE, "devices/a/b/telemetry", "a/b", "acme"));
    CHECK(!reg_acl_allows(acl, DRV_ACL_WRITE, "devices/+/telemetry", "+", "acme"));
    CHECK(!reg_acl_allows(acl, DRV_ACL_READ, "broadcast/x", "#", "acme"));
    CHECK(!reg_acl_allows(acl, DRV_ACL_READ, "broadcast/x", "", "acme"));
    reg_acl_release(acl);
}

/* -- the cache, on a real registry -------------------------------------------------- */

static char tmpdir[] = "/tmp/drover-acl-test-XXXXXX";

static void doc(drv_store *st, const char *tenant, const char *kind, const char *text)
{
    drv_scope sc = {.tenant = tenant};
    json_t *d = J(text), *out = NULL;
    CHECK_CASE(st->ops->doc_create(st, &sc, kind, d, &out) == DRV_OK, text);
    json_decref(d);
    json_decref(out);
}

static void test_cache(void)
{
    if (!mkdtemp(tmpdir)) {
        CHECK(!"mkdtemp");
        return;
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/registry.db", tmpdir);
    drv_store *st = NULL, *rd = NULL;
    CHECK(drv_store_open_sqlite(path, &st) == DRV_OK);
    if (!st)
        return;
    json_t *t = J("{\"id\": \"acme\", \"name\": \"acme\"}"), *out = NULL;
    CHECK(st->ops->platform_tenant_create(st, t, &out) == DRV_OK);
    json_decref(t);
    json_decref(out);
    doc(st, "acme", DRV_KIND_PROFILE,
        "{\"id\": \"p\", \"name\": \"p\", \"acl\": [{\"access\": \"subscribe\", \"topic\": "
        "\"broadcast/#\"}, {\"access\": \"publish\", \"topic\": \"devices/{device}/telemetry\"}]}");
    doc(st, "acme", DRV_KIND_PROFILE, "{\"id\": \"q\", \"name\": \"q\"}");
    doc(st, "acme", DRV_KIND_DEVICE, "{\"id\": \"d1\", \"profile\": \"p\"}");
    doc(st, "acme", DRV_KIND_DEVICE, "{\"id\": \"d2\", \"profile\": \"p\"}");
    doc(st, "acme", DRV_KIND_DEVICE, "{\"id\": \"d3\"}");
    doc(st, "acme", DRV_KIND_DEVICE, "{\"id\": \"d4\", \"profile\": \"q\"}");
    CHECK(drv_store_open_reader(path, &rd) == DRV_OK);
    reg_acl_cache *c = NULL;
    CHECK(reg_acl_cache_new(&c) == DRV_OK);
    if (!rd || !c)
        return;

    reg_acl *a1 = NULL, *a2 = NULL, *a3 = (reg_acl *)1, *a4 = (reg_acl *)1, *a5 = NULL;
    CHECK(reg_acl_for_device(c, rd, "acme", "d1", &a1) == DRV_OK && a1);
    CHECK(reg_acl_for_device(c, rd, "acme", "d2", &a2) == DRV_OK && a2);
    CHECK(a1 == a2); /* one compiled ACL per profile version */
    CHECK(reg_acl_for_device(c, rd, "acme", "d3", &a3) == DRV_OK && a3 == NULL);
    CHECK(reg_acl_for_device(c, rd, "acme", "d4", &a4) == DRV_OK && a4 == NULL);
    CHECK(reg_acl_for_device(c, rd, "acme", "nobody", &a5) == DRV_NOTFOUND && !a5);
    CHECK(reg_acl_for_device(c, rd, "other", "d1", &a5) == DRV_NOTFOUND && !a5);
    CHECK(reg_acl_cache_count(c) == 1);
    CHECK(a1 && reg_acl_allows(a1, DRV_ACL_READ, "broadcast/x", "d1", "acme"));

    /* The profile changes: the next lookup compiles the new version; a1 stays valid. */
    drv_scope sc = {.tenant = "acme"};
    json_t *np = J("{\"id\": \"p\", \"name\": \"p\", \"acl\": [{\"access\": \"both\", "
                   "\"topic\": \"devices/{device}/#\"}]}"),
           *nout = NULL;
    CHECK(st->ops->doc_replace(st, &sc, DRV_KIND_PROFILE, "p", np, 0, &nout) == DRV_OK);
    json_decref(np);
    json_decref(nout);
    reg_acl *b1 = NULL;
    CHECK(reg_acl_for_device(c, rd, "acme", "d1", &b1) == DRV_OK && b1 && b1 != a1);
    CHECK(reg_acl_cache_count(c) == 1);
    CHECK(b1 && !reg_acl_allows(b1, DRV_ACL_READ, "broadcast/x", "d1", "acme"));
    CHECK(b1 && reg_acl_allows(b1, DRV_ACL_READ, "devices/d1/#", "d1", "acme"));
    CHECK(reg_acl_allows(a1, DRV_ACL_READ, "broadcast/x", "d1", "acme")); /* old rules live on */
    reg_acl_release(a1);
    reg_acl_release(a2); /* the last reference to the old version: freed (ASan checks) */
    reg_acl_cache_free(c);
    CHECK(b1 && reg_acl_allows(b1, DRV_ACL_WRITE, "devices/d1/x", "d1", "acme"));
    reg_acl_release(b1);

    drv_store_close(rd);
    drv_store_close(st);
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (int k = 0; k < 3; k++) {
        char f[160];
        snprintf(f, sizeof(f), "%s%s", path, suffix[k]);
        unlink(f);
    }
    rmdir(tmpdir);
}

int main(void)
{
    test_compile();
    test_allows();
    test_cache();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
