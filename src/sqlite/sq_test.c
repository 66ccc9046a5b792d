/*
 * sq_test.c — the shared SQLite layer on its own, against a scratch
 * database: scoped statements, error mapping, transactions, migrations,
 * list answers and cursors.  The stores' own tests (store_test.c,
 * twin_store_test.c) cover it again through every op.
 */
#include "sqlite/sq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/test.h"

enum {
    Q_BEGIN = DRV_SQ_BEGIN,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_VERSION,
    Q_INSERT,
    Q_PAGE,
    Q_COUNT,
    NQ
};

static const drv_sq_def defs[NQ] = {
    [Q_BEGIN] = {"BEGIN IMMEDIATE", false},
    [Q_COMMIT] = {"COMMIT", false},
    [Q_ROLLBACK] = {"ROLLBACK", false},
    [Q_VERSION] = {"PRAGMA user_version", false},
    [Q_INSERT] = {"INSERT INTO things (owner, name) VALUES (?1, ?2)", true},
    [Q_PAGE] = {"SELECT id, name FROM things WHERE owner = ?1 AND id < ?2 ORDER BY id DESC"
                " LIMIT ?3",
                true},
    [Q_COUNT] = {"SELECT count(*) FROM things WHERE owner = ?1", true},
};

static char tmpdir[] = "/tmp/drover-sq-test-XXXXXX";

static drv_err version(drv_sq *c, int64_t *v)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(c, Q_VERSION, &stmt);
    return e == DRV_OK ? drv_sq_step_int(c, stmt, "version", v) : e;
}

static drv_err record(drv_sq *c, int64_t v)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)v);
    return drv_sq_migrate_sql(c, sql, v);
}

static const char *const steps[] = {
    "CREATE TABLE things (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL);",
    "CREATE UNIQUE INDEX things_name ON things (owner, name);",
};

static const drv_sq_pragma pragmas[] = {{"PRAGMA journal_mode = WAL", "wal"}};

/* A fresh drv_sq on tmpdir/name, migrated; NULL on failure. */
static drv_sq *open_db(const char *name, sqlite3_stmt **cache)
{
    drv_sq *c = drv_calloc(1, sizeof(*c));
    char *path = drv_malloc(256);
    if (!c || !path) {
        drv_free(c);
        drv_free(path);
        return NULL;
    }
    snprintf(path, 256, "%s/%s", tmpdir, name);
    *c = (drv_sq){.path = path,
                  .who = "sq test",
                  .tenant_col = "owner",
                  .defs = defs,
                  .stmt = cache,
                  .ndefs = NQ};
    const drv_sq_schema sc = {.steps = steps, .count = 2, .version = version, .record = record};
    if (drv_sq_open(c, true, pragmas, 1) != DRV_OK || drv_sq_migrate(c, &sc) != DRV_OK) {
        drv_sq_close(c);
        drv_free(c);
        return NULL;
    }
    return c;
}

static drv_err insert(drv_sq *c, const char *owner, const char *name)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_scoped(c, owner, Q_INSERT, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, name);
    return drv_sq_run(c, stmt, "insert");
}

static int64_t count(drv_sq *c, const char *owner)
{
    sqlite3_stmt *stmt = NULL;
    int64_t n = -1;
    if (drv_sq_scoped(c, owner, Q_COUNT, &stmt) != DRV_OK ||
        drv_sq_step_int(c, stmt, "count", &n) != DRV_OK)
        return -1;
    return n;
}

static drv_err name_item(drv_sq *c, sqlite3_stmt *stmt, json_t **item)
{
    *item = json_string(drv_sq_col_text(stmt, 1));
    return *item ? DRV_OK : DRV_NOMEM;
}

