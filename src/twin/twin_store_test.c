/*
 * twin_store_test.c — unit tests for the SQLite twin store (twin_sqlite*.c),
 * each on its own directory under one mkdtemp: the statement table (every
 * scoped statement binds its tenant, the hot queries use their indexes),
 * opening and migrating, shadows (versions, conflicts, deletion, lists,
 * history pages and time ranges, pruning), commands (ids, seq, idempotency,
 * compare-and-set updates and their transitions, the API document, list
 * filters and pages, the pending queue, the timer's due list), group batches,
 * purging a device, persistence across reopening, begin/commit/rollback,
 * tenant isolation for every scoped op, and allocation failure.
 */
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "twin/twin_sqlite_int.h"
#include "twin/twin_store.h"

#include "core/test.h"

#define T0 1767225600000LL /* 2026-01-01T00:00:00.000Z */

static char tmpdir[] = "/tmp/drover-twin-test-XXXXXX";
static char dirs[32][128];
static int ndirs;

/* A new empty directory for one store, removed at exit. */
static const char *new_dir(const char *name)
{
    char *p = dirs[ndirs++];
    snprintf(p, sizeof(dirs[0]), "%s/%s", tmpdir, name);
    CHECK_CASE(mkdir(p, 0700) == 0, p);
    return p;
}

static void cleanup(void)
{
    static const char *const files[] = {"twin.db", "twin.db-wal", "twin.db-shm"};
    for (int i = 0; i < ndirs; i++) {
        for (int k = 0; k < 3; k++) {
            char f[192];
            if (snprintf(f, sizeof(f), "%s/%s", dirs[i], files[k]) < (int)sizeof(f))
                unlink(f);
        }
        rmdir(dirs[i]);
    }
    rmdir(tmpdir);
}

static drv_twin_store *open_dir(const char *dir)
{
    drv_twin_store *st = NULL;
    drv_err e = drv_twin_store_open_sqlite(dir, &st);
    CHECK_CASE(e == DRV_OK && st, drv_errname(e));
    return st;
}

static drv_twin_store *open_new(const char *name)
{
    return open_dir(new_dir(name));
}

static json_t *J(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &err);
    if (!j)
        fprintf(stderr, "bad test JSON: %s: %s\n", text, err.text);
    return j;
}

/* a and b are equal JSON; a is consumed. */
static bool json_is(json_t *a, const char *b)
{
    json_t *jb = J(b);
    bool eq = a && jb && json_equal(a, jb);
    json_decref(a);
    json_decref(jb);
    return eq;
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static int64_t num(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static size_t nitems(const json_t *list)
{
    return json_array_size(json_object_get(list, "items"));
}

static json_t *item(const json_t *list, size_t i)
{
    return json_array_get(json_object_get(list, "items"), i);
}

static const char *next_cursor(const json_t *list)
{
    return json_string_value(json_object_get(list, "next_cursor"));
}

static bool is_id(const char *id, const char *prefix)
{
    size_t p = strlen(prefix);
    if (strncmp(id, prefix, p) != 0 || strlen(id) != p + 24)
        return false;
    for (const char *c = id + p; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '2' && *c <= '7')))
            return false;
    return true;
}

/* -- shadow helpers ------------------------------------------------------------- */

static drv_err put(drv_twin_store *st, const char *tenant, const char *device, const char *name,
                   const char *stored, int64_t version, int64_t ts, const char *desired)
{
    json_t *doc = stored ? J(stored) : NULL, *d = desired ? J(desired) : NULL;
    drv_shadow_change ch = {.version = version,
                            .ts_ms = ts,
                            .actor = "token:t1",
                            .source = "rest",
                            .op = stored ? "update" : "delete",
                            .desired = d};
    drv_err e = st->ops->shadow_put(st, tenant, device, name, doc, &ch);
    json_decref(doc);
    json_decref(d);
    return e;
}

/* -- command helpers ------------------------------------------------------------ */

static drv_command mk_cmd(const char *tenant, const char *device, const char *name,
                          const char *params, int64_t t)
{
    drv_command c;
    memset(&c, 0, sizeof(c));
    snprintf(c.tenant, sizeof(c.tenant), "%s", tenant);
    snprintf(c.device, sizeof(c.device), "%s", device);
    snprintf(c.name, sizeof(c.name), "%s", name);
    c.params = drv_strdup(params);
    c.max_attempts = 3;
    c.timeout_ms = 30000;
    c.created_ms = t;
    c.expires_ms = t + 60000;
    c.next_ms = t + 60000;
    return c;
}

/* Add a command and give back its id (id_out may be NULL). */
static drv_err add_cmd(drv_twin_store *st, const char *tenant, const char *device, const char *name,
                       const char *idem, const char *batch, int64_t t, char id_out[40])
{
    drv_command c = mk_cmd(tenant, device, name, "{\"n\":1}", t);
    if (idem)
        snprintf(c.idem_key, sizeof(c.idem_key), "%s", idem);
    if (batch)
        snprintf(c.batch, sizeof(c.batch), "%s", batch);
    drv_err e = st->ops->command_add(st, &c);
    if (id_out)
        snprintf(id_out, 40, "%s", c.id);
    drv_command_clear(&c);
    return e;
}

/* Move command id of tenant from `from` to `to` at time t. */
static drv_err move(drv_twin_store *st, const char *tenant, const char *id, drv_cmd_state from,
                    drv_cmd_state to, int64_t t)
{
    drv_command c;
    drv_err e = st->ops->command_get(st, tenant, id, &c);
    if (e != DRV_OK)
        return e;
    c.state = to;
    c.updated_ms = t;
    c.next_ms = drv_cmd_terminal(to) ? 0 : c.next_ms;
    e = st->ops->command_update(st, &c, from, NULL);
    drv_command_clear(&c);
    return e;
}

typedef struct seen {
    int n;
    char ids[16][40];
    char tenants[16][64];
    int64_t seq[16];
    int stop_after; /* 0: never stop */
    drv_twin_store *st;
    bool update_inside; /* move each one to sent from within the callback */
    drv_err inner;
} seen;

static bool on_cmd(void *ud, drv_command *c)
{
    seen *s = ud;
    if (s->n < 16) {
        snprintf(s->ids[s->n], 40, "%s", c->id);
        snprintf(s->tenants[s->n], 64, "%s", c->tenant);
        s->seq[s->n] = c->seq;
    }
    s->n++;
    if (s->update_inside) {
        drv_cmd_state from = c->state;
        c->state = DRV_CMD_SENT;
        c->attempts++;
        c->updated_ms = c->created_ms + 1;
        s->inner = s->st->ops->command_update(s->st, c, from, NULL);
    }
    return s->stop_after == 0 || s->n < s->stop_after;
}

/* -- tests ----------------------------------------------------------------------- */

static void test_state_names(void)
{
    for (int i = 0; i < DRV_CMD_STATE_COUNT; i++)
        CHECK(drv_cmd_state_parse(drv_cmd_state_name((drv_cmd_state)i)) == i);
    CHECK(strcmp(drv_cmd_state_name(DRV_CMD_TIMED_OUT), "timed_out") == 0);
    CHECK(strcmp(drv_cmd_state_name(DRV_CMD_STATE_COUNT), "unknown") == 0);
    CHECK(drv_cmd_state_parse("nope") == -1);
    CHECK(drv_cmd_state_parse("") == -1);
    CHECK(drv_cmd_state_parse(NULL) == -1);
    CHECK(!drv_cmd_terminal(DRV_CMD_DELIVERED) && drv_cmd_terminal(DRV_CMD_SUCCEEDED) &&
          drv_cmd_terminal(DRV_CMD_CANCELLED));
    drv_command_clear(NULL);
    drv_shadow_row_clear(NULL);
}

/* The query plan of statement q mentions index. */
static bool uses_index(tw_store *s, tw_query q, const char *index)
{
    char sql[2048];
    sqlite3_stmt *stmt = NULL;
    bool found = false;
    snprintf(sql, sizeof(sql), "EXPLAIN QUERY PLAN %s", tw_queries[q].sql);
    if (sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL) != SQLITE_OK)
        return false;
    while (sqlite3_step(stmt) == SQLITE_ROW)
        found |= strstr((const char *)sqlite3_column_text(stmt, 3), index) != NULL;
    sqlite3_finalize(stmt);
    return found;
}

