/*
 * store_test.c — unit tests for the SQLite registry store (store_sqlite*.c),
 * each on its own database file in a temporary directory: schema migrations
 * (fresh, reopened, newer than the binary), tenants, documents (versions,
 * ids never reused, keyset pagination, filters), tenant isolation for every
 * scoped op, tokens, credentials, device events and connectivity, the audit
 * log, a reader handle beside the writer, RFC 3339 times, and allocation
 * failure through drv_mem_fail_at.
 */
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "registry/store.h"
#include "registry/store_int.h"

#include "core/test.h"

static char tmpdir[] = "/tmp/drover-store-test-XXXXXX";
static char paths[16][128];
static int npaths;

/* A new database path in the temporary directory, removed at exit. */
static const char *db_path(const char *name)
{
    char *p = paths[npaths++];
    snprintf(p, sizeof(paths[0]), "%s/%s.db", tmpdir, name);
    return p;
}

static void cleanup(void)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < npaths; i++) {
        for (int k = 0; k < 3; k++) {
            char f[160];
            if (snprintf(f, sizeof(f), "%s%s", paths[i], suffix[k]) < (int)sizeof(f))
                unlink(f);
        }
    }
    rmdir(tmpdir);
}

static drv_store *open_new(const char *name)
{
    drv_store *st = NULL;
    drv_err e = drv_store_open_sqlite(db_path(name), &st);
    CHECK(e == DRV_OK && st);
    return st;
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

static int64_t num(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static size_t nitems(json_t *list)
{
    return json_array_size(json_object_get(list, "items"));
}

static json_t *item(json_t *list, size_t i)
{
    return json_array_get(json_object_get(list, "items"), i);
}

/* Create tenant id (name = id). */
static void mk_tenant(drv_store *st, const char *id)
{
    char text[128];
    snprintf(text, sizeof(text), "{\"id\":\"%s\",\"name\":\"%s\"}", id, id);
    json_t *doc = J(text), *out = NULL;
    CHECK_CASE(st->ops->platform_tenant_create(st, doc, &out) == DRV_OK, id);
    json_decref(doc);
    json_decref(out);
}

/* Create a document from JSON text; the created document's id or "" on failure. */
static drv_err mk_doc(drv_store *st, const char *tenant, const char *kind, const char *text,
                      char id[130])
{
    drv_scope sc = {.tenant = tenant};
    json_t *doc = J(text), *out = NULL;
    drv_err e = st->ops->doc_create(st, &sc, kind, doc, &out);
    if (id)
        snprintf(id, 130, "%s", e == DRV_OK ? str(out, "id") : "");
    json_decref(doc);
    json_decref(out);
    return e;
}

static bool is_base32_id(const char *id, size_t n)
{
    if (strlen(id) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '2' && id[i] <= '7')))
            return false;
    return true;
}

static void clear_all(drv_credential *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        drv_credential_clear(&c[i]);
}

/* -- tests --------------------------------------------------------------------- */

static void test_time(void)
{
    char buf[32];
    int64_t ms = 0;
    CHECK(strcmp(drv_store_format_time(0, buf, sizeof(buf)), "1970-01-01T00:00:00.000Z") == 0);
    CHECK(strcmp(drv_store_format_time(1795900517123LL, buf, sizeof(buf)),
                 "2026-11-28T21:15:17.123Z") == 0);
    CHECK(strcmp(drv_store_format_time(-1, buf, sizeof(buf)), "1969-12-31T23:59:59.999Z") == 0);
    CHECK(strcmp(drv_store_format_time(INT64_MAX, buf, sizeof(buf)), "9999-12-31T23:59:59.999Z") ==
          0);
    CHECK(drv_store_parse_time("2026-11-28T21:15:17.123Z", &ms) && ms == 1795900517123LL);
    CHECK(drv_store_parse_time("2026-11-28T22:15:17.123456+01:00", &ms) && ms == 1795900517123LL);
    CHECK(drv_store_parse_time("2026-11-28t21:15:17z", &ms) && ms == 1795900517000LL);
    CHECK(drv_store_parse_time("2026-11-28T20:15:17.1-01:00", &ms) && ms == 1795900517100LL);
    CHECK(drv_store_parse_time("2024-02-29T00:00:00Z", &ms));
    CHECK(drv_store_parse_time("1969-12-31T23:59:59.999Z", &ms) && ms == -1);
    /* Every formatted time parses back to itself. */
    for (int64_t t = -86400000LL * 800; t < 86400000LL * 40000; t += 86400000LL * 97 + 12345) {
        int64_t back = 0;
        CHECK_CASE(drv_store_parse_time(drv_store_format_time(t, buf, sizeof(buf)), &back) &&
                       back == t,
                   buf);
    }
    static const char *const bad[] = {
        "",
        "2026-11-28",
        "2026-11-28T21:15:17",
        "2026-13-01T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2026-11-31T00:00:00Z",
        "2026-11-28T24:00:00Z",
        "2026-11-28T21:60:00Z",
        "2026-11-28T21:15:17.Z",
        "2026-11-28T21:15:17+0100",
        "2026-11-28T21:15:17Zjunk",
        "26-11-28T21:15:17Z",
        "2026-11-28X21:15:17Z",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_CASE(!drv_store_parse_time(bad[i], &ms), bad[i]);
    CHECK(!drv_store_parse_time(NULL, &ms));
}

/* Every scoped statement binds its tenant; and the check itself can fail. */
static void test_sql_table(void)
{
    for (int q = 0; q < SQ_COUNT; q++) {
        CHECK(sq_queries[q].sql != NULL);
        if (sq_queries[q].sql && sq_queries[q].scoped)
            CHECK_CASE(sq_tenant_bound(sq_queries[q].sql), sq_queries[q].sql);
    }
    CHECK(!sq_tenant_bound("SELECT doc FROM docs WHERE kind = ?2"));
    CHECK(!sq_tenant_bound("INSERT INTO docs (kind, tenant_id) VALUES (?2, ?1)"));
}

static void test_cursor(void)
{
    char out[64];
    static const char *const keys[] = {"a", "ab", "abc", "abcd", "dev-001:x.y_z"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char *c = sq_cursor_encode(keys[i]);
        CHECK(c && sq_cursor_decode(c, out, sizeof(out)) == DRV_OK && strcmp(out, keys[i]) == 0);
        CHECK(c && !strpbrk(c, "+/="));
        drv_free(c);
    }
    CHECK(sq_cursor_decode("", out, sizeof(out)) == DRV_INVAL);
    CHECK(sq_cursor_decode("YQ=", out, sizeof(out)) == DRV_INVAL);
    CHECK(sq_cursor_decode("Y", out, sizeof(out)) == DRV_INVAL);
    CHECK(sq_cursor_decode("YR", out, sizeof(out)) == DRV_INVAL); /* non-zero padding bits */
    CHECK(sq_cursor_decode("YWJj", out, 3) == DRV_INVAL);         /* does not fit */
    int64_t ts, id;
    char *c = sq_cursor_encode_pos(-5, 42);
    CHECK(c && sq_cursor_decode_pos(c, &ts, &id) == DRV_OK && ts == -5 && id == 42);
    drv_free(c);
    c = sq_cursor_encode_pos(INT64_MAX - 1, INT64_MAX);
    CHECK(c && sq_cursor_decode_pos(c, &ts, &id) == DRV_OK && ts == INT64_MAX - 1 &&
          id == INT64_MAX);
    drv_free(c);
    c = sq_cursor_encode("9223372036854775808:1");
    CHECK(c && sq_cursor_decode_pos(c, &ts, &id) == DRV_INVAL);
    drv_free(c);
    c = sq_cursor_encode("12x:4");
    CHECK(c && sq_cursor_decode_pos(c, &ts, &id) == DRV_INVAL);
    drv_free(c);
}

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db;
    int64_t v = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK) {
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

static bool raw_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    bool ok = sqlite3_open(path, &db) == SQLITE_OK &&
              sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK;
    sqlite3_close(db);
    return ok;
}