static drv_err page(drv_sq *c, const char *cursor, uint32_t limit, json_t **out)
{
    sqlite3_stmt *stmt = NULL;
    int64_t before = INT64_MAX;
    drv_err e = cursor ? drv_sq_cursor_decode_int(cursor, &before) : DRV_OK;
    if (e == DRV_OK)
        e = drv_sq_scoped(c, "acme", Q_PAGE, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_int64(stmt, 2, before);
    sqlite3_bind_int64(stmt, 3, (int64_t)limit + 1);
    return drv_sq_collect(c, stmt, limit, DRV_SQ_INT_KEY(0), name_item, out);
}

static void test_statements(void)
{
    sqlite3_stmt *cache[NQ] = {0};
    drv_sq *c = open_db("a.db", cache);
    CHECK(c != NULL);
    if (!c)
        return;
    int64_t v = 0;
    CHECK(version(c, &v) == DRV_OK && v == 2);

    CHECK(insert(c, "acme", "one") == DRV_OK);
    CHECK(insert(c, "acme", "one") == DRV_EXISTS); /* a duplicate key */
    CHECK(insert(c, "other", "one") == DRV_OK);
    CHECK(count(c, "acme") == 1 && count(c, "other") == 1 && count(c, "none") == 0);

    /* A rolled-back transaction leaves nothing; a committed one stays. */
    CHECK(drv_sq_begin(c) == DRV_OK && insert(c, "acme", "two") == DRV_OK);
    drv_sq_rollback(c);
    drv_sq_rollback(c); /* nothing open: a no-op */
    CHECK(count(c, "acme") == 1);
    CHECK(drv_sq_begin(c) == DRV_OK && insert(c, "acme", "two") == DRV_OK &&
          insert(c, "acme", "three") == DRV_OK && drv_sq_commit(c) == DRV_OK);
    CHECK(count(c, "acme") == 3);

    /* Pages of two, newest first, with a cursor until the end. */
    json_t *p1 = NULL, *p2 = NULL;
    CHECK(page(c, NULL, 2, &p1) == DRV_OK);
    const char *next = json_string_value(json_object_get(p1, "next_cursor"));
    CHECK(json_array_size(json_object_get(p1, "items")) == 2 && next);
    CHECK(next && page(c, next, 2, &p2) == DRV_OK);
    CHECK(json_array_size(json_object_get(p2, "items")) == 1 &&
          json_is_null(json_object_get(p2, "next_cursor")));
    CHECK(strcmp(json_string_value(json_array_get(json_object_get(p2, "items"), 0)), "one") == 0);
    json_decref(p1);
    json_decref(p2);
    json_t *bad = NULL;
    CHECK(page(c, "MA", 2, &bad) == DRV_INVAL && !bad); /* "0" */
    drv_sq_close(c);
    drv_free(c);

    /* Reopening migrates nothing; a newer database is refused. */
    memset(cache, 0, sizeof(cache));
    c = open_db("a.db", cache);
    CHECK(c && count(c, "acme") == 3);
    if (c) {
        CHECK(sqlite3_exec(c->db, "PRAGMA user_version = 7", NULL, NULL, NULL) == SQLITE_OK);
        drv_sq_close(c);
        drv_free(c);
    }
    memset(cache, 0, sizeof(cache));
    drv_log_set_level((drv_log_level)(DRV_LOG_ERROR + 1)); /* the refusals log errors */
    CHECK(open_db("a.db", cache) == NULL);

    /* SQLITE_CANTOPEN is the backend's to name. */
    drv_sq m = {.path = drv_strdup("/nonexistent-drover-dir/x.db"), .who = "sq test"};
    CHECK(drv_sq_open(&m, true, NULL, 0) == DRV_IO);
    drv_sq_close(&m);
    m = (drv_sq){.path = drv_strdup("/nonexistent-drover-dir/x.db"),
                 .who = "sq test",
                 .cantopen_notfound = true};
    CHECK(drv_sq_open(&m, false, NULL, 0) == DRV_NOTFOUND);
    drv_sq_close(&m);
    drv_log_set_level(DRV_LOG_WARN);
}

static void test_helpers(void)
{
    CHECK(drv_sq_tenant_bound("SELECT 1 FROM t WHERE owner = ?1", "owner"));
    CHECK(drv_sq_tenant_bound("INSERT INTO t (owner, x) VALUES (?1, ?2)", "owner"));
    CHECK(!drv_sq_tenant_bound("SELECT 1 FROM t WHERE owner = ?1", "tenant"));
    CHECK(!drv_sq_tenant_bound("INSERT INTO t (x, owner) VALUES (?2, ?1)", "owner"));

    uint32_t n = 0;
    CHECK(drv_sq_page_limit(0, &n) == DRV_OK && n == 100);
    CHECK(drv_sq_page_limit(1000, &n) == DRV_OK && n == 1000);
    CHECK(drv_sq_page_limit(1001, &n) == DRV_INVAL);

    char text[16];
    char *cur = drv_sq_cursor_encode("k:1");
    CHECK(cur && drv_sq_cursor_decode(cur, text, sizeof(text)) == DRV_OK &&
          strcmp(text, "k:1") == 0);
    drv_free(cur);
    CHECK(drv_sq_cursor_decode(NULL, text, sizeof(text)) == DRV_INVAL);
    int64_t ts = 0, id = 0, key = 0;
    cur = drv_sq_cursor_encode_pos(-7, 9);
    CHECK(cur && drv_sq_cursor_decode_pos(cur, &ts, &id) == DRV_OK && ts == -7 && id == 9);
    drv_free(cur);
    cur = drv_sq_cursor_encode_int(42);
    CHECK(cur && drv_sq_cursor_decode_int(cur, &key) == DRV_OK && key == 42);
    drv_free(cur);

    json_t *t = drv_sq_time_json(0);
    CHECK(json_is_null(t));
    json_decref(t);
    t = drv_sq_time_json(1700000000123LL);
    CHECK(t && strcmp(json_string_value(t), "2023-11-14T22:13:20.123Z") == 0);
    json_decref(t);
    t = drv_sq_time_json(INT64_MAX);
    CHECK(t && strcmp(json_string_value(t), "9999-12-31T23:59:59.999Z") == 0);
    json_decref(t);

    char *dump = NULL;
    json_t *j = json_pack("{s:i}", "a", 1);
    CHECK(drv_sq_json_dump(j, 7, &dump) == DRV_OK && strcmp(dump, "{\"a\":1}") == 0);
    drv_free(dump);
    CHECK(drv_sq_json_dump(j, 6, &dump) == DRV_TOOBIG);
    json_decref(j);
}

static void cleanup(void)
{
    static const char *const files[] = {"a.db", "a.db-wal", "a.db-shm"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char f[128];
        if (snprintf(f, sizeof(f), "%s/%s", tmpdir, files[i]) < (int)sizeof(f))
            unlink(f);
    }
    rmdir(tmpdir);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    drv_log_set_level(DRV_LOG_WARN);
    test_helpers();
    test_statements();
    cleanup();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
