/*
 * twin_sqlite.c — the SQLite backend of the twin store (twin_store.h):
 * opening `<dir>/twin.db`, schema migrations, the statement cache with its
 * one scoped entry point, error mapping, transactions, and the helpers the
 * op files (twin_sqlite_shadow.c, twin_sqlite_cmd.c) share.  The SQL texts
 * are in twin_sqlite_sql.c.
 *
 * The database runs in WAL mode with synchronous=FULL (a committed write is
 * on disk before the call returns) and a 5 s busy timeout.  The schema's
 * version is PRAGMA user_version; tw_migrations[v] takes it from v to v + 1,
 * each in its own transaction, and a database newer than the binary is
 * refused.  The twin store is its own file, apart from the registry, so the
 * shadow and command write load never queues behind registry writes.
 *
 * Every write op is atomic: its own BEGIN IMMEDIATE..COMMIT, or a savepoint
 * inside the transaction begin() opened, so an op that fails in a batch
 * leaves the batch as it was and the caller may go on or roll back.
 */
#include "twin/twin_sqlite_int.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "core/alloc.h"
#include "core/b64.h"
#include "core/log.h"
#include "core/timefmt.h"

#define BUSY_TIMEOUT_MS 5000
#define PAGE_DEFAULT 100
#define PAGE_MAX 1000

/* -- errors ------------------------------------------------------------------ */

static drv_err map_rc(int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return DRV_EXISTS;
    default:
        break;
    }
    switch (rc & 0xff) {
    case SQLITE_OK:
        return DRV_OK;
    case SQLITE_CONSTRAINT:
        return DRV_INVAL;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return DRV_AGAIN;
    case SQLITE_NOMEM:
        return DRV_NOMEM;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return DRV_CORRUPT;
    case SQLITE_TOOBIG:
        return DRV_TOOBIG;
    default:
        return DRV_IO;
    }
}

drv_err tw_fail(tw_store *s, int rc, const char *what)
{
    drv_err e = map_rc(rc);
    drv_log_level level = DRV_LOG_ERROR;
    if (e == DRV_EXISTS)
        level = DRV_LOG_DEBUG;
    else if (e == DRV_AGAIN)
        level = DRV_LOG_WARN;
    drv_log(level, "twin store: sqlite error", "op", what, "error", sqlite3_errmsg(s->db), "path",
            s->path, (const char *)0);
    return e;
}

/* -- statements ---------------------------------------------------------------- */

bool tw_tenant_bound(const char *sql)
{
    return strstr(sql, "tenant = ?1") != NULL ||
           (strstr(sql, "(tenant,") != NULL && strstr(sql, "VALUES (?1,") != NULL);
}

static drv_err prepare(tw_store *s, tw_query q, sqlite3_stmt **out)
{
    sqlite3_stmt *stmt = s->stmt[q];
    if (stmt) {
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
    } else {
        int rc = sqlite3_prepare_v3(s->db, tw_queries[q].sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt,
                                    NULL);
        if (rc != SQLITE_OK)
            return tw_fail(s, rc, "prepare");
        s->stmt[q] = stmt;
    }
    *out = stmt;
    return DRV_OK;
}

drv_err tw_scoped(tw_store *s, const char *tenant, tw_query q, sqlite3_stmt **out)
{
    assert(q < TQ_COUNT && tw_queries[q].scoped && tw_tenant_bound(tw_queries[q].sql));
    if (!tw_valid_str(tenant, 1, TW_TENANT_MAX))
        return DRV_INVAL;
    drv_err e = prepare(s, q, out);
    if (e != DRV_OK)
        return e;
    int rc = sqlite3_bind_text(*out, 1, tenant, -1, SQLITE_TRANSIENT);
    if (rc != SQLITE_OK)
        return tw_fail(s, rc, "bind tenant");
    return DRV_OK;
}

drv_err tw_unscoped(tw_store *s, tw_query q, sqlite3_stmt **out)
{
    assert(q < TQ_COUNT && !tw_queries[q].scoped);
    return prepare(s, q, out);
}