static void test_migrations(void)
{
    const char *path = db_path("migrate");
    drv_store *st = NULL, *rd = NULL;
    CHECK(drv_store_open_sqlite(path, &st) == DRV_OK);
    CHECK(st && strcmp(st->ops->name, "sqlite") == 0 && st->ops->ping(st) == DRV_OK);
    mk_tenant(st, "acme");
    drv_store_close(st);
    CHECK(raw_int(path, "SELECT count(*) FROM schema_migrations") == sq_migration_count);
    CHECK(raw_int(path, "SELECT max(version) FROM schema_migrations") == sq_migration_count);
    CHECK(raw_int(path, "SELECT count(*) FROM schema_migrations WHERE applied_at > 0") ==
          sq_migration_count);
    CHECK(raw_int(path, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'") ==
          1);

    /* Reopening migrates nothing and keeps the data. */
    st = NULL;
    CHECK(drv_store_open_sqlite(path, &st) == DRV_OK);
    json_t *t = NULL;
    CHECK(st && st->ops->platform_tenant_get(st, "acme", &t) == DRV_OK && t);
    json_decref(t);
    drv_store_close(st);
    CHECK(raw_int(path, "SELECT count(*) FROM schema_migrations") == sq_migration_count);

    /* A database migrated by a newer binary is refused, by writer and reader. */
    CHECK(raw_exec(path, "INSERT INTO schema_migrations VALUES (999, 1)"));
    st = (drv_store *)1;
    drv_log_set_level(
        (drv_log_level)(DRV_LOG_ERROR + 1)); /* the refusal logs an error; keep the output clean */
    CHECK(drv_store_open_sqlite(path, &st) == DRV_CONFIG && st == NULL);
    CHECK(drv_store_open_reader(path, &rd) == DRV_CONFIG && rd == NULL);
    /* A reader needs an existing, migrated database. */
    CHECK(drv_store_open_reader(db_path("absent"), &rd) == DRV_NOTFOUND && rd == NULL);
    const char *other = db_path("other");
    CHECK(raw_exec(other, "CREATE TABLE t (x)"));
    CHECK(drv_store_open_reader(other, &rd) == DRV_CONFIG && rd == NULL);
    drv_log_set_level(DRV_LOG_WARN);
    CHECK(drv_store_open_sqlite(NULL, &st) == DRV_INVAL);
}

static void test_tenants(void)
{
    drv_store *st = open_new("tenants");
    const drv_store_ops *o = st->ops;
    json_t *doc = J("{\"id\":\"acme\",\"name\":\"Acme\",\"quotas\":{\"devices\":10},"
                    "\"version\":77,\"status\":\"deleted\"}");
    json_t *t = NULL, *t2 = NULL;
    CHECK(o->platform_tenant_create(st, doc, &t) == DRV_OK);
    CHECK(strcmp(str(t, "id"), "acme") == 0 && strcmp(str(t, "name"), "Acme") == 0);
    CHECK(num(t, "version") == 1 && strcmp(str(t, "status"), "active") == 0);
    CHECK(num(json_object_get(t, "quotas"), "devices") == 10);
    CHECK(strlen(str(t, "created_at")) == 24 &&
          strcmp(str(t, "created_at"), str(t, "updated_at")) == 0);
    CHECK(o->platform_tenant_get(st, "acme", &t2) == DRV_OK && json_equal(t, t2));
    json_decref(t2);
    CHECK(o->platform_tenant_create(st, doc, &t2) == DRV_EXISTS && t2 == NULL);
    json_decref(doc);
    json_decref(t);

    /* Generated and malformed ids. */
    doc = J("{\"name\":\"Generated\"}");
    CHECK(o->platform_tenant_create(st, doc, &t) == DRV_OK && is_base32_id(str(t, "id"), 20));
    json_decref(t);
    json_decref(doc);
    static const char *const bad[] = {"{\"id\":\"AB-c\",\"name\":\"x\"}",
                                      "{\"id\":\"ab\",\"name\":\"x\"}",
                                      "{\"id\":\"a_b\",\"name\":\"x\"}",
                                      "{\"id\":7,\"name\":\"x\"}",
                                      "{\"id\":\"abc\"}",
                                      "[]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        doc = J(bad[i]);
        CHECK_CASE(o->platform_tenant_create(st, doc, &t) == DRV_INVAL && !t, bad[i]);
        json_decref(doc);
    }
    CHECK(o->platform_tenant_get(st, "nope", &t) == DRV_NOTFOUND && !t);

    /* Updates: version check, status values. */
    doc = J("{\"name\":\"Acme Corp\",\"status\":\"suspended\"}");
    CHECK(o->platform_tenant_update(st, "acme", doc, 5, &t) == DRV_CONFLICT && !t);
    CHECK(o->platform_tenant_update(st, "acme", doc, 1, &t) == DRV_OK);
    CHECK(num(t, "version") == 2 && strcmp(str(t, "status"), "suspended") == 0);
    CHECK(strcmp(str(t, "name"), "Acme Corp") == 0 && !json_object_get(t, "quotas"));
    json_decref(t);
    json_decref(doc);
    doc = J("{\"name\":\"Acme\",\"status\":\"deleted\"}");
    CHECK(o->platform_tenant_update(st, "acme", doc, 0, &t) == DRV_INVAL);
    json_decref(doc);
    doc = J("{\"name\":\"Acme\"}"); /* status kept when absent */
    CHECK(o->platform_tenant_update(st, "acme", doc, 0, &t) == DRV_OK);
    CHECK(num(t, "version") == 3 && strcmp(str(t, "status"), "suspended") == 0);
    json_decref(t);
    CHECK(o->platform_tenant_update(st, "zzz", doc, 0, &t) == DRV_NOTFOUND);

    /* Delete marks; the tenant stays readable, frozen, and its id taken. */
    CHECK(o->platform_tenant_delete(st, "acme") == DRV_OK);
    CHECK(o->platform_tenant_get(st, "acme", &t) == DRV_OK);
    CHECK(strcmp(str(t, "status"), "deleted") == 0 && num(t, "version") == 4);
    json_decref(t);
    CHECK(o->platform_tenant_delete(st, "acme") == DRV_NOTFOUND);
    CHECK(o->platform_tenant_update(st, "acme", doc, 0, &t) == DRV_NOTFOUND);
    json_decref(doc);
    doc = J("{\"id\":\"acme\",\"name\":\"again\"}");
    CHECK(o->platform_tenant_create(st, doc, &t) == DRV_EXISTS);
    json_decref(doc);

    /* List, two per page. */
    mk_tenant(st, "bbb");
    mk_tenant(st, "ccc");
    drv_page pg = {.limit = 2};
    int total = 0, pages = 0;
    char *cursor = NULL;
    for (;;) {
        pg.cursor = cursor;
        CHECK(o->platform_tenant_list(st, &pg, &t) == DRV_OK);
        total += (int)nitems(t);
        pages++;
        json_t *next = json_object_get(t, "next_cursor");
        drv_free(cursor);
        cursor = json_is_string(next) ? drv_strdup(json_string_value(next)) : NULL;
        json_decref(t);
        if (!cursor || pages > 5)
            break;
    }
    CHECK(total == 4 && pages == 2);
    drv_free(cursor);
    drv_store_close(st);
}

static void test_docs(void)
{
    drv_store *st = open_new("docs");
    const drv_store_ops *o = st->ops;
    drv_scope sc = {.tenant = "acme"};
    mk_tenant(st, "acme");

    json_t *doc = J("{\"id\":\"pump-1\",\"name\":\"Pump\",\"tenant\":\"evil\",\"version\":9,"
                    "\"connectivity\":{\"online\":true},\"status\":\"active\"}");
    json_t *d = NULL, *d2 = NULL;
    CHECK(o->doc_create(st, &sc, DRV_KIND_DEVICE, doc, &d) == DRV_OK);
    CHECK(strcmp(str(d, "id"), "pump-1") == 0 && strcmp(str(d, "tenant"), "acme") == 0);
    CHECK(num(d, "version") == 1 && !json_object_get(d, "connectivity"));
    CHECK(strlen(str(d, "created_at")) == 24 && str(d, "created_at")[23] == 'Z');
    CHECK(o->doc_get(st, &sc, DRV_KIND_DEVICE, "pump-1", &d2) == DRV_OK && json_equal(d, d2));
    json_decref(d2);
    /* Kinds are separate namespaces. */
    CHECK(o->doc_get(st, &sc, DRV_KIND_USER, "pump-1", &d2) == DRV_NOTFOUND && !d2);
    CHECK(o->doc_create(st, &sc, DRV_KIND_DEVICE, doc, &d2) == DRV_EXISTS && !d2);
    json_decref(doc);

    /* Replace: version check, bookkeeping kept. */
    doc = J("{\"id\":\"other\",\"name\":\"Pump 2\",\"created_at\":\"x\"}");
    CHECK(o->doc_replace(st, &sc, DRV_KIND_DEVICE, "pump-1", doc, 2, &d2) == DRV_CONFLICT && !d2);
    CHECK(o->doc_replace(st, &sc, DRV_KIND_DEVICE, "pump-1", doc, 1, &d2) == DRV_OK);
    CHECK(num(d2, "version") == 2 && strcmp(str(d2, "id"), "pump-1") == 0);
    CHECK(strcmp(str(d2, "created_at"), str(d, "created_at")) == 0);
    CHECK(strcmp(str(d2, "name"), "Pump 2") == 0 && !json_object_get(d2, "status"));
    json_decref(d2);
    CHECK(o->doc_replace(st, &sc, DRV_KIND_DEVICE, "pump-1", doc, 0, &d2) == DRV_OK);
    CHECK(num(d2, "version") == 3);
    json_decref(d2);
    CHECK(o->doc_replace(st, &sc, DRV_KIND_DEVICE, "nope", doc, 0, &d2) == DRV_NOTFOUND);
    json_decref(doc);
    json_decref(d);

    /* Delete: gone, and the id is never reused. */
    int64_t n = -1;
    CHECK(o->doc_count(st, &sc, DRV_KIND_DEVICE, &n) == DRV_OK && n == 1);
    CHECK(o->doc_delete(st, &sc, DRV_KIND_DEVICE, "pump-1") == DRV_OK);
    CHECK(o->doc_get(st, &sc, DRV_KIND_DEVICE, "pump-1", &d) == DRV_NOTFOUND);
    CHECK(o->doc_delete(st, &sc, DRV_KIND_DEVICE, "pump-1") == DRV_NOTFOUND);
    CHECK(o->doc_count(st, &sc, DRV_KIND_DEVICE, &n) == DRV_OK && n == 0);
    CHECK(mk_doc(st, "acme", DRV_KIND_DEVICE, "{\"id\":\"pump-1\"}", NULL) == DRV_EXISTS);
    /* ...but the same id of another kind is another resource. */
    CHECK(mk_doc(st, "acme", DRV_KIND_GROUP, "{\"id\":\"pump-1\"}", NULL) == DRV_OK);

    /* Generated ids, malformed ids and kinds. */
    char id[130];
    CHECK(mk_doc(st, "acme", DRV_KIND_USER, "{\"name\":\"u\"}", id) == DRV_OK);
    CHECK(is_base32_id(id, 20));
    char long_id[200];
    memset(long_id, 'a', 128);
    snprintf(long_id + 128, sizeof(long_id) - 128, "%s", "");
    char text[300];
    snprintf(text, sizeof(text), "{\"id\":\"%s\"}", long_id);
    CHECK(mk_doc(st, "acme", DRV_KIND_USER, text, NULL) == DRV_OK); /* 128 is fine */
    snprintf(text, sizeof(text), "{\"id\":\"%sa\"}", long_id);
    CHECK(mk_doc(st, "acme", DRV_KIND_USER, text, NULL) == DRV_INVAL);
    CHECK(mk_doc(st, "acme", DRV_KIND_USER, "{\"id\":\"a/b\"}", NULL) == DRV_INVAL);
    CHECK(mk_doc(st, "acme", DRV_KIND_USER, "{\"id\":\"\"}", NULL) == DRV_INVAL);
    CHECK(mk_doc(st, "acme", DRV_KIND_USER, "{\"id\":5}", NULL) == DRV_INVAL);
    CHECK(mk_doc(st, "acme", "widget", "{}", NULL) == DRV_INVAL);
    CHECK(o->doc_get(st, &sc, DRV_KIND_USER, "a/b", &d) == DRV_INVAL);
    /* A missing tenant is not found (foreign key), not an I/O error. */
    CHECK(mk_doc(st, "nobody", DRV_KIND_USER, "{}", NULL) == DRV_NOTFOUND);

    /* Oversized documents are refused before they reach SQLite. */
    size_t big = DRV_STORE_DOC_MAX + 10;
    char *blob = drv_malloc(big + 1);
    memset(blob, 'x', big);
    blob[big] = '\0';
    doc = json_pack("{s:s}", "blob", blob);
    CHECK(o->doc_create(st, &sc, DRV_KIND_USER, doc, &d) == DRV_TOOBIG && !d);
    json_decref(doc);
    drv_free(blob);
    drv_store_close(st);
}

/* Every scoped op refuses a missing scope and treats another tenant's rows as missing. */
static void test_isolation(void)
{
    drv_store *st = open_new("isolation");
    const drv_store_ops *o = st->ops;
    drv_scope a = {.tenant = "tenant-a"}, b = {.tenant = "tenant-b"};
    mk_tenant(st, "tenant-a");
    mk_tenant(st, "tenant-b");
    CHECK(mk_doc(st, "tenant-a", DRV_KIND_DEVICE, "{\"id\":\"d1\",\"name\":\"A's\"}", NULL) ==
          DRV_OK);
    CHECK(mk_doc(st, "tenant-a", DRV_KIND_USER, "{\"id\":\"u1\"}", NULL) == DRV_OK);
    json_t *doc = J("{\"name\":\"t\",\"role\":\"tenant_admin\"}"), *out = NULL;
    uint8_t sha[32] = {1};
    CHECK(o->token_create(st, "tenant-a", doc, sha, &out) == DRV_OK);
    char tok[40];
    snprintf(tok, sizeof(tok), "%s", str(out, "id"));
    json_decref(out);
    json_decref(doc);
    doc = J("{\"kind\":\"secret\",\"secret_hash\":\"$argon2id$v=19$x\"}");
    CHECK(o->credential_add(st, &a, "d1", doc, &out) == DRV_OK);
    char cred[40];
    snprintf(cred, sizeof(cred), "%s", str(out, "id"));
    json_decref(out);
    CHECK(o->event_append(st, &a, "d1", "provisioned", 0, NULL) == DRV_OK);
    CHECK(o->audit_append(st, "tenant-a", "tok", "device.create", "devices/d1", "127.0.0.1",
                          NULL) == DRV_OK);

    /* Tenant B sees nothing of A's. */
    json_t *d = NULL;
    int64_t n = -1;
    CHECK(o->doc_get(st, &b, DRV_KIND_DEVICE, "d1", &d) == DRV_NOTFOUND && !d);
    CHECK(o->doc_get(st, &b, DRV_KIND_USER, "u1", &d) == DRV_NOTFOUND && !d);
    CHECK(o->doc_list(st, &b, DRV_KIND_DEVICE, NULL, NULL, &d) == DRV_OK && nitems(d) == 0);
    json_decref(d);
    CHECK(o->doc_count(st, &b, DRV_KIND_DEVICE, &n) == DRV_OK && n == 0);
    json_t *repl = J("{\"name\":\"B's now\"}");
    CHECK(o->doc_replace(st, &b, DRV_KIND_DEVICE, "d1", repl, 0, &d) == DRV_NOTFOUND && !d);
    CHECK(o->doc_delete(st, &b, DRV_KIND_DEVICE, "d1") == DRV_NOTFOUND);
    CHECK(o->token_list(st, &b, NULL, &d) == DRV_OK && nitems(d) == 0);
    json_decref(d);
    CHECK(o->token_revoke(st, &b, tok) == DRV_NOTFOUND);
    CHECK(o->credential_add(st, &b, "d1", doc, &d) == DRV_NOTFOUND && !d);
    CHECK(o->credential_list(st, &b, "d1", &d) == DRV_NOTFOUND && !d);
    CHECK(o->credential_revoke(st, &b, "d1", cred) == DRV_NOTFOUND);
    CHECK(o->credential_revoke_all(st, &b, "d1") == DRV_NOTFOUND);
    CHECK(o->event_append(st, &b, "d1", "connected", 0, NULL) == DRV_NOTFOUND);
    CHECK(o->event_list(st, &b, "d1", 0, 0, NULL, &d) == DRV_NOTFOUND && !d);
    CHECK(o->audit_list(st, &b, 0, 0, NULL, &d) == DRV_OK && nitems(d) == 0);
    json_decref(d);
    drv_credential creds[4];
    size_t nc = 9;
    CHECK(o->lookup_credentials(st, "tenant-b", "d1", creds, 4, &nc) == DRV_OK && nc == 0);
    clear_all(creds, nc <= 4 ? nc : 0);
    /* B's own "d1" is another device; A's is untouched by it. */
    CHECK(mk_doc(st, "tenant-b", DRV_KIND_DEVICE, "{\"id\":\"d1\",\"name\":\"B's\"}", NULL) ==
          DRV_OK);
    CHECK(o->credential_revoke(st, &b, "d1", cred) == DRV_NOTFOUND);
    CHECK(o->credential_revoke_all(st, &b, "d1") == DRV_OK);
    CHECK(o->doc_delete(st, &b, DRV_KIND_DEVICE, "d1") == DRV_OK);

    /* A's rows are intact. */
    CHECK(o->doc_get(st, &a, DRV_KIND_DEVICE, "d1", &d) == DRV_OK &&
          strcmp(str(d, "name"), "A's") == 0 && num(d, "version") == 1);
    json_decref(d);
    drv_token_info ti;
    CHECK(o->lookup_token(st, sha, &ti) == DRV_OK && !ti.revoked);
    CHECK(o->lookup_credentials(st, "tenant-a", "d1", creds, 4, &nc) == DRV_OK && nc == 1);
    for (size_t i = 0; i < nc; i++)
        drv_credential_clear(&creds[i]);
    CHECK(o->event_list(st, &a, "d1", 0, 0, NULL, &d) == DRV_OK && nitems(d) == 1);
    json_decref(d);
    CHECK(o->audit_list(st, &a, 0, 0, NULL, &d) == DRV_OK && nitems(d) == 1);
    json_decref(d);

    /* No scope, no tenant, an empty or malformed tenant: refused. */
    drv_scope none = {.tenant = NULL}, empty = {.tenant = ""}, upper = {.tenant = "Tenant-A"};
    const drv_scope *bad[] = {NULL, &none, &empty, &upper};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const drv_scope *s = bad[i];
        d = NULL;
        CHECK(o->doc_create(st, s, DRV_KIND_USER, repl, &d) == DRV_INVAL && !d);
        CHECK(o->doc_get(st, s, DRV_KIND_DEVICE, "d1", &d) == DRV_INVAL && !d);
        CHECK(o->doc_replace(st, s, DRV_KIND_DEVICE, "d1", repl, 0, &d) == DRV_INVAL && !d);
        CHECK(o->doc_delete(st, s, DRV_KIND_DEVICE, "d1") == DRV_INVAL);
        CHECK(o->doc_list(st, s, DRV_KIND_DEVICE, NULL, NULL, &d) == DRV_INVAL && !d);
        CHECK(o->doc_count(st, s, DRV_KIND_DEVICE, &n) == DRV_INVAL);
        CHECK(o->token_list(st, s, NULL, &d) == DRV_INVAL && !d);
        CHECK(o->token_revoke(st, s, tok) == DRV_INVAL);
        CHECK(o->credential_add(st, s, "d1", doc, &d) == DRV_INVAL && !d);
        CHECK(o->credential_list(st, s, "d1", &d) == DRV_INVAL && !d);
        CHECK(o->credential_revoke(st, s, "d1", cred) == DRV_INVAL);
        CHECK(o->credential_revoke_all(st, s, "d1") == DRV_INVAL);
        CHECK(o->event_append(st, s, "d1", "connected", 0, NULL) == DRV_INVAL);
        CHECK(o->event_list(st, s, "d1", 0, 0, NULL, &d) == DRV_INVAL && !d);
        CHECK(o->audit_list(st, s, 0, 0, NULL, &d) == DRV_INVAL && !d);
        CHECK(o->lookup_credentials(st, s ? s->tenant : NULL, "d1", creds, 4, &nc) == DRV_INVAL);
    }
    CHECK(o->doc_get(st, &a, DRV_KIND_DEVICE, "d1", &d) == DRV_OK && num(d, "version") == 1);
    json_decref(d);
    json_decref(repl);
    json_decref(doc);
    drv_store_close(st);
}