/* Every scoped statement binds its tenant; only the timer's and pruning's
 * statements are unscoped; every statement prepares; the hot ones use their
 * indexes. */
static void test_sql_table(void)
{
    static const tw_query unscoped[] = {
        TQ_BEGIN,       TQ_COMMIT,       TQ_ROLLBACK, TQ_SAVEPOINT,    TQ_RELEASE,
        TQ_ROLLBACK_TO, TQ_USER_VERSION, TQ_CMD_DUE,  TQ_CMD_DUE_NEXT, TQ_HISTORY_PRUNE};
    drv_twin_store *st = open_new("sql");
    tw_store *s = tw_of(st);
    for (int q = 0; q < TQ_COUNT; q++) {
        const char *sql = tw_queries[q].sql;
        CHECK(sql != NULL);
        if (!sql)
            continue;
        bool may_be_unscoped = false;
        for (size_t i = 0; i < sizeof(unscoped) / sizeof(unscoped[0]); i++)
            may_be_unscoped |= unscoped[i] == (tw_query)q;
        CHECK_CASE(tw_queries[q].scoped || may_be_unscoped, sql);
        if (tw_queries[q].scoped)
            CHECK_CASE(tw_tenant_bound(sql), sql);
        sqlite3_stmt *stmt = NULL;
        CHECK_CASE(sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL) == SQLITE_OK, sql);
        sqlite3_finalize(stmt);
    }
    CHECK(!tw_tenant_bound("SELECT doc FROM shadows WHERE device = ?2"));
    CHECK(!tw_tenant_bound("INSERT INTO shadows (device, tenant) VALUES (?2, ?1)"));
    CHECK(uses_index(s, TQ_CMD_PENDING, "commands_pending"));
    CHECK(uses_index(s, TQ_CMD_DUE, "commands_due"));
    CHECK(uses_index(s, TQ_CMD_DUE_NEXT, "commands_due"));
    CHECK(uses_index(s, TQ_CMD_LIST, "commands_tenant"));
    CHECK(uses_index(s, TQ_CMD_LIST_DEVICE, "commands_device"));
    CHECK(uses_index(s, TQ_CMD_LIST_BATCH, "commands_batch"));
    CHECK(uses_index(s, TQ_CMD_BY_IDEM, "commands_idem"));
    CHECK(uses_index(s, TQ_CMD_GET, "commands_id"));
    CHECK(uses_index(s, TQ_HISTORY_PAGE, "shadow_history_key"));
    CHECK(uses_index(s, TQ_HISTORY_PRUNE, "shadow_history_ts"));
    drv_twin_store_close(st);
}

static void test_cursor(void)
{
    static const int64_t keys[] = {1, 9, 10, 12345, INT64_MAX};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        int64_t back = 0;
        char *c = tw_cursor_encode(keys[i]);
        CHECK(c && tw_cursor_decode(c, &back) == DRV_OK && back == keys[i]);
        CHECK(c && !strpbrk(c, "+/="));
        drv_free(c);
    }
    int64_t k;
    CHECK(tw_cursor_decode("", &k) == DRV_INVAL);
    CHECK(tw_cursor_decode(NULL, &k) == DRV_INVAL);
    CHECK(tw_cursor_decode("MA", &k) == DRV_INVAL);   /* "0" */
    CHECK(tw_cursor_decode("MDE", &k) == DRV_INVAL);  /* "01" */
    CHECK(tw_cursor_decode("YWJj", &k) == DRV_INVAL); /* "abc" */
    CHECK(tw_cursor_decode("LTE", &k) == DRV_INVAL);  /* "-1" */
    CHECK(tw_cursor_decode("!!!!", &k) == DRV_INVAL);
    /* 20 digits do not fit. */
    CHECK(tw_cursor_decode("OTk5OTk5OTk5OTk5OTk5OTk5OTk", &k) == DRV_INVAL);
    /* 9223372036854775808 is INT64_MAX + 1. */
    CHECK(tw_cursor_decode("OTIyMzM3MjAzNjg1NDc3NTgwOA", &k) == DRV_INVAL);
}

static int64_t pragma_int(drv_twin_store *st, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(tw_of(st)->db, sql, -1, &stmt, NULL) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        v = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return v;
}