drv_err tw_step(tw_store *s, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return DRV_OK;
    if (rc == SQLITE_DONE)
        return DRV_NOTFOUND;
    return tw_fail(s, rc, what);
}

drv_err tw_run(tw_store *s, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    drv_err e = rc == SQLITE_DONE ? DRV_OK : tw_fail(s, rc, what);
    sqlite3_reset(stmt);
    return e;
}

void tw_bind_opt(sqlite3_stmt *stmt, int idx, const char *p)
{
    /* A failed bind (out of memory) leaves the parameter NULL, which the
     * NOT NULL constraints or the query's result then report. */
    if (p && *p)
        sqlite3_bind_text(stmt, idx, p, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(stmt, idx);
}

const char *tw_col_text(sqlite3_stmt *stmt, int col)
{
    const unsigned char *t = sqlite3_column_text(stmt, col);
    return t ? (const char *)t : "";
}

drv_err tw_col_dup(sqlite3_stmt *stmt, int col, char **out)
{
    *out = NULL;
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        return DRV_OK;
    const char *t = (const char *)sqlite3_column_text(stmt, col);
    if (!t)
        return DRV_NOMEM;
    *out = drv_strndup(t, (size_t)sqlite3_column_bytes(stmt, col));
    return *out ? DRV_OK : DRV_NOMEM;
}

drv_err tw_col_copy(sqlite3_stmt *stmt, int col, char *dst, size_t cap)
{
    const char *t = tw_col_text(stmt, col);
    size_t n = strlen(t);
    if (n >= cap) {
        dst[0] = '\0';
        return DRV_CORRUPT;
    }
    memcpy(dst, t, n + 1);
    return DRV_OK;
}

bool tw_valid_str(const char *p, size_t min, size_t max)
{
    if (!p)
        return false;
    size_t n = strnlen(p, max + 1);
    return n >= min && n <= max;
}

/* -- transactions ---------------------------------------------------------------- */

static drv_err run_q(tw_store *s, tw_query q, const char *what)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = tw_unscoped(s, q, &stmt);
    return e == DRV_OK ? tw_run(s, stmt, what) : e;
}

static void rollback_tx(tw_store *s)
{
    if (!sqlite3_get_autocommit(s->db)) /* else SQLite already rolled it back */
        run_q(s, TQ_ROLLBACK, "rollback");
}

drv_err tw_op_begin(tw_store *s, bool *own)
{
    *own = !s->in_tx;
    if (s->in_tx && sqlite3_get_autocommit(s->db))
        return DRV_IO; /* SQLite rolled the caller's transaction back (disk full, ...) */
    return run_q(s, *own ? TQ_BEGIN : TQ_SAVEPOINT, *own ? "begin" : "savepoint");
}

drv_err tw_op_end(tw_store *s, bool own, drv_err e)
{
    if (own) {
        if (e == DRV_OK)
            e = run_q(s, TQ_COMMIT, "commit");
        if (e != DRV_OK)
            rollback_tx(s);
        return e;
    }
    if (sqlite3_get_autocommit(s->db))
        return e == DRV_OK ? DRV_IO : e; /* the whole transaction is gone */
    if (e != DRV_OK)
        run_q(s, TQ_ROLLBACK_TO, "rollback to savepoint");
    drv_err r = run_q(s, TQ_RELEASE, "release savepoint");
    return e != DRV_OK ? e : r;
}

static drv_err tw_begin(drv_twin_store *st)
{
    tw_store *s = tw_of(st);
    if (s->in_tx)
        return DRV_INVAL; /* no nesting: one batch at a time */
    drv_err e = run_q(s, TQ_BEGIN, "begin");
    s->in_tx = e == DRV_OK;
    return e;
}

static drv_err tw_commit(drv_twin_store *st)
{
    tw_store *s = tw_of(st);
    if (!s->in_tx)
        return DRV_INVAL;
    s->in_tx = false;
    if (sqlite3_get_autocommit(s->db))
        return DRV_IO; /* already rolled back by SQLite: nothing of it is kept */
    drv_err e = run_q(s, TQ_COMMIT, "commit");
    if (e != DRV_OK)
        rollback_tx(s);
    return e;
}