static void test_pagination(void)
{
    drv_store *st = open_new("pages");
    const drv_store_ops *o = st->ops;
    drv_scope sc = {.tenant = "acme"};
    mk_tenant(st, "acme");
    for (int i = 0; i < 250; i++)
        CHECK(mk_doc(st, "acme", DRV_KIND_DEVICE, "{\"kind\":\"sensor\"}", NULL) == DRV_OK);
    CHECK(mk_doc(st, "acme", DRV_KIND_USER, "{}", NULL) == DRV_OK); /* another kind: not listed */

    char seen[250][130];
    int total = 0, pages = 0;
    size_t sizes[4] = {0};
    char *cursor = NULL;
    bool sorted = true;
    for (;;) {
        drv_page pg = {.cursor = cursor, .limit = 100};
        json_t *l = NULL;
        CHECK(o->doc_list(st, &sc, DRV_KIND_DEVICE, NULL, &pg, &l) == DRV_OK);
        if (!l)
            break;
        sizes[pages < 4 ? pages : 3] = nitems(l);
        for (size_t i = 0; i < nitems(l) && total < 250; i++, total++) {
            snprintf(seen[total], sizeof(seen[0]), "%s", str(item(l, i), "id"));
            if (total > 0 && strcmp(seen[total - 1], seen[total]) >= 0)
                sorted = false; /* strictly increasing: no duplicates across pages */
        }
        pages++;
        json_t *next = json_object_get(l, "next_cursor");
        CHECK(next != NULL);
        drv_free(cursor);
        cursor = json_is_string(next) ? drv_strdup(json_string_value(next)) : NULL;
        json_decref(l);
        if (!cursor || pages > 4)
            break;
    }
    CHECK(pages == 3 && total == 250 && sorted);
    CHECK(sizes[0] == 100 && sizes[1] == 100 && sizes[2] == 50);
    drv_free(cursor);

    /* Exactly one full page: no next cursor. */
    json_t *l = NULL;
    drv_page pg = {.limit = 250};
    CHECK(o->doc_list(st, &sc, DRV_KIND_DEVICE, NULL, &pg, &l) == DRV_OK && nitems(l) == 250);
    CHECK(json_is_null(json_object_get(l, "next_cursor")));
    json_decref(l);
    /* Default limit 100; bounds. */
    CHECK(o->doc_list(st, &sc, DRV_KIND_DEVICE, NULL, NULL, &l) == DRV_OK && nitems(l) == 100);
    json_decref(l);
    pg.limit = 1001;
    CHECK(o->doc_list(st, &sc, DRV_KIND_DEVICE, NULL, &pg, &l) == DRV_INVAL && !l);
    pg = (drv_page){.cursor = "!!", .limit = 10};
    CHECK(o->doc_list(st, &sc, DRV_KIND_DEVICE, NULL, &pg, &l) == DRV_INVAL && !l);
    char *c = sq_cursor_encode("a/b"); /* decodes, but is no id */
    pg.cursor = c;
    CHECK(o->doc_list(st, &sc, DRV_KIND_DEVICE, NULL, &pg, &l) == DRV_INVAL && !l);
    drv_free(c);
    drv_store_close(st);
}

