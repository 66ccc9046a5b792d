/*
 * store_oauth_test.c — unit tests for the OAuth part of the SQLite registry
 * store (store_sqlite_oauth.c): clients created, listed page by page,
 * revoked and looked up, each tenant seeing only its own; signing keys added
 * (one active), retired with their private key erased, purged after their
 * window, and a failed add leaving everything as it was; a reader handle
 * refusing writes.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "registry/store.h"

#include "core/test.h"

static char tmpdir[] = "/tmp/drover-store-oauth-test-XXXXXX";
static char dbpath[128];

static void cleanup(void)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (int k = 0; k < 3; k++) {
        char f[160];
        snprintf(f, sizeof(f), "%s%s", dbpath, suffix[k]);
        unlink(f);
    }
    rmdir(tmpdir);
}

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    if (!j)
        fprintf(stderr, "bad test JSON: %s: %s\n", text, err.text);
    return j;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static int64_t raw_int(const char *sql)
{
    sqlite3 *db;
    int64_t v = -1;
    if (sqlite3_open(dbpath, &db) == SQLITE_OK) {
        sqlite3_stmt *stmt = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK) {
            if (sqlite3_step(stmt) == SQLITE_ROW)
                v = sqlite3_column_int64(stmt, 0);
            sqlite3_finalize(stmt);
        }
    }
    sqlite3_close(db);
    return v;
}

static void mk_tenant(drv_store *st, const char *id)
{
    char text[128];
    snprintf(text, sizeof(text), "{\"id\":\"%s\",\"name\":\"%s\"}", id, id);
    json_t *doc = J(text), *out = NULL;
    CHECK_CASE(st->ops->platform_tenant_create(st, doc, &out) == DRV_OK, id);
    json_decref(doc);
    json_decref(out);
}

/* Create a client in tenant from JSON text; its client_id in id[40]. */
static drv_err mk_client(drv_store *st, const char *tenant, const char *text, uint8_t fill,
                         char id[40])
{
    drv_scope sc = {.tenant = tenant};
    uint8_t h[32];
    memset(h, fill, sizeof(h));
    json_t *doc = J(text), *out = NULL;
    drv_err e = st->ops->oauth_client_create(st, &sc, doc, h, &out);
    if (id)
        snprintf(id, 40, "%s", e == DRV_OK ? str(out, "client_id") : "");
    if (e == DRV_OK) {
        CHECK(strncmp(str(out, "client_id"), "oc_", 3) == 0 && strlen(str(out, "client_id")) == 23);
        CHECK(strcmp(str(out, "tenant"), tenant) == 0);
        CHECK(json_is_null(json_object_get(out, "revoked_at")));
        CHECK(!json_object_get(out, "secret_sha256") && !json_object_get(out, "client_secret"));
    }
    json_decref(doc);
    json_decref(out);
    return e;
}