static void tw_rollback(drv_twin_store *st)
{
    tw_store *s = tw_of(st);
    if (!s->in_tx)
        return;
    s->in_tx = false;
    rollback_tx(s);
}

/* -- ids, cursors, JSON ---------------------------------------------------------- */

drv_err tw_random_id(const char *prefix, size_t n, char *out, size_t cap)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint8_t rnd[64];
    size_t plen = strlen(prefix);
    assert(n <= sizeof(rnd) && plen + n < cap);
    for (size_t got = 0; got < n;) {
        ssize_t r = getrandom(rnd + got, n - got, 0);
        if (r <= 0) {
            drv_error("twin store: getrandom failed");
            return DRV_IO;
        }
        got += (size_t)r;
    }
    memcpy(out, prefix, plen);
    for (size_t i = 0; i < n; i++)
        out[plen + i] = alphabet[rnd[i] & 31]; /* 256 is a multiple of 32: no bias */
    out[plen + n] = '\0';
    return DRV_OK;
}

drv_err tw_page_limit(uint32_t limit, uint32_t *out)
{
    if (limit > PAGE_MAX)
        return DRV_INVAL;
    *out = limit ? limit : PAGE_DEFAULT;
    return DRV_OK;
}

char *tw_cursor_encode(int64_t key)
{
    char text[24], *out = drv_malloc(32);
    int n = snprintf(text, sizeof(text), "%lld", (long long)key);
    if (out)
        drv_b64url_encode(text, (size_t)n, out, 32);
    return out;
}

drv_err tw_cursor_decode(const char *cursor, int64_t *key)
{
    char text[20];
    size_t n = 0;
    /* Strictly base64url of a positive decimal without leading zeros, so a
     * position has exactly one cursor. */
    if (!cursor ||
        !drv_b64url_decode(cursor, strlen(cursor), (uint8_t *)text, sizeof(text) - 1, &n) ||
        n == 0 || text[0] == '0')
        return DRV_INVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '9')
            return DRV_INVAL;
        v = v * 10 + (uint64_t)(text[i] - '0');
    }
    if (v > INT64_MAX)
        return DRV_INVAL;
    *key = (int64_t)v;
    return DRV_OK;
}

drv_err tw_list_answer(json_t *items, const char *next_cursor, json_t **out)
{
    json_t *o = json_object();
    if (!o) {
        json_decref(items);
        return DRV_NOMEM;
    }
    if (!tw_set(o, "items", items) ||
        !tw_set(o, "next_cursor", next_cursor ? json_string(next_cursor) : json_null())) {
        json_decref(o);
        return DRV_NOMEM;
    }
    *out = o;
    return DRV_OK;
}

drv_err tw_collect(tw_store *s, sqlite3_stmt *stmt, uint32_t limit, tw_row_fn fn, json_t **out)
{
    char *next = NULL;
    int64_t key = 0;
    json_t *items = json_array();
    drv_err e = items ? DRV_OK : DRV_NOMEM;
    for (uint32_t n = 0; e == DRV_OK; n++) {
        e = tw_step(s, stmt, "list");
        if (e != DRV_OK)
            break;
        if (n == limit) { /* the extra row: there is a next page, after key */
            next = tw_cursor_encode(key);
            e = next ? DRV_NOTFOUND : DRV_NOMEM;
            break;
        }
        json_t *item = NULL;
        e = fn(s, stmt, &item, &key);
        if (e == DRV_OK && json_array_append_new(items, item) != 0)
            e = DRV_NOMEM;
    }
    sqlite3_reset(stmt);
    if (e == DRV_NOTFOUND) {
        e = tw_list_answer(items, next, out);
        items = NULL;
    }
    json_decref(items);
    drv_free(next);
    return e;
}

bool tw_set(json_t *obj, const char *key, json_t *value)
{
    /* json_object_set_new releases value on failure and rejects NULL. */
    return json_object_set_new(obj, key, value) == 0;
}