/* The ids a filtered list returns, joined by ','. */
static const char *filtered(drv_store *st, const drv_doc_filter *f, char *buf, size_t cap)
{
    drv_scope sc = {.tenant = "acme"};
    json_t *l = NULL;
    buf[0] = '\0';
    drv_err e = st->ops->doc_list(st, &sc, DRV_KIND_DEVICE, f, NULL, &l);
    if (e != DRV_OK) {
        snprintf(buf, cap, "error %s", drv_errname(e));
        return buf;
    }
    size_t o = 0;
    for (size_t i = 0; i < nitems(l); i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? "," : "", str(item(l, i), "id"));
    json_decref(l);
    return buf;
}

static void test_filters(void)
{
    drv_store *st = open_new("filters");
    mk_tenant(st, "acme");
    static const char *const docs[] = {
        "{\"id\":\"a\",\"name\":\"pump north\",\"status\":\"active\","
        "\"tags\":{\"env\":\"prod\",\"site\":\"x\"},\"attributes\":{\"floor\":3,\"ok\":true}}",
        "{\"id\":\"b\",\"name\":\"pump south\",\"status\":\"inactive\","
        "\"tags\":{\"env\":\"dev\"},\"attributes\":{\"floor\":\"3\",\"ok\":false}}",
        "{\"id\":\"c\",\"name\":\"valve\",\"status\":\"active\",\"tags\":{\"site\":\"y\"},"
        "\"attributes\":{\"floor\":4.5}}",
        "{\"id\":\"d\",\"name\":7,\"status\":5,\"tags\":[\"env\"]}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
        CHECK(mk_doc(st, "acme", DRV_KIND_DEVICE, docs[i], NULL) == DRV_OK);
    struct {
        drv_doc_filter f;
        const char *want;
    } cases[] = {
        {{0}, "a,b,c,d"},
        {{.tag = "env"}, "a,b"},
        {{.tag = "env=prod"}, "a"},
        {{.tag = "env=qa"}, ""},
        {{.tag = "site"}, "a,c"},
        {{.tag = "env="}, ""},
        {{.attr = "floor=3"}, "a,b"},
        {{.attr = "floor=4.5"}, "c"},
        {{.attr = "ok=true"}, "a"},
        {{.attr = "ok=false"}, "b"},
        {{.name_prefix = "pump"}, "a,b"},
        {{.name_prefix = "pump s"}, "b"},
        {{.name_prefix = "7"}, ""},
        {{.name_prefix = ""}, "a,b,c,d"},
        {{.field_eq = "status=active"}, "a,c"},
        {{.field_eq = "status=5"}, ""},
        {{.tag = "site", .field_eq = "status=active", .name_prefix = "v"}, "c"},
        {{.tag = "env", .attr = "floor=3", .field_eq = "status=inactive"}, "b"},
        {{.attr = "floor"}, "error INVAL"},
        {{.field_eq = "=x"}, "error INVAL"},
        {{.tag = ""}, "error INVAL"},
        {{.tag = "=prod"}, "error INVAL"},
    };
    char buf[256], name[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "filter case %zu", i);
        CHECK_CASE(strcmp(filtered(st, &cases[i].f, buf, sizeof(buf)), cases[i].want) == 0, name);
    }
    drv_store_close(st);
}