static void test_open(void)
{
    const char *dir = new_dir("open");
    drv_twin_store *st = open_dir(dir);
    CHECK(st && strcmp(st->ops->name, "sqlite") == 0);
    CHECK(pragma_int(st, "PRAGMA user_version") == tw_migration_count);
    CHECK(pragma_int(st, "PRAGMA synchronous") == 2);
    /* Waiting for a lock is sq.c's own busy handler (fine polling), not
     * SQLite's timeout handler, which reads back as 0. */
    CHECK(pragma_int(st, "PRAGMA busy_timeout") == 0);
    sqlite3_stmt *stmt = NULL;
    CHECK(sqlite3_prepare_v2(tw_of(st)->db, "PRAGMA journal_mode", -1, &stmt, NULL) == SQLITE_OK &&
          sqlite3_step(stmt) == SQLITE_ROW &&
          strcmp((const char *)sqlite3_column_text(stmt, 0), "wal") == 0);
    sqlite3_finalize(stmt);
    drv_twin_store_close(st);

    /* Reopening an up-to-date database migrates nothing. */
    st = open_dir(dir);
    CHECK(pragma_int(st, "PRAGMA user_version") == tw_migration_count);
    /* A schema newer than the binary is refused. */
    CHECK(sqlite3_exec(tw_of(st)->db, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK);
    drv_twin_store_close(st);
    drv_twin_store *bad = (drv_twin_store *)1;
    CHECK(drv_twin_store_open_sqlite(dir, &bad) == DRV_CONFIG && bad == NULL);

    CHECK(drv_twin_store_open_sqlite("/nonexistent-drover-dir/x", &bad) != DRV_OK && !bad);
    CHECK(drv_twin_store_open_sqlite("", &bad) == DRV_INVAL);
    CHECK(drv_twin_store_open_sqlite(NULL, &bad) == DRV_INVAL);
    drv_twin_store_close(NULL);
}

static void test_shadows(void)
{
    drv_twin_store *st = open_new("shadows");
    drv_shadow_row r;
    int64_t n = -1;
    json_t *out = NULL;

    CHECK(st->ops->shadow_get(st, "acme", "d1", "", &r) == DRV_NOTFOUND);
    CHECK(r.stored == NULL && r.version == 0);
    CHECK(st->ops->shadow_count(st, "acme", "d1", &n) == DRV_OK && n == 0);
    /* The first write is version 1; anything else is a conflict. */
    CHECK(put(st, "acme", "d1", "", "{\"desired\":{}}", 2, T0, NULL) == DRV_CONFLICT);
    CHECK(put(st, "acme", "d1", "", "{\"desired\":{\"a\":1}}", 1, T0, "{\"a\":1}") == DRV_OK);
    CHECK(put(st, "acme", "d1", "", "{\"desired\":{}}", 1, T0 + 1, NULL) == DRV_CONFLICT);
    CHECK(put(st, "acme", "d1", "", "{\"desired\":{}}", 3, T0 + 1, NULL) == DRV_CONFLICT);
    CHECK(st->ops->shadow_get(st, "acme", "d1", "", &r) == DRV_OK);
    CHECK(r.version == 1 && r.ts_ms == T0 && !r.deleted);
    CHECK(json_is(json_incref(r.stored), "{\"desired\":{\"a\":1}}"));
    drv_shadow_row_clear(&r);
    CHECK(r.stored == NULL);
    CHECK(put(st, "acme", "d1", "", "{\"desired\":{\"a\":2}}", 2, T0 + 10, "{\"a\":2}") == DRV_OK);
    CHECK(st->ops->shadow_get(st, "acme", "d1", "", &r) == DRV_OK && r.version == 2 &&
          r.ts_ms == T0 + 10);
    drv_shadow_row_clear(&r);

    /* Named shadows, listed by name; deleted ones are found but not listed. */
    CHECK(put(st, "acme", "d1", "zeta", "{\"reported\":{}}", 1, T0 + 20, NULL) == DRV_OK);
    CHECK(put(st, "acme", "d1", "alpha", "{\"reported\":{}}", 1, T0 + 30, NULL) == DRV_OK);
    CHECK(put(st, "acme", "d2", "alpha", "{\"reported\":{}}", 1, T0 + 30, NULL) == DRV_OK);
    CHECK(st->ops->shadow_count(st, "acme", "d1", &n) == DRV_OK && n == 3);
    CHECK(st->ops->shadow_list(st, "acme", "d1", &out) == DRV_OK);
    CHECK(nitems(out) == 3 && strcmp(str(item(out, 0), "name"), "") == 0 &&
          strcmp(str(item(out, 1), "name"), "alpha") == 0 &&
          strcmp(str(item(out, 2), "name"), "zeta") == 0);
    CHECK(num(item(out, 0), "version") == 2 && num(item(out, 0), "timestamp") == T0 + 10);
    CHECK(json_is_null(json_object_get(out, "next_cursor")));
    json_decref(out);

    CHECK(put(st, "acme", "d1", "zeta", NULL, 1, T0 + 40, NULL) == DRV_CONFLICT);
    CHECK(put(st, "acme", "d1", "zeta", NULL, 2, T0 + 40, NULL) == DRV_OK);
    CHECK(st->ops->shadow_get(st, "acme", "d1", "zeta", &r) == DRV_OK);
    CHECK(r.deleted && r.stored == NULL && r.version == 2 && r.ts_ms == T0 + 40);
    drv_shadow_row_clear(&r);
    CHECK(st->ops->shadow_count(st, "acme", "d1", &n) == DRV_OK && n == 2);
    CHECK(st->ops->shadow_list(st, "acme", "d1", &out) == DRV_OK && nitems(out) == 2);
    json_decref(out);
    /* The version goes on after a delete: the next write is 3. */
    CHECK(put(st, "acme", "d1", "zeta", "{\"reported\":{}}", 1, T0 + 50, NULL) == DRV_CONFLICT);
    CHECK(put(st, "acme", "d1", "zeta", "{\"reported\":{\"x\":1}}", 3, T0 + 50, NULL) == DRV_OK);
    CHECK(st->ops->shadow_get(st, "acme", "d1", "zeta", &r) == DRV_OK && !r.deleted &&
          r.version == 3 && json_is_object(r.stored));
    drv_shadow_row_clear(&r);

    /* Bad input. */
    drv_shadow_change ch = {.version = 0, .ts_ms = T0, .actor = "a", .source = "s", .op = "o"};
    json_t *doc = J("{}"), *arr = J("[]");
    CHECK(st->ops->shadow_put(st, "acme", "d1", "", doc, &ch) == DRV_INVAL);
    ch.version = 4;
    ch.actor = NULL;
    CHECK(st->ops->shadow_put(st, "acme", "d1", "", doc, &ch) == DRV_INVAL);
    ch.actor = "a";
    CHECK(st->ops->shadow_put(st, "acme", "d1", "", arr, &ch) == DRV_INVAL);
    CHECK(st->ops->shadow_put(st, "acme", "d1", "", doc, NULL) == DRV_INVAL);
    CHECK(st->ops->shadow_put(st, NULL, "d1", "", doc, &ch) == DRV_INVAL);
    CHECK(st->ops->shadow_put(st, "", "d1", "", doc, &ch) == DRV_INVAL);
    CHECK(st->ops->shadow_put(st, "acme", "", "", doc, &ch) == DRV_INVAL);
    CHECK(st->ops->shadow_put(st, "acme", "d1", NULL, doc, &ch) == DRV_INVAL);
    char longt[80];
    memset(longt, 't', sizeof(longt) - 1);
    longt[sizeof(longt) - 1] = '\0';
    CHECK(st->ops->shadow_get(st, longt, "d1", "", &r) == DRV_INVAL);
    CHECK(st->ops->shadow_count(st, "acme", NULL, &n) == DRV_INVAL);
    json_decref(doc);
    json_decref(arr);
    drv_twin_store_close(st);
}

static void test_history(void)
{
    drv_twin_store *st = open_new("history");
    json_t *out = NULL;
    /* Versions 1..7 at T0 + 100 * v; odd versions carry a desired patch. */
    for (int v = 1; v <= 7; v++)
        CHECK(put(st, "acme", "d1", "", "{\"desired\":{}}", v, T0 + 100 * v,
                  v % 2 ? "{\"a\":1}" : NULL) == DRV_OK);
    CHECK(put(st, "acme", "d1", "other", "{\"desired\":{}}", 1, T0, NULL) == DRV_OK);

    CHECK(st->ops->shadow_history(st, "acme", "d1", "", 0, 0, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 7 && next_cursor(out) == NULL);
    json_t *it = item(out, 0);
    CHECK(num(it, "version") == 7 && num(it, "timestamp") == T0 + 700);
    CHECK(strcmp(str(it, "actor"), "token:t1") == 0 && strcmp(str(it, "source"), "rest") == 0 &&
          strcmp(str(it, "op"), "update") == 0);
    CHECK(json_is(json_incref(json_object_get(it, "desired")), "{\"a\":1}"));
    CHECK(!json_object_get(it, "reported"));
    CHECK(!json_object_get(item(out, 1), "desired"));
    CHECK(num(item(out, 6), "version") == 1);
    json_decref(out);

    /* Pages of 3, newest first: 7 6 5 | 4 3 2 | 1. */
    int64_t want = 7;
    char *cursor = NULL;
    int pages = 0;
    do {
        CHECK(st->ops->shadow_history(st, "acme", "d1", "", 0, 0, cursor, 3, &out) == DRV_OK);
        drv_free(cursor);
        cursor = NULL;
        for (size_t i = 0; i < nitems(out); i++)
            CHECK(num(item(out, i), "version") == want--);
        if (next_cursor(out))
            cursor = drv_strdup(next_cursor(out));
        json_decref(out);
        pages++;
    } while (cursor && pages < 10);
    CHECK(pages == 3 && want == 0);
    /* Exactly a page full: no cursor pointing at an empty page. */
    CHECK(st->ops->shadow_history(st, "acme", "d1", "", 0, 0, NULL, 7, &out) == DRV_OK);
    CHECK(nitems(out) == 7 && next_cursor(out) == NULL);
    json_decref(out);

    /* Time range: from <= ts < to. */
    CHECK(st->ops->shadow_history(st, "acme", "d1", "", T0 + 200, T0 + 500, NULL, 0, &out) ==
          DRV_OK);
    CHECK(nitems(out) == 3 && num(item(out, 0), "version") == 4 &&
          num(item(out, 2), "version") == 2);
    json_decref(out);
    CHECK(st->ops->shadow_history(st, "acme", "d1", "", T0 + 600, 0, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 2);
    json_decref(out);
    CHECK(st->ops->shadow_history(st, "acme", "d1", "", 0, T0 + 200, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 1 && num(item(out, 0), "version") == 1);
    json_decref(out);
    CHECK(st->ops->shadow_history(st, "acme", "d1", "nope", 0, 0, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 0);
    json_decref(out);

    out = NULL;
    CHECK(st->ops->shadow_history(st, "acme", "d1", "", 0, 0, "bogus!", 0, &out) == DRV_INVAL);
    CHECK(st->ops->shadow_history(st, "acme", "d1", "", 0, 0, NULL, 1001, &out) == DRV_INVAL);
    CHECK(out == NULL);

    /* Prune: older than T0 + 350 (versions 1..3 and "other"), 2 at a time. */
    uint32_t n = 99;
    CHECK(st->ops->history_prune(st, T0 + 350, 2, &n) == DRV_OK && n == 2);
    CHECK(st->ops->history_prune(st, T0 + 350, 100, &n) == DRV_OK && n == 2);
    CHECK(st->ops->history_prune(st, T0 + 350, 100, &n) == DRV_OK && n == 0);
    CHECK(st->ops->shadow_history(st, "acme", "d1", "", 0, 0, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 4 && num(item(out, 3), "version") == 4);
    json_decref(out);
    /* Pruning history leaves the shadow alone. */
    drv_shadow_row r;
    CHECK(st->ops->shadow_get(st, "acme", "d1", "other", &r) == DRV_OK && r.version == 1);
    drv_shadow_row_clear(&r);
    drv_twin_store_close(st);
}

static void test_command_add(void)
{
    drv_twin_store *st = open_new("cmd_add");
    drv_command c = mk_cmd("acme", "d1", "reboot", "{\"delay\":5}", T0);
    c.state = DRV_CMD_SENT; /* ignored: a new command is queued */
    CHECK(st->ops->command_add(st, &c) == DRV_OK);
    CHECK(is_id(c.id, "cmd_") && c.seq > 0 && c.state == DRV_CMD_QUEUED && c.updated_ms == T0);
    int64_t seq1 = c.seq;
    char id1[40];
    snprintf(id1, sizeof(id1), "%s", c.id);
    drv_command_clear(&c);

    c = mk_cmd("acme", "d1", "reboot", "{}", T0 + 1);
    CHECK(st->ops->command_add(st, &c) == DRV_OK && c.seq > seq1 && strcmp(c.id, id1) != 0);
    drv_command_clear(&c);

    drv_command g;
    CHECK(st->ops->command_get(st, "acme", id1, &g) == DRV_OK);
    CHECK(strcmp(g.id, id1) == 0 && strcmp(g.tenant, "acme") == 0 && strcmp(g.device, "d1") == 0);
    CHECK(strcmp(g.name, "reboot") == 0 && strcmp(g.params, "{\"delay\":5}") == 0);
    CHECK(g.state == DRV_CMD_QUEUED && g.attempts == 0 && g.max_attempts == 3);
    CHECK(g.timeout_ms == 30000 && g.created_ms == T0 && g.updated_ms == T0);
    CHECK(g.expires_ms == T0 + 60000 && g.next_ms == T0 + 60000 && g.seq == seq1);
    CHECK(g.sent_ms == 0 && g.delivered_ms == 0 && !g.result && !g.error);
    CHECK(g.batch[0] == '\0' && g.idem_key[0] == '\0');
    drv_command_clear(&g);
    CHECK(st->ops->command_get(st, "acme", "cmd_nope", &g) == DRV_NOTFOUND);
    drv_command_clear(&g); /* zeroed on NOTFOUND: safe */

    /* Idempotency: the same key on the same device answers the stored one. */
    c = mk_cmd("acme", "d1", "set", "{\"v\":1}", T0 + 2);
    snprintf(c.idem_key, sizeof(c.idem_key), "k-1");
    CHECK(st->ops->command_add(st, &c) == DRV_OK);
    char idk[40];
    int64_t seqk = c.seq;
    snprintf(idk, sizeof(idk), "%s", c.id);
    drv_command_clear(&c);
    c = mk_cmd("acme", "d1", "other", "{\"v\":2}", T0 + 3);
    snprintf(c.idem_key, sizeof(c.idem_key), "k-1");
    CHECK(st->ops->command_add(st, &c) == DRV_EXISTS);
    CHECK(strcmp(c.id, idk) == 0 && c.seq == seqk && strcmp(c.name, "set") == 0 &&
          strcmp(c.params, "{\"v\":1}") == 0 && c.created_ms == T0 + 2 &&
          strcmp(c.idem_key, "k-1") == 0);
    drv_command_clear(&c);
    /* ... but another device, or no key, is a new command. */
    CHECK(add_cmd(st, "acme", "d2", "set", "k-1", NULL, T0 + 4, NULL) == DRV_OK);
    CHECK(add_cmd(st, "acme", "d1", "set", NULL, NULL, T0 + 5, NULL) == DRV_OK);
    CHECK(add_cmd(st, "acme", "d1", "set", "", NULL, T0 + 6, NULL) == DRV_OK);
    CHECK(add_cmd(st, "acme", "d1", "set", "", NULL, T0 + 7, NULL) == DRV_OK);

    /* Bad input. */
    c = mk_cmd("acme", "d1", "x", "{", T0);
    CHECK(st->ops->command_add(st, &c) == DRV_INVAL);
    drv_command_clear(&c);
    c = mk_cmd("acme", "d1", "x", "{}", T0);
    c.max_attempts = 0;
    CHECK(st->ops->command_add(st, &c) == DRV_INVAL);
    c.max_attempts = 21;
    CHECK(st->ops->command_add(st, &c) == DRV_INVAL);
    c.max_attempts = 1;
    c.name[0] = '\0';
    CHECK(st->ops->command_add(st, &c) == DRV_INVAL);
    snprintf(c.name, sizeof(c.name), "x");
    c.device[0] = '\0';
    CHECK(st->ops->command_add(st, &c) == DRV_INVAL);
    snprintf(c.device, sizeof(c.device), "d1");
    c.tenant[0] = '\0';
    CHECK(st->ops->command_add(st, &c) == DRV_INVAL);
    memset(c.tenant, 'a', sizeof(c.tenant)); /* not terminated */
    CHECK(st->ops->command_add(st, &c) == DRV_INVAL);
    snprintf(c.tenant, sizeof(c.tenant), "acme");
    drv_free(c.params);
    c.params = NULL;
    CHECK(st->ops->command_add(st, &c) == DRV_INVAL);
    c.params = drv_strdup("[1,2]"); /* any JSON value */
    CHECK(st->ops->command_add(st, &c) == DRV_OK);
    drv_command_clear(&c);
    CHECK(st->ops->command_add(st, NULL) == DRV_INVAL);
    drv_twin_store_close(st);
}

static void test_command_update(void)
{
    drv_twin_store *st = open_new("cmd_update");
    char id[40];
    json_t *doc = NULL;
    CHECK(add_cmd(st, "acme", "d1", "reboot", NULL, NULL, T0, id) == DRV_OK);
    drv_command c;
    CHECK(st->ops->command_get(st, "acme", id, &c) == DRV_OK);

    /* Wrong `from`: conflict, nothing written. */
    c.state = DRV_CMD_DELIVERED;
    c.updated_ms = T0 + 5;
    CHECK(st->ops->command_update(st, &c, DRV_CMD_SENT, NULL) == DRV_CONFLICT);
    /* queued -> sent: a transition. */
    c.state = DRV_CMD_SENT;
    c.attempts = 1;
    c.sent_ms = T0 + 10;
    c.updated_ms = T0 + 10;
    c.next_ms = T0 + 1010;
    CHECK(st->ops->command_update(st, &c, DRV_CMD_QUEUED, NULL) == DRV_OK);
    /* sent -> sent (a resend): no transition. */
    c.attempts = 2;
    c.sent_ms = T0 + 1010;
    c.updated_ms = T0 + 1010;
    CHECK(st->ops->command_update(st, &c, DRV_CMD_SENT, NULL) == DRV_OK);
    CHECK(st->ops->command_update(st, &c, DRV_CMD_QUEUED, NULL) == DRV_CONFLICT);
    /* sent -> succeeded with a result and a detail. */
    c.state = DRV_CMD_SUCCEEDED;
    c.updated_ms = T0 + 2000;
    c.next_ms = 0;
    c.result = drv_strdup("{\"ok\":true}");
    json_t *detail = J("{\"via\":\"mqtt\"}");
    CHECK(st->ops->command_update(st, &c, DRV_CMD_SENT, detail) == DRV_OK);
    json_decref(detail);
    drv_command_clear(&c);

    CHECK(st->ops->command_get(st, "acme", id, &c) == DRV_OK);
    CHECK(c.state == DRV_CMD_SUCCEEDED && c.attempts == 2 && c.sent_ms == T0 + 1010);
    CHECK(c.updated_ms == T0 + 2000 && c.next_ms == 0 && c.result &&
          strcmp(c.result, "{\"ok\":true}") == 0 && !c.error);
    CHECK(st->ops->command_json(st, "acme", id, &doc) == DRV_OK);
    json_t *tr = json_object_get(doc, "transitions");
    CHECK(json_array_size(tr) == 3);
    CHECK(strcmp(str(json_array_get(tr, 0), "state"), "queued") == 0 &&
          strcmp(str(json_array_get(tr, 0), "at"), "2026-01-01T00:00:00.000Z") == 0 &&
          !json_object_get(json_array_get(tr, 0), "detail"));
    CHECK(strcmp(str(json_array_get(tr, 1), "state"), "sent") == 0 &&
          strcmp(str(json_array_get(tr, 1), "at"), "2026-01-01T00:00:00.010Z") == 0);
    CHECK(strcmp(str(json_array_get(tr, 2), "state"), "succeeded") == 0 &&
          json_is(json_incref(json_object_get(json_array_get(tr, 2), "detail")),
                  "{\"via\":\"mqtt\"}"));
    json_decref(doc);

    /* A failure's text; a missing command; bad input. */
    drv_free(c.result);
    c.result = NULL;
    c.error = drv_strdup("device said no");
    c.state = DRV_CMD_FAILED;
    CHECK(st->ops->command_update(st, &c, DRV_CMD_SUCCEEDED, NULL) == DRV_OK);
    snprintf(c.id, sizeof(c.id), "cmd_missing");
    CHECK(st->ops->command_update(st, &c, DRV_CMD_FAILED, NULL) == DRV_NOTFOUND);
    snprintf(c.id, sizeof(c.id), "%s", id);
    c.state = DRV_CMD_STATE_COUNT;
    CHECK(st->ops->command_update(st, &c, DRV_CMD_FAILED, NULL) == DRV_INVAL);
    c.state = DRV_CMD_FAILED;
    CHECK(st->ops->command_update(st, &c, (drv_cmd_state)99, NULL) == DRV_INVAL);
    c.result = drv_strdup("not json");
    CHECK(st->ops->command_update(st, &c, DRV_CMD_FAILED, NULL) == DRV_INVAL);
    drv_command_clear(&c);
    CHECK(st->ops->command_json(st, "acme", id, &doc) == DRV_OK);
    CHECK(strcmp(str(doc, "state"), "failed") == 0 &&
          strcmp(str(doc, "error"), "device said no") == 0 &&
          json_is_null(json_object_get(doc, "result")));
    CHECK(json_array_size(json_object_get(doc, "transitions")) == 4);
    json_decref(doc);
    drv_twin_store_close(st);
}

static void test_command_json(void)
{
    static const char *const keys[] = {
        "id",         "device",     "batch",           "name",       "params",
        "state",      "attempts",   "max_attempts",    "timeout_ms", "expires_at",
        "created_at", "updated_at", "idempotency_key", "result",     "error",
        "transitions"};
    drv_twin_store *st = open_new("cmd_json");
    drv_command c = mk_cmd("acme", "d1", "set", "{\"a\":[1,2],\"b\":\"x\"}", T0 + 1234);
    snprintf(c.idem_key, sizeof(c.idem_key), "key-9");
    snprintf(c.batch, sizeof(c.batch), "cb_x");
    CHECK(st->ops->command_add(st, &c) == DRV_OK);
    json_t *doc = NULL;
    CHECK(st->ops->command_json(st, "acme", c.id, &doc) == DRV_OK);
    CHECK(json_object_size(doc) == sizeof(keys) / sizeof(keys[0]));
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        CHECK_CASE(json_object_get(doc, keys[i]) != NULL, keys[i]);
    CHECK(strcmp(str(doc, "id"), c.id) == 0 && strcmp(str(doc, "device"), "d1") == 0);
    CHECK(strcmp(str(doc, "batch"), "cb_x") == 0 && strcmp(str(doc, "name"), "set") == 0);
    CHECK(json_is(json_incref(json_object_get(doc, "params")), "{\"a\":[1,2],\"b\":\"x\"}"));
    CHECK(strcmp(str(doc, "state"), "queued") == 0 && num(doc, "attempts") == 0 &&
          num(doc, "max_attempts") == 3 && num(doc, "timeout_ms") == 30000);
    CHECK(strcmp(str(doc, "created_at"), "2026-01-01T00:00:01.234Z") == 0);
    CHECK(strcmp(str(doc, "updated_at"), "2026-01-01T00:00:01.234Z") == 0);
    CHECK(strcmp(str(doc, "expires_at"), "2026-01-01T00:01:01.234Z") == 0);
    CHECK(strcmp(str(doc, "idempotency_key"), "key-9") == 0);
    CHECK(json_is_null(json_object_get(doc, "result")) &&
          json_is_null(json_object_get(doc, "error")));
    json_decref(doc);
    drv_command_clear(&c);

    /* "batch" and "idempotency_key" are null when none; params may be any value. */
    c = mk_cmd("acme", "d1", "set", "42", T0);
    CHECK(st->ops->command_add(st, &c) == DRV_OK);
    CHECK(st->ops->command_json(st, "acme", c.id, &doc) == DRV_OK);
    CHECK(json_is_null(json_object_get(doc, "batch")) &&
          json_is_null(json_object_get(doc, "idempotency_key")) &&
          json_integer_value(json_object_get(doc, "params")) == 42);
    json_decref(doc);
    drv_command_clear(&c);
    CHECK(st->ops->command_json(st, "acme", "cmd_none", &doc) == DRV_NOTFOUND);
    CHECK(st->ops->command_json(st, "acme", NULL, &doc) == DRV_INVAL);
    drv_twin_store_close(st);
}

static void test_command_list(void)
{
    drv_twin_store *st = open_new("cmd_list");
    char ids[8][40];
    /* 8 commands: d1 gets 0 2 4 6, d2 gets 1 3 5 7; 0..2 in batch b1. */
    for (int i = 0; i < 8; i++)
        CHECK(add_cmd(st, "acme", i % 2 ? "d2" : "d1", "n", NULL, i < 3 ? "cb_b1" : NULL, T0 + i,
                      ids[i]) == DRV_OK);
    CHECK(move(st, "acme", ids[2], DRV_CMD_QUEUED, DRV_CMD_SENT, T0 + 100) == DRV_OK);
    CHECK(move(st, "acme", ids[5], DRV_CMD_QUEUED, DRV_CMD_CANCELLED, T0 + 100) == DRV_OK);
    json_t *out = NULL;

    CHECK(st->ops->command_list(st, "acme", NULL, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 8 && next_cursor(out) == NULL);
    for (int i = 0; i < 8; i++)
        CHECK(strcmp(str(item(out, (size_t)i), "id"), ids[7 - i]) == 0);
    CHECK(!json_object_get(item(out, 0), "transitions") &&
          json_object_get(item(out, 0), "params") &&
          strcmp(str(item(out, 0), "created_at"), "2026-01-01T00:00:00.007Z") == 0);
    json_decref(out);

    /* Pages of 3: 7 6 5 | 4 3 2 | 1 0. */
    char *cursor = NULL;
    int got = 0, pages = 0;
    do {
        CHECK(st->ops->command_list(st, "acme", NULL, cursor, 3, &out) == DRV_OK);
        drv_free(cursor);
        cursor = NULL;
        for (size_t i = 0; i < nitems(out); i++, got++)
            CHECK(strcmp(str(item(out, i), "id"), ids[7 - got]) == 0);
        if (next_cursor(out))
            cursor = drv_strdup(next_cursor(out));
        json_decref(out);
        pages++;
    } while (cursor && pages < 10);
    CHECK(pages == 3 && got == 8);

    drv_cmd_filter f = {.device = "d1", .state = -1};
    CHECK(st->ops->command_list(st, "acme", &f, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 4 && strcmp(str(item(out, 0), "id"), ids[6]) == 0 &&
          strcmp(str(item(out, 3), "id"), ids[0]) == 0);
    json_decref(out);
    CHECK(st->ops->command_list(st, "acme", &f, NULL, 3, &out) == DRV_OK);
    CHECK(nitems(out) == 3 && next_cursor(out));
    cursor = drv_strdup(next_cursor(out));
    json_decref(out);
    CHECK(st->ops->command_list(st, "acme", &f, cursor, 3, &out) == DRV_OK);
    CHECK(nitems(out) == 1 && strcmp(str(item(out, 0), "id"), ids[0]) == 0 && !next_cursor(out));
    json_decref(out);
    drv_free(cursor);

    f = (drv_cmd_filter){.batch = "cb_b1", .state = -1};
    CHECK(st->ops->command_list(st, "acme", &f, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 3 && strcmp(str(item(out, 0), "id"), ids[2]) == 0);
    json_decref(out);
    f.device = "d2";
    CHECK(st->ops->command_list(st, "acme", &f, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 1 && strcmp(str(item(out, 0), "id"), ids[1]) == 0);
    json_decref(out);
    f = (drv_cmd_filter){.state = DRV_CMD_SENT};
    CHECK(st->ops->command_list(st, "acme", &f, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 1 && strcmp(str(item(out, 0), "id"), ids[2]) == 0 &&
          strcmp(str(item(out, 0), "state"), "sent") == 0);
    json_decref(out);
    f = (drv_cmd_filter){.device = "d2", .state = DRV_CMD_QUEUED};
    CHECK(st->ops->command_list(st, "acme", &f, NULL, 0, &out) == DRV_OK);
    CHECK(nitems(out) == 3);
    json_decref(out);
    f = (drv_cmd_filter){.device = "nobody", .state = -1};
    CHECK(st->ops->command_list(st, "acme", &f, NULL, 0, &out) == DRV_OK && nitems(out) == 0);
    json_decref(out);

    out = NULL;
    f = (drv_cmd_filter){.state = DRV_CMD_STATE_COUNT};
    CHECK(st->ops->command_list(st, "acme", &f, NULL, 0, &out) == DRV_INVAL);
    f.state = -2;
    CHECK(st->ops->command_list(st, "acme", &f, NULL, 0, &out) == DRV_INVAL);
    CHECK(st->ops->command_list(st, "acme", NULL, "%%%", 0, &out) == DRV_INVAL);
    CHECK(st->ops->command_list(st, "acme", NULL, NULL, 1001, &out) == DRV_INVAL);
    CHECK(out == NULL);
    drv_twin_store_close(st);
}

static void test_pending_and_due(void)
{
    drv_twin_store *st = open_new("pending");
    char ids[6][40];
    for (int i = 0; i < 5; i++)
        CHECK(add_cmd(st, "acme", "d1", "n", NULL, NULL, T0 + i, ids[i]) == DRV_OK);
    CHECK(add_cmd(st, "acme", "d2", "n", NULL, NULL, T0 + 5, ids[5]) == DRV_OK);
    /* 0 delivered, 1 sent, 2 succeeded, 3 and 4 queued. */
    CHECK(move(st, "acme", ids[0], DRV_CMD_QUEUED, DRV_CMD_SENT, T0 + 10) == DRV_OK);
    CHECK(move(st, "acme", ids[0], DRV_CMD_SENT, DRV_CMD_DELIVERED, T0 + 11) == DRV_OK);
    CHECK(move(st, "acme", ids[1], DRV_CMD_QUEUED, DRV_CMD_SENT, T0 + 12) == DRV_OK);
    CHECK(move(st, "acme", ids[2], DRV_CMD_QUEUED, DRV_CMD_SUCCEEDED, T0 + 13) == DRV_OK);

    seen s = {0};
    CHECK(st->ops->command_pending(st, "acme", "d1", 100, on_cmd, &s) == DRV_OK);
    CHECK(s.n == 3 && strcmp(s.ids[0], ids[1]) == 0 && strcmp(s.ids[1], ids[3]) == 0 &&
          strcmp(s.ids[2], ids[4]) == 0 && s.seq[0] < s.seq[1] && s.seq[1] < s.seq[2]);
    s = (seen){0};
    CHECK(st->ops->command_pending(st, "acme", "d1", 2, on_cmd, &s) == DRV_OK && s.n == 2);
    s = (seen){.stop_after = 1};
    CHECK(st->ops->command_pending(st, "acme", "d1", 100, on_cmd, &s) == DRV_OK && s.n == 1);
    s = (seen){0};
    CHECK(st->ops->command_pending(st, "acme", "d9", 100, on_cmd, &s) == DRV_OK && s.n == 0);
    CHECK(st->ops->command_pending(st, "acme", "d1", 100, NULL, &s) == DRV_INVAL);
    /* The count of the same (queued or sent), per device and tenant. */
    int64_t waiting = -1;
    CHECK(st->ops->command_waiting(st, "acme", "d1", &waiting) == DRV_OK && waiting == 3);
    CHECK(st->ops->command_waiting(st, "acme", "d2", &waiting) == DRV_OK && waiting == 1);
    CHECK(st->ops->command_waiting(st, "acme", "d9", &waiting) == DRV_OK && waiting == 0);
    CHECK(st->ops->command_waiting(st, "other", "d1", &waiting) == DRV_OK && waiting == 0);

    /* The callback may write to the store. */
    s = (seen){.st = st, .update_inside = true};
    CHECK(st->ops->command_pending(st, "acme", "d1", 100, on_cmd, &s) == DRV_OK && s.n == 3);
    CHECK(s.inner == DRV_OK);
    drv_command c;
    CHECK(st->ops->command_get(st, "acme", ids[4], &c) == DRV_OK && c.state == DRV_CMD_SENT &&
          c.attempts == 1);
    drv_command_clear(&c);

    /* Due: next_ms is T0 + i + 60000 for the non-terminal ones (2 is 0). */
    int64_t next = -1;
    CHECK(st->ops->due_next(st, &next) == DRV_OK && next == T0 + 60000);
    s = (seen){0};
    CHECK(st->ops->due_commands(st, T0 + 60003, 100, on_cmd, &s) == DRV_OK);
    CHECK(s.n == 3 && strcmp(s.ids[0], ids[0]) == 0 && strcmp(s.ids[1], ids[1]) == 0 &&
          strcmp(s.ids[2], ids[3]) == 0);
    s = (seen){0};
    CHECK(st->ops->due_commands(st, T0 + 70000, 2, on_cmd, &s) == DRV_OK && s.n == 2);
    s = (seen){0};
    CHECK(st->ops->due_commands(st, T0, 100, on_cmd, &s) == DRV_OK && s.n == 0);
    /* Reordered by next_ms, not seq. */
    CHECK(st->ops->command_get(st, "acme", ids[5], &c) == DRV_OK);
    c.next_ms = T0 + 5;
    CHECK(st->ops->command_update(st, &c, DRV_CMD_QUEUED, NULL) == DRV_OK);
    drv_command_clear(&c);
    CHECK(st->ops->due_next(st, &next) == DRV_OK && next == T0 + 5);
    s = (seen){0};
    CHECK(st->ops->due_commands(st, T0 + 60000, 100, on_cmd, &s) == DRV_OK);
    CHECK(s.n == 2 && strcmp(s.ids[0], ids[5]) == 0 && strcmp(s.ids[1], ids[0]) == 0);
    drv_twin_store_close(st);

    st = open_new("due_empty");
    CHECK(st->ops->due_next(st, &next) == DRV_OK && next == 0);
    drv_twin_store_close(st);
}

static void test_batches(void)
{
    drv_twin_store *st = open_new("batches");
    char bid[40], ids[5][40];
    json_t *doc = J("{\"group\":\"g-1\",\"name\":\"reboot\",\"params\":{\"delay\":1}}");
    CHECK(st->ops->batch_add(st, "acme", doc, bid) == DRV_OK && is_id(bid, "cb_"));
    json_decref(doc);
    for (int i = 0; i < 5; i++)
        CHECK(add_cmd(st, "acme", i < 4 ? "d1" : "d2", "reboot", NULL, bid, T0 + i, ids[i]) ==
              DRV_OK);
    CHECK(add_cmd(st, "acme", "d1", "reboot", NULL, NULL, T0, NULL) == DRV_OK); /* no batch */
    CHECK(move(st, "acme", ids[0], DRV_CMD_QUEUED, DRV_CMD_SENT, T0 + 10) == DRV_OK);
    CHECK(move(st, "acme", ids[1], DRV_CMD_QUEUED, DRV_CMD_SUCCEEDED, T0 + 10) == DRV_OK);
    CHECK(move(st, "acme", ids[2], DRV_CMD_QUEUED, DRV_CMD_FAILED, T0 + 10) == DRV_OK);

    json_t *out = NULL;
    CHECK(st->ops->batch_get(st, "acme", bid, &out) == DRV_OK);
    CHECK(strcmp(str(out, "id"), bid) == 0 && strcmp(str(out, "group"), "g-1") == 0 &&
          strcmp(str(out, "name"), "reboot") == 0);
    CHECK(json_is(json_incref(json_object_get(out, "params")), "{\"delay\":1}"));
    CHECK(strlen(str(out, "created_at")) == 24);
    CHECK(num(out, "total") == 5 && num(out, "pending") == 3);
    CHECK(json_is(json_incref(json_object_get(out, "counts")),
                  "{\"queued\":2,\"sent\":1,\"delivered\":0,\"succeeded\":1,\"failed\":1,"
                  "\"timed_out\":0,\"expired\":0,\"cancelled\":0}"));
    json_decref(out);

    /* A batch without commands; params absent; bad docs. */
    doc = J("{\"group\":\"g-2\",\"name\":\"ping\"}");
    CHECK(st->ops->batch_add(st, "acme", doc, bid) == DRV_OK);
    json_decref(doc);
    CHECK(st->ops->batch_get(st, "acme", bid, &out) == DRV_OK);
    CHECK(num(out, "total") == 0 && num(out, "pending") == 0 &&
          num(json_object_get(out, "counts"), "queued") == 0 &&
          json_is(json_incref(json_object_get(out, "params")), "{}"));
    json_decref(out);
    static const char *const bad[] = {"{\"name\":\"x\"}", "{\"group\":\"g\"}",
                                      "{\"group\":1,\"name\":\"x\"}",
                                      "{\"group\":\"\",\"name\":\"x\"}", "[]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        doc = J(bad[i]);
        CHECK_CASE(st->ops->batch_add(st, "acme", doc, bid) == DRV_INVAL, bad[i]);
        json_decref(doc);
    }
    CHECK(st->ops->batch_add(st, "acme", NULL, bid) == DRV_INVAL);
    CHECK(st->ops->batch_get(st, "acme", "cb_none", &out) == DRV_NOTFOUND);
    drv_twin_store_close(st);
}

static void test_purge(void)
{
    drv_twin_store *st = open_new("purge");
    char keep[40], gone[40];
    CHECK(put(st, "acme", "d1", "", "{}", 1, T0, NULL) == DRV_OK);
    CHECK(put(st, "acme", "d1", "n", "{}", 1, T0, NULL) == DRV_OK);
    CHECK(put(st, "acme", "d2", "", "{}", 1, T0, NULL) == DRV_OK);
    CHECK(add_cmd(st, "acme", "d1", "x", "k", NULL, T0, gone) == DRV_OK);
    CHECK(add_cmd(st, "acme", "d2", "x", "k", NULL, T0, keep) == DRV_OK);
    CHECK(st->ops->purge_device(st, "acme", "d1") == DRV_OK);

    drv_shadow_row r;
    drv_command c;
    int64_t n = -1;
    json_t *out = NULL;
    CHECK(st->ops->shadow_get(st, "acme", "d1", "", &r) == DRV_NOTFOUND);
    CHECK(st->ops->shadow_count(st, "acme", "d1", &n) == DRV_OK && n == 0);
    CHECK(st->ops->shadow_history(st, "acme", "d1", "", 0, 0, NULL, 0, &out) == DRV_OK &&
          nitems(out) == 0);
    json_decref(out);
    CHECK(st->ops->command_get(st, "acme", gone, &c) == DRV_NOTFOUND);
    CHECK(pragma_int(st, "SELECT COUNT(*) FROM command_transitions") == 1);
    /* The other device keeps everything. */
    CHECK(st->ops->shadow_get(st, "acme", "d2", "", &r) == DRV_OK);
    drv_shadow_row_clear(&r);
    CHECK(st->ops->command_get(st, "acme", keep, &c) == DRV_OK);
    drv_command_clear(&c);
    /* A purged device starts again at version 1 and may reuse its keys. */
    CHECK(put(st, "acme", "d1", "", "{}", 1, T0, NULL) == DRV_OK);
    CHECK(add_cmd(st, "acme", "d1", "x", "k", NULL, T0, NULL) == DRV_OK);
    CHECK(st->ops->purge_device(st, "acme", "nobody") == DRV_OK);
    CHECK(st->ops->purge_device(st, "acme", NULL) == DRV_INVAL);
    drv_twin_store_close(st);
}

static void test_reopen(void)
{
    const char *dir = new_dir("reopen");
    drv_twin_store *st = open_dir(dir);
    char id[40];
    int64_t seq = 0;
    CHECK(put(st, "acme", "d1", "", "{\"reported\":{\"t\":21}}", 1, T0, NULL) == DRV_OK);
    drv_command c = mk_cmd("acme", "d1", "x", "{}", T0);
    CHECK(st->ops->command_add(st, &c) == DRV_OK);
    snprintf(id, sizeof(id), "%s", c.id);
    seq = c.seq;
    drv_command_clear(&c);
    drv_twin_store_close(st);

    st = open_dir(dir);
    drv_shadow_row r;
    CHECK(st->ops->shadow_get(st, "acme", "d1", "", &r) == DRV_OK && r.version == 1);
    CHECK(json_is(json_incref(r.stored), "{\"reported\":{\"t\":21}}"));
    drv_shadow_row_clear(&r);
    CHECK(st->ops->command_get(st, "acme", id, &c) == DRV_OK && c.seq == seq);
    drv_command_clear(&c);
    /* seq keeps growing across handles, even after the newest is purged. */
    CHECK(st->ops->purge_device(st, "acme", "d1") == DRV_OK);
    c = mk_cmd("acme", "d1", "x", "{}", T0);
    CHECK(st->ops->command_add(st, &c) == DRV_OK && c.seq > seq);
    drv_command_clear(&c);
    drv_twin_store_close(st);
}

static void test_transactions(void)
{
    const char *dir = new_dir("tx");
    drv_twin_store *st = open_dir(dir);
    drv_shadow_row r;
    drv_command c;
    char id[40];

    CHECK(st->ops->commit(st) == DRV_INVAL); /* nothing open */
    st->ops->rollback(st);                   /* a no-op */
    CHECK(st->ops->begin(st) == DRV_OK);
    CHECK(st->ops->begin(st) == DRV_INVAL); /* no nesting */
    for (int i = 0; i < 5; i++) {
        char dev[8];
        snprintf(dev, sizeof(dev), "d%d", i);
        CHECK(put(st, "acme", dev, "", "{}", 1, T0, NULL) == DRV_OK);
    }
    CHECK(add_cmd(st, "acme", "d0", "x", NULL, NULL, T0, id) == DRV_OK);
    /* A failed op inside the batch undoes only itself. */
    CHECK(put(st, "acme", "d0", "", "{}", 5, T0, NULL) == DRV_CONFLICT);
    CHECK(move(st, "acme", id, DRV_CMD_SENT, DRV_CMD_DELIVERED, T0) == DRV_CONFLICT);
    /* Reads inside the transaction see its writes. */
    CHECK(st->ops->shadow_get(st, "acme", "d4", "", &r) == DRV_OK);
    drv_shadow_row_clear(&r);
    /* Another handle sees nothing before the commit (and cannot write:
     * its write would wait for the lock, so it only reads here). */
    drv_twin_store *other = open_dir(dir);
    CHECK(other->ops->shadow_get(other, "acme", "d0", "", &r) == DRV_NOTFOUND);
    CHECK(st->ops->commit(st) == DRV_OK);
    CHECK(other->ops->shadow_get(other, "acme", "d0", "", &r) == DRV_OK && r.version == 1);
    drv_shadow_row_clear(&r);
    CHECK(other->ops->command_get(other, "acme", id, &c) == DRV_OK);
    drv_command_clear(&c);
    json_t *out = NULL;
    CHECK(other->ops->shadow_history(other, "acme", "d3", "", 0, 0, NULL, 0, &out) == DRV_OK &&
          nitems(out) == 1);
    json_decref(out);

    /* Rollback discards the batch, transitions and all. */
    CHECK(st->ops->begin(st) == DRV_OK);
    CHECK(put(st, "acme", "d0", "", "{\"x\":1}", 2, T0 + 1, NULL) == DRV_OK);
    CHECK(add_cmd(st, "acme", "d0", "y", NULL, NULL, T0, id) == DRV_OK);
    st->ops->rollback(st);
    CHECK(st->ops->shadow_get(st, "acme", "d0", "", &r) == DRV_OK && r.version == 1);
    drv_shadow_row_clear(&r);
    CHECK(st->ops->command_get(st, "acme", id, &c) == DRV_NOTFOUND);
    CHECK(pragma_int(st, "SELECT COUNT(*) FROM command_transitions") == 1);
    CHECK(pragma_int(st, "SELECT COUNT(*) FROM shadow_history") == 5);

    /* Two handles racing on one shadow: the second write conflicts. */
    CHECK(put(st, "acme", "d0", "", "{}", 2, T0 + 2, NULL) == DRV_OK);
    CHECK(put(other, "acme", "d0", "", "{}", 2, T0 + 2, NULL) == DRV_CONFLICT);
    CHECK(put(other, "acme", "d0", "", "{}", 3, T0 + 3, NULL) == DRV_OK);
    drv_twin_store_close(other);
    /* Closing with a transaction open rolls it back. */
    CHECK(st->ops->begin(st) == DRV_OK);
    CHECK(put(st, "acme", "d9", "", "{}", 1, T0, NULL) == DRV_OK);
    drv_twin_store_close(st);
    st = open_dir(dir);
    CHECK(st->ops->shadow_get(st, "acme", "d9", "", &r) == DRV_NOTFOUND);
    drv_twin_store_close(st);
}

/* Tenant B cannot see or touch anything of tenant A. */
static void test_isolation(void)
{
    drv_twin_store *st = open_new("isolation");
    char id[40], bid[40];
    json_t *out = NULL;
    drv_shadow_row r;
    drv_command c;
    int64_t n = -1;
    CHECK(put(st, "acme", "d1", "", "{}", 1, T0, NULL) == DRV_OK);
    json_t *doc = J("{\"group\":\"g\",\"name\":\"x\"}");
    CHECK(st->ops->batch_add(st, "acme", doc, bid) == DRV_OK);
    json_decref(doc);
    CHECK(add_cmd(st, "acme", "d1", "x", "k", bid, T0, id) == DRV_OK);

    CHECK(st->ops->shadow_get(st, "globex", "d1", "", &r) == DRV_NOTFOUND);
    CHECK(st->ops->shadow_count(st, "globex", "d1", &n) == DRV_OK && n == 0);
    CHECK(st->ops->shadow_list(st, "globex", "d1", &out) == DRV_OK && nitems(out) == 0);
    json_decref(out);
    CHECK(st->ops->shadow_history(st, "globex", "d1", "", 0, 0, NULL, 0, &out) == DRV_OK &&
          nitems(out) == 0);
    json_decref(out);
    /* B's first write to the same device name is its own version 1. */
    CHECK(put(st, "globex", "d1", "", "{\"b\":1}", 2, T0, NULL) == DRV_CONFLICT);
    CHECK(put(st, "globex", "d1", "", "{\"b\":1}", 1, T0, NULL) == DRV_OK);

    CHECK(st->ops->command_get(st, "globex", id, &c) == DRV_NOTFOUND);
    CHECK(st->ops->command_json(st, "globex", id, &out) == DRV_NOTFOUND);
    CHECK(st->ops->command_list(st, "globex", NULL, NULL, 0, &out) == DRV_OK && nitems(out) == 0);
    json_decref(out);
    drv_cmd_filter f = {.batch = bid, .state = -1};
    CHECK(st->ops->command_list(st, "globex", &f, NULL, 0, &out) == DRV_OK && nitems(out) == 0);
    json_decref(out);
    seen s = {0};
    CHECK(st->ops->command_pending(st, "globex", "d1", 100, on_cmd, &s) == DRV_OK && s.n == 0);
    CHECK(st->ops->batch_get(st, "globex", bid, &out) == DRV_NOTFOUND);
    /* An update naming A's command as B's finds nothing. */
    CHECK(st->ops->command_get(st, "acme", id, &c) == DRV_OK);
    snprintf(c.tenant, sizeof(c.tenant), "globex");
    c.state = DRV_CMD_CANCELLED;
    CHECK(st->ops->command_update(st, &c, DRV_CMD_QUEUED, NULL) == DRV_NOTFOUND);
    drv_command_clear(&c);
    /* The same idempotency key under B is B's own. */
    CHECK(add_cmd(st, "globex", "d1", "x", "k", NULL, T0, NULL) == DRV_OK);
    CHECK(st->ops->purge_device(st, "globex", "d1") == DRV_OK);

    /* A still has everything, unchanged. */
    CHECK(st->ops->shadow_get(st, "acme", "d1", "", &r) == DRV_OK && r.version == 1);
    drv_shadow_row_clear(&r);
    CHECK(st->ops->command_get(st, "acme", id, &c) == DRV_OK && c.state == DRV_CMD_QUEUED);
    drv_command_clear(&c);
    CHECK(st->ops->batch_get(st, "acme", bid, &out) == DRV_OK && num(out, "total") == 1);
    json_decref(out);
    s = (seen){0};
    CHECK(st->ops->command_pending(st, "acme", "d1", 100, on_cmd, &s) == DRV_OK && s.n == 1);
    /* The timer's unscoped view still carries each command's tenant. */
    s = (seen){0};
    CHECK(st->ops->due_commands(st, INT64_MAX, 100, on_cmd, &s) == DRV_OK && s.n == 1 &&
          strcmp(s.ids[0], id) == 0 && strcmp(s.tenants[0], "acme") == 0);

    /* No tenant is no access. */
    CHECK(st->ops->command_get(st, NULL, id, &c) == DRV_INVAL);
    CHECK(st->ops->command_json(st, "", id, &out) == DRV_INVAL);
    CHECK(st->ops->command_list(st, NULL, NULL, NULL, 0, &out) == DRV_INVAL);
    CHECK(st->ops->batch_get(st, NULL, bid, &out) == DRV_INVAL);
    CHECK(st->ops->shadow_list(st, NULL, "d1", &out) == DRV_INVAL);
    drv_twin_store_close(st);
}

/* Every allocation failure is an error, never a crash or a leak (ASan). */
static void test_alloc_failure(void)
{
    drv_twin_store *st = open_new("nomem");
    char id[40];
    CHECK(add_cmd(st, "acme", "d1", "x", NULL, NULL, T0, id) == DRV_OK);
    CHECK(move(st, "acme", id, DRV_CMD_QUEUED, DRV_CMD_SENT, T0 + 1) == DRV_OK);
    int nomem = 0;
    for (uint64_t k = 1; k <= 12; k++) {
        json_t *out = NULL;
        drv_command c = mk_cmd("acme", "d1", "y", "{\"a\":1}", T0);
        drv_mem_fail_at(k);
        drv_err e1 = st->ops->command_add(st, &c);
        drv_err e2 = st->ops->command_list(st, "acme", NULL, NULL, 1, &out);
        json_decref(out);
        seen s = {0};
        drv_err e3 = st->ops->command_pending(st, "acme", "d1", 100, on_cmd, &s);
        drv_mem_fail_at(0);
        CHECK(e1 == DRV_OK || e1 == DRV_NOMEM);
        CHECK(e2 == DRV_OK || e2 == DRV_NOMEM);
        CHECK(e3 == DRV_OK || e3 == DRV_NOMEM);
        nomem += (e1 == DRV_NOMEM) + (e2 == DRV_NOMEM) + (e3 == DRV_NOMEM);
        drv_command_clear(&c);
    }
    CHECK(nomem >= 3);
    drv_twin_store_close(st);
    drv_twin_store *fail = (drv_twin_store *)1;
    drv_mem_fail_at(1);
    CHECK(drv_twin_store_open_sqlite(new_dir("nomem2"), &fail) == DRV_NOMEM && fail == NULL);
    drv_mem_fail_at(0);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    drv_log_set_level(DRV_LOG_WARN);
    test_state_names();
    test_sql_table();
    test_cursor();
    test_open();
    test_shadows();
    test_history();
    test_command_add();
    test_command_update();
    test_command_json();
    test_command_list();
    test_pending_and_due();
    test_batches();
    test_purge();
    test_reopen();
    test_transactions();
    test_isolation();
    test_alloc_failure();
    cleanup();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