drv_err tw_json_dump(const json_t *j, char **out)
{
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    size_t n = json_dumpb(j, NULL, 0, flags);
    if (n == 0)
        return DRV_INVAL;
    char *buf = drv_malloc(n + 1);
    if (!buf)
        return DRV_NOMEM;
    if (json_dumpb(j, buf, n, flags) != n) {
        drv_free(buf);
        return DRV_NOMEM;
    }
    buf[n] = '\0';
    *out = buf;
    return DRV_OK;
}

drv_err tw_json_parse(tw_store *s, const char *p, size_t n, json_t **out)
{
    *out = NULL;
    if (!p)
        return DRV_OK;
    json_error_t jerr;
    *out = json_loadb(p, n, JSON_DECODE_ANY, &jerr);
    if (!*out) {
        drv_error("twin store: stored JSON does not parse", "error", jerr.text, "path", s->path);
        return DRV_CORRUPT;
    }
    return DRV_OK;
}

drv_err tw_json_col(tw_store *s, sqlite3_stmt *stmt, int col, json_t **out)
{
    *out = NULL;
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        return DRV_OK;
    const char *t = (const char *)sqlite3_column_text(stmt, col);
    if (!t)
        return DRV_NOMEM;
    return tw_json_parse(s, t, (size_t)sqlite3_column_bytes(stmt, col), out);
}

bool tw_json_valid(const char *p)
{
    if (!p)
        return false;
    json_t *j = json_loads(p, JSON_DECODE_ANY, NULL);
    json_decref(j);
    return j != NULL;
}

json_t *tw_time_json(int64_t ms)
{
    char buf[40];
    if (!ms)
        return json_null();
    size_t n = drv_format_time_ms(ms, buf, sizeof(buf));
    return json_stringn(buf, n);
}

/* -- open, migrate, close ------------------------------------------------------------ */

static void tw_close(drv_twin_store *st)
{
    tw_store *s = tw_of(st);
    if (s->in_tx)
        tw_rollback(st);
    for (int i = 0; i < TQ_COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    if (sqlite3_close(s->db) != SQLITE_OK)
        drv_error("twin store: close failed", "error", sqlite3_errmsg(s->db), "path", s->path);
    drv_free(s->path);
    drv_free(s);
}

/* Run a pragma and, when want is not NULL, check its one-row answer. */
static drv_err pragma(tw_store *s, const char *sql, const char *want)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return tw_fail(s, rc, sql);
    rc = sqlite3_step(stmt);
    drv_err e = DRV_OK;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        e = tw_fail(s, rc, sql);
    } else if (want && (rc != SQLITE_ROW || sqlite3_stricmp(tw_col_text(stmt, 0), want) != 0)) {
        drv_error("twin store: pragma not in effect", "pragma", sql, "got",
                  rc == SQLITE_ROW ? tw_col_text(stmt, 0) : "", "path", s->path);
        e = DRV_CONFIG;
    }
    sqlite3_finalize(stmt);
    return e;
}

static drv_err user_version(tw_store *s, int64_t *v)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = tw_unscoped(s, TQ_USER_VERSION, &stmt);
    if (e != DRV_OK)
        return e;
    e = tw_step(s, stmt, "schema version");
    if (e == DRV_OK)
        *v = sqlite3_column_int64(stmt, 0);
    sqlite3_reset(stmt);
    return e == DRV_NOTFOUND ? DRV_IO : e;
}

/* Apply migration v (schema v -> v + 1) and record it, inside the open
 * transaction. */
static drv_err migrate_one(tw_store *s, int64_t v)
{
    char sql[64], ver[24];
    char *msg = NULL;
    snprintf(ver, sizeof(ver), "%lld", (long long)v + 1);
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)v + 1);
    if (sqlite3_exec(s->db, tw_migrations[v], NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        drv_error("twin store: migration failed", "version", ver, "error", msg ? msg : "", "path",
                  s->path);
        sqlite3_free(msg);
        return DRV_IO;
    }
    drv_info("twin store: schema migrated", "version", ver, "path", s->path);
    return DRV_OK;
}