static void test_tokens(void)
{
    drv_store *st = open_new("tokens");
    const drv_store_ops *o = st->ops;
    drv_scope sc = {.tenant = "acme"};
    mk_tenant(st, "acme");
    uint8_t sha_p[32], sha_t[32], sha_x[32];
    memset(sha_p, 0xaa, 32);
    memset(sha_t, 0xbb, 32);
    memset(sha_x, 0xcc, 32);

    int64_t count = -1;
    CHECK(o->platform_token_count(st, &count) == DRV_OK && count == 0);
    json_t *doc = J("{\"name\":\"bootstrap\",\"role\":\"platform_admin\"}"), *t = NULL;
    CHECK(o->token_create(st, NULL, doc, sha_p, &t) == DRV_OK);
    CHECK(strncmp(str(t, "id"), "tok_", 4) == 0 && is_base32_id(str(t, "id") + 4, 16));
    CHECK(json_is_null(json_object_get(t, "tenant")) &&
          json_is_null(json_object_get(t, "expires_at")));
    char ptok[40];
    snprintf(ptok, sizeof(ptok), "%s", str(t, "id"));
    json_decref(t);
    CHECK(o->token_create(st, "acme", doc, sha_x, &t) == DRV_INVAL); /* no tenant platform admin */
    json_decref(doc);
    CHECK(o->platform_token_count(st, &count) == DRV_OK && count == 1);

    doc =
        J("{\"name\":\"ci\",\"role\":\"operator\",\"scopes\":[\"devices:read\",\"devices:write\"],"
          "\"expires_at\":\"2030-01-01T00:00:00Z\",\"user\":\"u1\"}");
    CHECK(o->token_create(st, "acme", doc, sha_t, &t) == DRV_OK);
    CHECK(strcmp(str(t, "tenant"), "acme") == 0 && strcmp(str(t, "role"), "operator") == 0);
    CHECK(strcmp(str(t, "expires_at"), "2030-01-01T00:00:00.000Z") == 0);
    CHECK(json_array_size(json_object_get(t, "scopes")) == 2 && strcmp(str(t, "user"), "u1") == 0);
    char ttok[40];
    snprintf(ttok, sizeof(ttok), "%s", str(t, "id"));
    json_decref(t);
    CHECK(o->token_create(st, "acme", doc, sha_t, &t) == DRV_EXISTS && !t); /* same digest */
    CHECK(o->token_create(st, "ghost", doc, sha_x, &t) == DRV_NOTFOUND && !t);
    json_decref(doc);
    static const char *const bad[] = {
        "{\"role\":\"viewer\"}",
        "{\"name\":\"x\",\"role\":\"root\"}",
        "{\"name\":\"x\",\"role\":\"viewer\",\"scopes\":\"a b\"}",
        "{\"name\":\"x\",\"role\":\"viewer\",\"scopes\":[\"a b\"]}",
        "{\"name\":\"x\",\"role\":\"viewer\",\"expires_at\":\"tomorrow\"}",
        "{\"name\":\"x\",\"role\":\"viewer\",\"user\":\"a/b\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        doc = J(bad[i]);
        CHECK_CASE(o->token_create(st, "acme", doc, sha_x, &t) == DRV_INVAL, bad[i]);
        json_decref(doc);
    }
    /* Scopes must fit drv_token_info.scopes. */
    doc = J("{\"name\":\"x\",\"role\":\"viewer\",\"scopes\":[]}");
    json_t *scopes = json_object_get(doc, "scopes");
    for (int i = 0; i < DRV_SCOPES_MAX / 11 + 1; i++) /* 11 bytes each, one more than fits */
        json_array_append_new(scopes, json_string("abcdefghij"));
    CHECK(o->token_create(st, "acme", doc, sha_x, &t) == DRV_INVAL);
    json_decref(doc);
    CHECK(o->token_create(st, NULL, NULL, sha_x, &t) == DRV_INVAL);

    /* Lookup by digest. */
    drv_token_info ti;
    CHECK(o->lookup_token(st, sha_t, &ti) == DRV_OK);
    CHECK(strcmp(ti.id, ttok) == 0 && strcmp(ti.tenant, "acme") == 0);
    CHECK(strcmp(ti.role, "operator") == 0 && strcmp(ti.scopes, "devices:read devices:write") == 0);
    CHECK(ti.expires_ms == 1893456000000LL && !ti.revoked);
    CHECK(o->lookup_token(st, sha_p, &ti) == DRV_OK);
    CHECK(strcmp(ti.tenant, "") == 0 && strcmp(ti.role, "platform_admin") == 0);
    CHECK(ti.expires_ms == 0 && ti.scopes[0] == '\0');
    CHECK(o->lookup_token(st, sha_x, &ti) == DRV_NOTFOUND && ti.id[0] == '\0');

    /* Lists carry metadata only. */
    json_t *l = NULL;
    CHECK(o->token_list(st, &sc, NULL, &l) == DRV_OK && nitems(l) == 1);
    json_t *it = item(l, 0);
    CHECK(strcmp(str(it, "id"), ttok) == 0 && !json_object_get(it, "sha256"));
    CHECK(json_object_size(it) == 9);
    json_decref(l);
    CHECK(o->platform_token_list(st, NULL, &l) == DRV_OK && nitems(l) == 1);
    CHECK(strcmp(str(item(l, 0), "id"), ptok) == 0);
    json_decref(l);

    /* Revocation, idempotent; the platform token only through the platform op. */
    CHECK(o->token_revoke(st, &sc, ttok) == DRV_OK);
    CHECK(o->lookup_token(st, sha_t, &ti) == DRV_OK && ti.revoked);
    CHECK(o->token_list(st, &sc, NULL, &l) == DRV_OK &&
          json_is_string(json_object_get(item(l, 0), "revoked_at")));
    json_decref(l);
    CHECK(o->token_revoke(st, &sc, ttok) == DRV_OK);
    CHECK(o->token_revoke(st, &sc, ptok) == DRV_NOTFOUND);
    CHECK(o->platform_token_revoke(st, ttok) == DRV_NOTFOUND);
    CHECK(o->platform_token_revoke(st, ptok) == DRV_OK);
    CHECK(o->lookup_token(st, sha_p, &ti) == DRV_OK && ti.revoked);
    CHECK(o->platform_token_count(st, &count) == DRV_OK && count == 1);
    drv_store_close(st);
}

