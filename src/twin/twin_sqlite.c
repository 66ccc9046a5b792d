/*
 * twin_sqlite.c — the SQLite backend of the twin store (twin_store.h):
 * opening `<dir>/twin.db`, schema migrations, the one scoped entry point to
 * the statement cache, transactions, and the helpers the op files
 * (twin_sqlite_shadow.c, twin_sqlite_cmd.c) share.  The SQL texts are in
 * twin_sqlite_sql.c; the generic SQLite plumbing is src/sqlite/sq.h.
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

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"

/* tw_store's db aliases sq.db. */
_Static_assert(offsetof(drv_sq, db) == 0, "drv_sq.db is its first field");

/* -- statements ---------------------------------------------------------------- */

drv_err tw_scoped(tw_store *s, const char *tenant, tw_query q, sqlite3_stmt **out)
{
    if (!tw_valid_str(tenant, 1, TW_TENANT_MAX))
        return DRV_INVAL;
    return drv_sq_scoped(&s->sq, tenant, (int)q, out);
}

void tw_bind_opt(sqlite3_stmt *stmt, int idx, const char *p)
{
    drv_sq_bind_text(stmt, idx, p && *p ? p : NULL);
}

drv_err tw_col_copy(sqlite3_stmt *stmt, int col, char *dst, size_t cap)
{
    return drv_sq_copy_str(dst, cap, drv_sq_col_text(stmt, col)) ? DRV_OK : DRV_CORRUPT;
}

bool tw_valid_str(const char *p, size_t min, size_t max)
{
    if (!p)
        return false;
    size_t n = strnlen(p, max + 1);
    return n >= min && n <= max;
}

/* -- transactions ---------------------------------------------------------------- */

drv_err tw_op_begin(tw_store *s, bool *own)
{
    *own = !s->in_tx;
    if (s->in_tx && sqlite3_get_autocommit(s->sq.db))
        return DRV_IO; /* SQLite rolled the caller's transaction back (disk full, ...) */
    return *own ? drv_sq_begin(&s->sq) : drv_sq_exec(&s->sq, TQ_SAVEPOINT, "savepoint");
}

drv_err tw_op_end(tw_store *s, bool own, drv_err e)
{
    if (own) {
        if (e == DRV_OK)
            e = drv_sq_commit(&s->sq);
        if (e != DRV_OK)
            drv_sq_rollback(&s->sq);
        return e;
    }
    if (sqlite3_get_autocommit(s->sq.db))
        return e == DRV_OK ? DRV_IO : e; /* the whole transaction is gone */
    if (e != DRV_OK)
        drv_sq_exec(&s->sq, TQ_ROLLBACK_TO, "rollback to savepoint");
    drv_err r = drv_sq_exec(&s->sq, TQ_RELEASE, "release savepoint");
    return e != DRV_OK ? e : r;
}

static drv_err tw_begin(drv_twin_store *st)
{
    tw_store *s = tw_of(st);
    if (s->in_tx)
        return DRV_INVAL; /* no nesting: one batch at a time */
    drv_err e = drv_sq_begin(&s->sq);
    s->in_tx = e == DRV_OK;
    return e;
}

static drv_err tw_commit(drv_twin_store *st)
{
    tw_store *s = tw_of(st);
    if (!s->in_tx)
        return DRV_INVAL;
    s->in_tx = false;
    if (sqlite3_get_autocommit(s->sq.db))
        return DRV_IO; /* already rolled back by SQLite: nothing of it is kept */
    drv_err e = drv_sq_commit(&s->sq);
    if (e != DRV_OK)
        drv_sq_rollback(&s->sq);
    return e;
}

static void tw_rollback(drv_twin_store *st)
{
    tw_store *s = tw_of(st);
    if (!s->in_tx)
        return;
    s->in_tx = false;
    drv_sq_rollback(&s->sq);
}

/* -- JSON ---------------------------------------------------------------------------- */

bool tw_json_valid(const char *p)
{
    if (!p)
        return false;
    json_t *j = json_loads(p, JSON_DECODE_ANY, NULL);
    json_decref(j);
    return j != NULL;
}

/* -- open, migrate, close ------------------------------------------------------------ */

static void tw_close(drv_twin_store *st)
{
    tw_store *s = tw_of(st);
    if (s->in_tx)
        tw_rollback(st);
    drv_sq_close(&s->sq);
    drv_free(s);
}

static drv_err user_version(drv_sq *c, int64_t *v)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(c, TQ_USER_VERSION, &stmt);
    return e == DRV_OK ? drv_sq_step_int(c, stmt, "schema version", v) : e;
}

/* PRAGMA user_version is the schema's version. */
static drv_err record_version(drv_sq *c, int64_t v)
{
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)v);
    return drv_sq_migrate_sql(c, sql, v);
}

/* Bring the schema to the newest version (drv_sq_migrate). */
static drv_err migrate(tw_store *s)
{
    const drv_sq_schema sc = {.steps = tw_migrations,
                              .count = tw_migration_count,
                              .version = user_version,
                              .record = record_version};
    int64_t now = 0;
    /* Up to date (the usual case): no write lock needed, so a second handle
     * opens while the first is inside a transaction. */
    drv_err e = user_version(&s->sq, &now);
    if (e != DRV_OK || now == tw_migration_count)
        return e;
    return drv_sq_migrate(&s->sq, &sc);
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
    .command_waiting = tw_command_waiting,
    .command_pending = tw_command_pending,
    .due_commands = tw_due_commands,
    .due_next = tw_due_next,
    .batch_add = tw_batch_add,
    .batch_get = tw_batch_get,
    .purge_device = tw_purge_device,
};

/* WAL with synchronous=FULL, checked. */
static const drv_sq_pragma pragmas[] = {
    {"PRAGMA journal_mode = WAL", "wal"},
    {"PRAGMA synchronous = FULL", NULL},
    {"PRAGMA synchronous", "2"},
};

drv_err drv_twin_store_open_sqlite(const char *dir, drv_twin_store **out)
{
    *out = NULL;
    if (!dir || !*dir)
        return DRV_INVAL;
    tw_store *s = drv_calloc(1, sizeof(*s));
    if (!s)
        return DRV_NOMEM;
    s->base.ops = &sqlite_ops;
    s->sq = (drv_sq){.who = "twin store",
                     .tenant_col = TW_TENANT_COL,
                     .defs = tw_queries,
                     .stmt = s->stmt,
                     .ndefs = TQ_COUNT};
    size_t n = strlen(dir) + sizeof("/twin.db");
    s->sq.path = drv_malloc(n);
    if (!s->sq.path) {
        drv_free(s);
        return DRV_NOMEM;
    }
    snprintf(s->sq.path, n, "%s/twin.db", dir);
    drv_err e = drv_sq_open(&s->sq, true, pragmas, sizeof(pragmas) / sizeof(pragmas[0]));
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