/* Bring the schema to the newest version, one transaction per migration.
 * The version is read inside each transaction, so two processes opening one
 * file at once cannot apply a migration twice. */
static drv_err migrate(tw_store *s)
{
    int64_t now = 0;
    /* Up to date (the usual case): no write lock needed, so a second handle
     * opens while the first is inside a transaction. */
    drv_err e0 = user_version(s, &now);
    if (e0 != DRV_OK || now == tw_migration_count)
        return e0;
    for (;;) {
        int64_t v = 0;
        drv_err e = run_q(s, TQ_BEGIN, "begin");
        if (e != DRV_OK)
            return e;
        e = user_version(s, &v);
        if (e == DRV_OK && v > tw_migration_count) {
            char db[24], bin[24];
            snprintf(db, sizeof(db), "%lld", (long long)v);
            snprintf(bin, sizeof(bin), "%d", tw_migration_count);
            drv_error("twin store: database schema is newer than this binary; upgrade drover",
                      "db_version", db, "binary_version", bin, "path", s->path);
            e = DRV_CONFIG;
        }
        if (e != DRV_OK || v == tw_migration_count) {
            rollback_tx(s);
            return e;
        }
        e = migrate_one(s, v);
        if (e == DRV_OK)
            e = run_q(s, TQ_COMMIT, "commit");
        if (e != DRV_OK) {
            rollback_tx(s);
            return e;
        }
    }
}

static const drv_twin_store_ops sqlite_ops = {
    .name = "sqlite",
    .close = tw_close,
    .begin = tw_begin,
    .commit = tw_commit,
    .rollback = tw_rollback,
    .shadow_get = tw_shadow_get,
    .shadow_put = tw_shadow_put,
    .shadow_list = tw_shadow_list,
    .shadow_count = tw_shadow_count,
    .shadow_history = tw_shadow_history,
    .history_prune = tw_history_prune,
    .command_add = tw_command_add,
    .command_get = tw_command_get,
    .command_update = tw_command_update,
    .command_json = tw_command_json,
    .command_list = tw_command_list,
    .command_pending = tw_command_pending,
    .due_commands = tw_due_commands,
    .due_next = tw_due_next,
    .batch_add = tw_batch_add,
    .batch_get = tw_batch_get,
    .purge_device = tw_purge_device,
};

static drv_err configure(tw_store *s)
{
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    /* Refuse "double-quoted strings" as literals and writes to the schema
     * through SQL tricks. */
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DQS_DML, 0, NULL);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DQS_DDL, 0, NULL);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    drv_err e = pragma(s, "PRAGMA journal_mode = WAL", "wal");
    if (e == DRV_OK)
        e = pragma(s, "PRAGMA synchronous = FULL", NULL);
    if (e == DRV_OK)
        e = pragma(s, "PRAGMA synchronous", "2");
    return e;
}

drv_err drv_twin_store_open_sqlite(const char *dir, drv_twin_store **out)
{
    *out = NULL;
    if (!dir || !*dir)
        return DRV_INVAL;
    tw_store *s = drv_calloc(1, sizeof(*s));
    if (!s)
        return DRV_NOMEM;
    s->base.ops = &sqlite_ops;
    size_t n = strlen(dir) + sizeof("/twin.db");
    s->path = drv_malloc(n);
    if (!s->path) {
        drv_free(s);
        return DRV_NOMEM;
    }
    snprintf(s->path, n, "%s/twin.db", dir);
    /* NOMUTEX: a handle serves one thread at a time (twin_store.h). */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(s->path, &s->db, flags, NULL);
    drv_err e;
    if (rc != SQLITE_OK) {
        drv_error("twin store: cannot open database", "error", sqlite3_errstr(rc), "path", s->path);
        e = map_rc(rc);
        goto out_close;
    }
    e = configure(s);
    if (e == DRV_OK)
        e = migrate(s);
    if (e != DRV_OK)
        goto out_close;
    *out = &s->base;
    return DRV_OK;

out_close:
    tw_close(&s->base);
    return e;
}