static const char fp_upper[] = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789";
static const char fp_lower[] = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

static drv_err add_cred(drv_store *st, const char *tenant, const char *device, const char *text,
                        char id[40])
{
    drv_scope sc = {.tenant = tenant};
    json_t *doc = J(text), *out = NULL;
    drv_err e = st->ops->credential_add(st, &sc, device, doc, &out);
    if (id)
        snprintf(id, 40, "%s", e == DRV_OK ? str(out, "id") : "");
    if (e == DRV_OK) {
        CHECK(!json_object_get(out, "secret_hash") && !json_object_get(out, "public_key_pem"));
        CHECK(strcmp(str(out, "device"), device) == 0 &&
              json_is_null(json_object_get(out, "revoked_at")));
    }
    json_decref(doc);
    json_decref(out);
    return e;
}

static size_t live(drv_store *st, const char *tenant, const char *device, drv_credential *c,
                   size_t max)
{
    size_t n = 99;
    CHECK(st->ops->lookup_credentials(st, tenant, device, c, max, &n) == DRV_OK);
    return n;
}

static void test_credentials(void)
{
    drv_store *st = open_new("creds");
    const drv_store_ops *o = st->ops;
    drv_scope sc = {.tenant = "acme"};
    mk_tenant(st, "acme");
    mk_tenant(st, "other");
    CHECK(mk_doc(st, "acme", DRV_KIND_DEVICE, "{\"id\":\"d1\",\"status\":\"active\"}", NULL) ==
          DRV_OK);
    CHECK(mk_doc(st, "other", DRV_KIND_DEVICE, "{\"id\":\"d9\"}", NULL) == DRV_OK);

    char c_secret[40], c_x509[40], c_jwt[40];
    CHECK(add_cred(st, "acme", "d1", "{\"kind\":\"secret\",\"secret_hash\":\"$argon2id$h1\"}",
                   c_secret) == DRV_OK);
    CHECK(strncmp(c_secret, "cred_", 5) == 0 && is_base32_id(c_secret + 5, 16));
    char text[256];
    snprintf(text, sizeof(text), "{\"kind\":\"x509\",\"fingerprint\":\"%s\"}", fp_upper);
    CHECK(add_cred(st, "acme", "d1", text, c_x509) == DRV_OK);
    CHECK(
        add_cred(st, "acme", "d1",
                 "{\"kind\":\"jwt_key\",\"public_key_pem\":\"-----BEGIN PUBLIC KEY-----\\nAA\\n\","
                 "\"not_after\":\"2099-01-01T00:00:00Z\"}",
                 c_jwt) == DRV_OK);
    CHECK(
        add_cred(
            st, "acme", "d1",
            "{\"kind\":\"secret\",\"secret_hash\":\"old\",\"not_after\":\"2001-01-01T00:00:00Z\"}",
            NULL) == DRV_OK); /* already expired */
    /* The same certificate cannot be live twice, even in another tenant. */
    CHECK(add_cred(st, "other", "d9", text, NULL) == DRV_EXISTS);
    static const char *const bad[] = {
        "{\"kind\":\"secret\"}",
        "{\"kind\":\"secret\",\"secret_hash\":\"\"}",
        "{\"kind\":\"secret\",\"secret_hash\":\"h\",\"public_key_pem\":\"-----BEGIN \"}",
        "{\"kind\":\"x509\",\"fingerprint\":\"abc\"}",
        "{\"kind\":\"x509\",\"fingerprint\":\"zz\"}",
        "{\"kind\":\"jwt_key\",\"public_key_pem\":\"not pem\"}",
        "{\"kind\":\"password\",\"secret_hash\":\"h\"}",
        "{\"kind\":\"secret\",\"secret_hash\":\"h\",\"not_after\":\"soon\"}",
        "{\"secret_hash\":\"h\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_CASE(add_cred(st, "acme", "d1", bad[i], NULL) == DRV_INVAL, bad[i]);
    CHECK(add_cred(st, "acme", "ghost", "{\"kind\":\"secret\",\"secret_hash\":\"h\"}", NULL) ==
          DRV_NOTFOUND);

    /* Live ones only, newest first, with their material. */
    drv_credential c[8];
    size_t n = live(st, "acme", "d1", c, 8);
    CHECK(n == 3);
    bool saw_secret = false, saw_x509 = false, saw_jwt = false;
    for (size_t i = 0; i < n; i++) {
        CHECK(strcmp(c[i].tenant, "acme") == 0 && strcmp(c[i].device, "d1") == 0);
        CHECK(c[i].device_active);
        if (strcmp(c[i].id, c_secret) == 0)
            saw_secret = strcmp(c[i].kind, "secret") == 0 && c[i].secret_hash &&
                         strcmp(c[i].secret_hash, "$argon2id$h1") == 0 && !c[i].public_key_pem &&
                         c[i].not_after_ms == 0;
        if (strcmp(c[i].id, c_x509) == 0)
            saw_x509 = strcmp(c[i].fingerprint, fp_lower) == 0 && !c[i].secret_hash;
        if (strcmp(c[i].id, c_jwt) == 0)
            saw_jwt = c[i].public_key_pem && strncmp(c[i].public_key_pem, "-----BEGIN", 10) == 0 &&
                      c[i].not_after_ms == 4070908800000LL;
    }
    CHECK(saw_secret && saw_x509 && saw_jwt);
    clear_all(c, n);
    CHECK(live(st, "acme", "d1", c, 1) == 1); /* max is respected */
    clear_all(c, 1);
    CHECK(live(st, "acme", "d1", c, 0) == 0);
    CHECK(live(st, "acme", "ghost", c, 8) == 0);

    /* Fingerprint lookup across tenants, either case. */
    drv_credential one;
    CHECK(o->lookup_fingerprint(st, fp_upper, &one) == DRV_OK);
    CHECK(strcmp(one.id, c_x509) == 0 && strcmp(one.tenant, "acme") == 0 && one.device_active);
    drv_credential_clear(&one);
    CHECK(one.secret_hash == NULL && one.id[0] == '\0');
    CHECK(o->lookup_fingerprint(st, "abc", &one) == DRV_INVAL);

    /* Revocation. */
    CHECK(o->credential_revoke(st, &sc, "d1", c_x509) == DRV_OK);
    CHECK(o->credential_revoke(st, &sc, "d1", c_x509) == DRV_OK);
    CHECK(o->credential_revoke(st, &sc, "d1", "cred_nope") == DRV_NOTFOUND);
    CHECK(o->lookup_fingerprint(st, fp_lower, &one) == DRV_NOTFOUND);
    n = live(st, "acme", "d1", c, 8);
    CHECK(n == 2);
    clear_all(c, n);
    CHECK(add_cred(st, "other", "d9", text, NULL) == DRV_OK); /* the certificate moved */
    CHECK(o->lookup_fingerprint(st, fp_lower, &one) == DRV_OK && strcmp(one.tenant, "other") == 0);
    drv_credential_clear(&one);

    /* The list shows everything, revoked included, without secrets. */
    json_t *l = NULL;
    CHECK(o->credential_list(st, &sc, "d1", &l) == DRV_OK && nitems(l) == 4);
    CHECK(json_is_null(json_object_get(l, "next_cursor")));
    int revoked = 0;
    for (size_t i = 0; i < nitems(l); i++) {
        json_t *it = item(l, i);
        revoked += json_is_string(json_object_get(it, "revoked_at"));
        CHECK(!json_object_get(it, "secret_hash") && !json_object_get(it, "public_key_pem"));
    }
    CHECK(revoked == 1);
    json_decref(l);

    /* A decommissioned device's credentials are flagged. */
    json_t *doc = J("{\"status\":\"decommissioned\"}"), *d = NULL;
    CHECK(o->doc_replace(st, &sc, DRV_KIND_DEVICE, "d1", doc, 0, &d) == DRV_OK);
    json_decref(d);
    json_decref(doc);
    n = live(st, "acme", "d1", c, 8);
    CHECK(n == 2 && !c[0].device_active && !c[1].device_active);
    clear_all(c, n);

    /* revoke_all, then the per-device limit. */
    CHECK(o->credential_revoke_all(st, &sc, "d1") == DRV_OK);
    CHECK(live(st, "acme", "d1", c, 8) == 0);
    CHECK(o->credential_revoke_all(st, &sc, "ghost") == DRV_NOTFOUND);
    for (int i = 0; i < DRV_STORE_CRED_MAX; i++)
        CHECK(add_cred(st, "acme", "d1", "{\"kind\":\"secret\",\"secret_hash\":\"h\"}", NULL) ==
              DRV_OK);
    CHECK(add_cred(st, "acme", "d1", "{\"kind\":\"secret\",\"secret_hash\":\"h\"}", NULL) ==
          DRV_LIMIT);

    /* Deleting the device deletes its credentials. */
    CHECK(o->doc_delete(st, &sc, DRV_KIND_DEVICE, "d1") == DRV_OK);
    CHECK(raw_int(paths[npaths - 1], "SELECT count(*) FROM credentials WHERE tenant_id = 'acme'") ==
          0);
    drv_store_close(st);
}

static void test_events(void)
{
    drv_store *st = open_new("events");
    const drv_store_ops *o = st->ops;
    drv_scope sc = {.tenant = "acme"};
    mk_tenant(st, "acme");
    CHECK(mk_doc(st, "acme", DRV_KIND_DEVICE, "{\"id\":\"d1\",\"name\":\"n\"}", NULL) == DRV_OK);
    const int64_t t0 = 1795900000000LL;
    json_t *det = J("{\"address\":\"10.0.0.7:5000\",\"protocol\":\"mqtt5\"}"), *d = NULL;
    CHECK(o->event_append(st, &sc, "d1", "connected", t0 + 1000, det) == DRV_OK);
    json_decref(det);
    CHECK(o->doc_get(st, &sc, DRV_KIND_DEVICE, "d1", &d) == DRV_OK);
    json_t *conn = json_object_get(d, "connectivity");
    CHECK(json_is_true(json_object_get(conn, "online")));
    CHECK(strcmp(str(conn, "last_seen"), "2026-11-28T21:06:41.000Z") == 0);
    CHECK(strcmp(str(conn, "last_address"), "10.0.0.7:5000") == 0);
    CHECK(num(d, "version") == 1); /* status, not an edit */
    char updated[32];
    snprintf(updated, sizeof(updated), "%s", str(d, "updated_at"));
    json_decref(d);

    det = J("{\"reason\":\"keepalive timeout\"}");
    CHECK(o->event_append(st, &sc, "d1", "disconnected", t0 + 5000, det) == DRV_OK);
    json_decref(det);
    /* An older report arriving late goes to the history only. */
    CHECK(o->event_append(st, &sc, "d1", "connected", t0 + 2000, NULL) == DRV_OK);
    CHECK(o->doc_get(st, &sc, DRV_KIND_DEVICE, "d1", &d) == DRV_OK);
    conn = json_object_get(d, "connectivity");
    CHECK(json_is_false(json_object_get(conn, "online")));
    CHECK(strcmp(str(conn, "last_seen"), "2026-11-28T21:06:45.000Z") == 0);
    CHECK(strcmp(str(conn, "last_address"), "10.0.0.7:5000") == 0);
    CHECK(strcmp(str(conn, "last_reason"), "keepalive timeout") == 0);
    CHECK(num(d, "version") == 1 && strcmp(str(d, "updated_at"), updated) == 0);
    json_decref(d);

    /* A replace keeps connectivity and ignores the caller's. */
    json_t *doc = J("{\"name\":\"renamed\",\"connectivity\":{\"online\":true}}");
    CHECK(o->doc_replace(st, &sc, DRV_KIND_DEVICE, "d1", doc, 1, &d) == DRV_OK);
    CHECK(json_is_false(json_object_get(json_object_get(d, "connectivity"), "online")));
    CHECK(num(d, "version") == 2);
    json_decref(d);
    json_decref(doc);

    CHECK(o->event_append(st, &sc, "d1", "firmware", t0 + 3000, NULL) == DRV_OK);
    CHECK(o->event_append(st, &sc, "d1", "firmware", t0 + 3000, NULL) == DRV_OK); /* same ts */
    CHECK(o->event_append(st, &sc, "ghost", "connected", t0, NULL) == DRV_NOTFOUND);
    CHECK(o->event_append(st, &sc, "ghost", "firmware", t0, NULL) == DRV_NOTFOUND);
    CHECK(o->event_append(st, &sc, "d1", "", t0, NULL) == DRV_INVAL);

    /* Newest first, two per page: 5 events. */
    static const int64_t want[] = {5000, 3000, 3000, 2000, 1000};
    int got = 0, pages = 0;
    bool order = true;
    char *cursor = NULL;
    for (;;) {
        drv_page pg = {.cursor = cursor, .limit = 2};
        json_t *l = NULL;
        CHECK(o->event_list(st, &sc, "d1", 0, 0, &pg, &l) == DRV_OK);
        if (!l)
            break;
        for (size_t i = 0; i < nitems(l); i++, got++) {
            int64_t ts = 0;
            CHECK(drv_store_parse_time(str(item(l, i), "ts"), &ts));
            if (got >= 5 || ts != t0 + want[got])
                order = false;
        }
        pages++;
        json_t *next = json_object_get(l, "next_cursor");
        drv_free(cursor);
        cursor = json_is_string(next) ? drv_strdup(json_string_value(next)) : NULL;
        json_decref(l);
        if (!cursor || pages > 5)
            break;
    }
    CHECK(got == 5 && pages == 3 && order);
    drv_free(cursor);

    /* A time range is half-open. */
    json_t *l = NULL;
    CHECK(o->event_list(st, &sc, "d1", t0 + 2000, t0 + 5000, NULL, &l) == DRV_OK);
    CHECK(nitems(l) == 3 && strcmp(str(item(l, 2), "kind"), "connected") == 0);
    json_decref(l);
    CHECK(o->event_list(st, &sc, "d1", 0, 0, NULL, &l) == DRV_OK);
    json_t *first = item(l, 0), *last = item(l, 4);
    CHECK(strcmp(str(first, "kind"), "disconnected") == 0 &&
          strcmp(str(json_object_get(first, "detail"), "reason"), "keepalive timeout") == 0);
    CHECK(strcmp(str(json_object_get(last, "detail"), "protocol"), "mqtt5") == 0);
    CHECK(!json_object_get(item(l, 1), "detail"));
    json_decref(l);
    CHECK(o->event_list(st, &sc, "ghost", 0, 0, NULL, &l) == DRV_NOTFOUND);
    drv_page bad = {.cursor = "bm9wZQ"}; /* "nope" */
    CHECK(o->event_list(st, &sc, "d1", 0, 0, &bad, &l) == DRV_INVAL && !l);

    /* Deleting the device deletes its history. */
    CHECK(o->doc_delete(st, &sc, DRV_KIND_DEVICE, "d1") == DRV_OK);
    CHECK(raw_int(paths[npaths - 1], "SELECT count(*) FROM device_events") == 0);
    drv_store_close(st);
}

static void test_audit(void)
{
    drv_store *st = open_new("audit");
    const drv_store_ops *o = st->ops;
    drv_scope a = {.tenant = "acme"}, b = {.tenant = "beta"};
    int64_t before = drv_store_now_ms();
    json_t *det = J("{\"name\":\"acme\"}");
    CHECK(o->audit_append(st, NULL, "tok_root", "tenant.create", "tenants/acme", "10.0.0.1", det) ==
          DRV_OK);
    json_decref(det);
    for (int i = 0; i < 5; i++) {
        char target[32];
        snprintf(target, sizeof(target), "devices/d%d", i);
        CHECK(o->audit_append(st, "acme", "tok_a", "device.create", target, NULL, NULL) == DRV_OK);
    }
    CHECK(o->audit_append(st, "beta", "tok_b", "device.delete", "devices/x", "::1", NULL) ==
          DRV_OK);
    CHECK(o->audit_append(st, "acme", NULL, "device.create", NULL, NULL, NULL) == DRV_INVAL);
    CHECK(o->audit_append(st, "Bad Tenant", "x", "y", NULL, NULL, NULL) == DRV_INVAL);

    json_t *l = NULL;
    CHECK(o->audit_list(st, &a, 0, 0, NULL, &l) == DRV_OK && nitems(l) == 5);
    CHECK(strcmp(str(item(l, 0), "target"), "devices/d4") == 0); /* newest first */
    CHECK(strcmp(str(item(l, 4), "target"), "devices/d0") == 0);
    CHECK(strcmp(str(item(l, 0), "tenant"), "acme") == 0 &&
          json_is_null(json_object_get(item(l, 0), "source")));
    json_decref(l);
    CHECK(o->audit_list(st, &b, 0, 0, NULL, &l) == DRV_OK && nitems(l) == 1);
    CHECK(strcmp(str(item(l, 0), "source"), "::1") == 0);
    json_decref(l);
    CHECK(o->platform_audit_list(st, 0, 0, NULL, &l) == DRV_OK && nitems(l) == 1);
    json_t *it = item(l, 0);
    CHECK(json_is_null(json_object_get(it, "tenant")) &&
          strcmp(str(it, "action"), "tenant.create") == 0 &&
          strcmp(str(json_object_get(it, "detail"), "name"), "acme") == 0 && num(it, "id") == 1);
    json_decref(l);

    /* Pages of two: 2, 2, 1 with no repeats. */
    drv_page pg = {.limit = 2};
    CHECK(o->audit_list(st, &a, 0, 0, &pg, &l) == DRV_OK && nitems(l) == 2);
    char c1[64];
    snprintf(c1, sizeof(c1), "%s", json_string_value(json_object_get(l, "next_cursor")));
    json_decref(l);
    pg.cursor = c1;
    CHECK(o->audit_list(st, &a, 0, 0, &pg, &l) == DRV_OK && nitems(l) == 2);
    CHECK(strcmp(str(item(l, 0), "target"), "devices/d2") == 0);
    char c2[64];
    snprintf(c2, sizeof(c2), "%s", json_string_value(json_object_get(l, "next_cursor")));
    json_decref(l);
    pg.cursor = c2;
    CHECK(o->audit_list(st, &a, 0, 0, &pg, &l) == DRV_OK && nitems(l) == 1);
    CHECK(json_is_null(json_object_get(l, "next_cursor")));
    json_decref(l);

    /* Time ranges. */
    int64_t later = drv_store_now_ms() + 3600000;
    CHECK(o->audit_list(st, &a, later, 0, NULL, &l) == DRV_OK && nitems(l) == 0);
    json_decref(l);
    CHECK(o->audit_list(st, &a, before - 1000, later, NULL, &l) == DRV_OK && nitems(l) == 5);
    json_decref(l);
    CHECK(o->audit_list(st, &a, 0, before - 1000, NULL, &l) == DRV_OK && nitems(l) == 0);
    json_decref(l);
    drv_store_close(st);
}

static void test_reader(void)
{
    const char *path = db_path("reader");
    drv_store *st = NULL, *rd = NULL;
    CHECK(drv_store_open_sqlite(path, &st) == DRV_OK);
    CHECK(drv_store_open_reader(path, &rd) == DRV_OK);
    if (!st || !rd) {
        drv_store_close(st);
        drv_store_close(rd);
        return;
    }
    drv_scope sc = {.tenant = "acme"};
    size_t n = 9;
    drv_credential c[4];
    CHECK(rd->ops->ping(rd) == DRV_OK);
    CHECK(rd->ops->lookup_credentials(rd, "acme", "d1", c, 4, &n) == DRV_OK && n == 0);

    mk_tenant(st, "acme");
    CHECK(mk_doc(st, "acme", DRV_KIND_DEVICE, "{\"id\":\"d1\"}", NULL) == DRV_OK);
    char id[40];
    CHECK(add_cred(st, "acme", "d1", "{\"kind\":\"secret\",\"secret_hash\":\"h\"}", id) == DRV_OK);
    CHECK(rd->ops->lookup_credentials(rd, "acme", "d1", c, 4, &n) == DRV_OK && n == 1);
    clear_all(c, n);
    json_t *d = NULL;
    CHECK(rd->ops->doc_get(rd, &sc, DRV_KIND_DEVICE, "d1", &d) == DRV_OK);
    json_decref(d);

    CHECK(st->ops->credential_revoke(st, &sc, "d1", id) == DRV_OK);
    CHECK(rd->ops->lookup_credentials(rd, "acme", "d1", c, 4, &n) == DRV_OK && n == 0);

    /* A reader does not write. */
    CHECK(rd->ops->event_append(rd, &sc, "d1", "connected", 0, NULL) == DRV_UNSUPPORTED);
    CHECK(mk_doc(rd, "acme", DRV_KIND_USER, "{}", NULL) == DRV_UNSUPPORTED);
    drv_store_close(rd);
    drv_store_close(st);
}

/* Every allocation of ours may fail: the op reports DRV_NOMEM, leaks nothing
 * (ASan's leak check) and the store works afterwards. */
static void test_alloc_failure(void)
{
    drv_store *st = open_new("nomem");
    drv_scope sc = {.tenant = "acme"};
    mk_tenant(st, "acme");
    for (int i = 0; i < 5; i++)
        CHECK(mk_doc(st, "acme", DRV_KIND_DEVICE, "{\"name\":\"x\"}", NULL) == DRV_OK);
    int nomem = 0;
    for (uint64_t nth = 1; nth <= 6; nth++) {
        json_t *l = NULL;
        drv_page pg = {.limit = 2};
        drv_mem_fail_at(nth);
        drv_err e = st->ops->doc_list(st, &sc, DRV_KIND_DEVICE, NULL, &pg, &l);
        drv_mem_fail_at(0);
        CHECK(e == DRV_OK || (e == DRV_NOMEM && l == NULL));
        nomem += e == DRV_NOMEM;
        json_decref(l);
        drv_mem_fail_at(nth);
        e = mk_doc(st, "acme", DRV_KIND_USER, "{\"name\":\"y\"}", NULL);
        drv_mem_fail_at(0);
        CHECK(e == DRV_OK || e == DRV_NOMEM);
        nomem += e == DRV_NOMEM;
    }
    CHECK(nomem >= 2);
    CHECK(mk_doc(st, "acme", DRV_KIND_USER, "{\"name\":\"z\"}", NULL) == DRV_OK);
    drv_store_close(st);
    drv_store *fail = (drv_store *)1;
    drv_mem_fail_at(1);
    CHECK(drv_store_open_sqlite(db_path("nomem2"), &fail) == DRV_NOMEM && fail == NULL);
    drv_mem_fail_at(0);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    drv_log_set_level(DRV_LOG_WARN);
    test_time();
    test_sql_table();
    test_cursor();
    test_migrations();
    test_tenants();
    test_docs();
    test_isolation();
    test_pagination();
    test_filters();
    test_tokens();
    test_credentials();
    test_events();
    test_audit();
    test_reader();
    test_alloc_failure();
    cleanup();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