static void test_clients(drv_store *st)
{
    drv_scope a = {.tenant = "alpha"}, b = {.tenant = "bravo"};
    char c1[40], c2[40], c3[40];
    CHECK(mk_client(st, "alpha",
                    "{\"name\":\"ci\",\"role\":\"operator\",\"scopes\":[\"x\",\"y:z\"]}", 0x11,
                    c1) == DRV_OK);
    CHECK(mk_client(st, "alpha", "{\"name\":\"ro\",\"role\":\"viewer\"}", 0x22, c2) == DRV_OK);
    CHECK(mk_client(st, "alpha", "{\"name\":\"adm\",\"role\":\"tenant_admin\"}", 0x33, c3) ==
          DRV_OK);
    CHECK(mk_client(st, "alpha", "{\"name\":\"p\",\"role\":\"platform_admin\"}", 1, NULL) ==
          DRV_INVAL);
    CHECK(mk_client(st, "alpha", "{\"role\":\"viewer\"}", 1, NULL) == DRV_INVAL);
    CHECK(mk_client(st, "alpha", "{\"name\":\"s\",\"role\":\"viewer\",\"scopes\":\"x\"}", 1,
                    NULL) == DRV_INVAL);
    CHECK(mk_client(st, "alpha", "{\"name\":\"s\",\"role\":\"viewer\",\"scopes\":[\"a b\"]}", 1,
                    NULL) == DRV_INVAL);
    CHECK(mk_client(st, "nobody", "{\"name\":\"n\",\"role\":\"viewer\"}", 1, NULL) == DRV_NOTFOUND);
    CHECK(mk_client(st, "BAD TENANT", "{\"name\":\"n\",\"role\":\"viewer\"}", 1, NULL) ==
          DRV_INVAL);

    /* Lists: each tenant its own, in pages. */
    json_t *list = NULL;
    CHECK(st->ops->oauth_client_list(st, &b, NULL, &list) == DRV_OK &&
          json_array_size(json_object_get(list, "items")) == 0);
    json_decref(list);
    drv_page pg = {.limit = 2};
    CHECK(st->ops->oauth_client_list(st, &a, &pg, &list) == DRV_OK &&
          json_array_size(json_object_get(list, "items")) == 2);
    char cursor[128];
    snprintf(cursor, sizeof(cursor), "%s", str(list, "next_cursor"));
    json_decref(list);
    pg.cursor = cursor;
    CHECK(st->ops->oauth_client_list(st, &a, &pg, &list) == DRV_OK &&
          json_array_size(json_object_get(list, "items")) == 1 &&
          json_is_null(json_object_get(list, "next_cursor")));
    json_decref(list);
    pg.cursor = "!!";
    CHECK(st->ops->oauth_client_list(st, &a, &pg, &list) == DRV_INVAL);

    /* Lookup: unscoped, with the digest. */
    drv_oauth_client c;
    CHECK(st->ops->lookup_oauth_client(st, c1, &c) == DRV_OK);
    CHECK(strcmp(c.id, c1) == 0 && strcmp(c.tenant, "alpha") == 0 &&
          strcmp(c.role, "operator") == 0 && strcmp(c.scopes, "x y:z") == 0 && !c.revoked);
    CHECK(c.secret_sha256[0] == 0x11 && c.secret_sha256[31] == 0x11);
    CHECK(st->ops->lookup_oauth_client(st, "oc_nothing", &c) == DRV_NOTFOUND && !c.id[0]);
    CHECK(st->ops->lookup_oauth_client(st, "", &c) == DRV_INVAL);

    /* Revocation: another tenant's client is a missing one; twice is fine. */
    CHECK(st->ops->oauth_client_revoke(st, &b, c1) == DRV_NOTFOUND);
    CHECK(st->ops->lookup_oauth_client(st, c1, &c) == DRV_OK && !c.revoked);
    CHECK(st->ops->oauth_client_revoke(st, &a, c1) == DRV_OK);
    CHECK(st->ops->oauth_client_revoke(st, &a, c1) == DRV_OK);
    CHECK(st->ops->oauth_client_revoke(st, &a, "oc_nothing") == DRV_NOTFOUND);
    CHECK(st->ops->lookup_oauth_client(st, c1, &c) == DRV_OK && c.revoked);
    CHECK(st->ops->lookup_oauth_client(st, c2, &c) == DRV_OK && !c.revoked);
    CHECK(st->ops->oauth_client_revoke(st, NULL, c2) == DRV_INVAL);
}

static drv_err add_key(drv_store *st, const char *kid, int64_t retire)
{
    drv_signing_key k = {.alg = "ES256"};
    snprintf(k.kid, sizeof(k.kid), "%s", kid);
    char jwk[128];
    snprintf(jwk, sizeof(jwk), "{\"kty\":\"EC\",\"kid\":\"%s\"}", kid);
    k.private_key_pem = (char *)"-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n";
    k.public_jwk = jwk;
    return st->ops->platform_signing_key_add(st, &k, retire);
}

static void test_keys(drv_store *st)
{
    drv_signing_key k;
    CHECK(st->ops->platform_signing_key_active(st, &k) == DRV_NOTFOUND);
    int64_t now = drv_store_now_ms();
    CHECK(add_key(st, "k1", now + 100000) == DRV_OK);
    CHECK(st->ops->platform_signing_key_active(st, &k) == DRV_OK);
    CHECK(strcmp(k.kid, "k1") == 0 && k.active && k.private_key_pem &&
          strstr(k.private_key_pem, "PRIVATE KEY") && k.public_jwk);
    drv_signing_key_clear(&k);
    CHECK(k.private_key_pem == NULL && !k.kid[0]);

    /* A second key retires the first, whose private key goes. */
    CHECK(add_key(st, "k2", now + 100000) == DRV_OK);
    CHECK(st->ops->platform_signing_key_active(st, &k) == DRV_OK && strcmp(k.kid, "k2") == 0);
    drv_signing_key_clear(&k);
    CHECK(raw_int("SELECT count(*) FROM signing_keys WHERE kid = 'k1' AND active = 0"
                  " AND private_key_pem IS NULL AND not_after > 0") == 1);
    CHECK(raw_int("SELECT count(*) FROM signing_keys WHERE active = 1") == 1);

    /* A kid already stored changes nothing (the retirement rolls back). */
    CHECK(add_key(st, "k1", now + 5) == DRV_EXISTS);
    CHECK(st->ops->platform_signing_key_active(st, &k) == DRV_OK && strcmp(k.kid, "k2") == 0 &&
          k.private_key_pem);
    drv_signing_key_clear(&k);
    CHECK(add_key(st, "bad kid", now) == DRV_INVAL);
    CHECK(add_key(st, "k9", 0) == DRV_INVAL);

    /* The list: newest first, public parts only. */
    json_t *list = NULL;
    CHECK(st->ops->platform_signing_key_list(st, &list) == DRV_OK);
    json_t *items = json_object_get(list, "items");
    CHECK(json_array_size(items) == 2);
    json_t *first = json_array_get(items, 0), *second = json_array_get(items, 1);
    CHECK(strcmp(str(first, "kid"), "k2") == 0 && json_is_true(json_object_get(first, "active")) &&
          json_is_null(json_object_get(first, "retires_at")));
    CHECK(strcmp(str(second, "kid"), "k1") == 0 &&
          json_is_false(json_object_get(second, "active")) &&
          json_is_string(json_object_get(second, "retires_at")));
    CHECK(strcmp(str(json_object_get(first, "jwk"), "kty"), "EC") == 0);
    char *text = json_dumps(list, 0);
    CHECK(text && !strstr(text, "PRIVATE"));
    free(text); /* jansson's allocation */
    json_decref(list);

    /* k2 retires with a window already over: the next add purges it. */
    CHECK(add_key(st, "k3", 1) == DRV_OK);
    CHECK(add_key(st, "k4", now + 100000) == DRV_OK);
    drv_signing_key rows[8];
    size_t n = 0;
    CHECK(st->ops->platform_signing_key_public(st, rows, 8, &n) == DRV_OK && n == 3);
    CHECK(n == 3 && strcmp(rows[0].kid, "k4") == 0 && rows[0].active && !rows[0].not_after_ms);
    for (size_t i = 0; i < n; i++) {
        CHECK(!rows[i].private_key_pem && rows[i].public_jwk);
        CHECK(strcmp(rows[i].kid, "k2") != 0);
        drv_signing_key_clear(&rows[i]);
    }
    CHECK(st->ops->platform_signing_key_public(st, rows, 1, &n) == DRV_OK && n == 1);
    drv_signing_key_clear(&rows[0]);
}

static void test_reader(void)
{
    drv_store *rd = NULL;
    CHECK(drv_store_open_reader(dbpath, &rd) == DRV_OK && rd);
    if (!rd)
        return;
    drv_scope a = {.tenant = "alpha"};
    uint8_t h[32] = {0};
    json_t *doc = J("{\"name\":\"r\",\"role\":\"viewer\"}"), *out = NULL;
    CHECK(rd->ops->oauth_client_create(rd, &a, doc, h, &out) == DRV_UNSUPPORTED);
    CHECK(add_key(rd, "k8", drv_store_now_ms()) == DRV_UNSUPPORTED);
    json_t *list = NULL;
    CHECK(rd->ops->oauth_client_list(rd, &a, NULL, &list) == DRV_OK);
    json_decref(list);
    json_decref(doc);
    drv_store_close(rd);
}

int main(void)
{
    drv_log_set_level(DRV_LOG_WARN);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(dbpath, sizeof(dbpath), "%s/oauth.db", tmpdir);
    atexit(cleanup);
    drv_store *st = NULL;
    CHECK(drv_store_open_sqlite(dbpath, &st) == DRV_OK && st);
    if (st) {
        mk_tenant(st, "alpha");
        mk_tenant(st, "bravo");
        test_clients(st);
        test_keys(st);
        test_reader();
        drv_store_close(st);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
