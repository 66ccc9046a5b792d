/*
 * twin_sqlite_int.h — private to the SQLite twin store (twin_sqlite*.c).
 *
 * Every SQL text the store runs is one entry of tw_queries (twin_sqlite.c),
 * marked scoped or not.  A scoped statement is reached only through
 * tw_scoped(), which refuses a missing or malformed tenant and binds it as
 * ?1; every scoped text filters on "tenant = ?1" or inserts ?1 as the tenant
 * (asserted when it is prepared, and checked for every entry by
 * twin_store_test.c).  Only the command timer's queries (due_*) and history
 * pruning are unscoped.
 *
 * The statement cache, stepping, errors, cursors and JSON helpers are the
 * shared SQLite layer's (src/sqlite/sq.h, drv_sq_*); this header adds what
 * is the twin store's own.  Statements are prepared on first use and cached
 * per handle until close.  A handle serves one thread at a time, so there is
 * no locking here.
 *
 * File map: twin_sqlite.c (open, migrations, the scoped entry point,
 * transactions, helpers), twin_sqlite_sql.c (schema and statement texts),
 * twin_sqlite_shadow.c (shadows and their history), twin_sqlite_cmd.c
 * (commands, group fan-out batches, purge).
 */
#ifndef DRV_TWIN_TWIN_SQLITE_INT_H
#define DRV_TWIN_TWIN_SQLITE_INT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sqlite/sq.h"
#include "twin/twin_store.h"

/* Every statement the store runs; the SQL text is tw_queries[q].sql. */
typedef enum {
    TQ_BEGIN = DRV_SQ_BEGIN,
    TQ_COMMIT = DRV_SQ_COMMIT,
    TQ_ROLLBACK = DRV_SQ_ROLLBACK,
    TQ_SAVEPOINT,
    TQ_RELEASE,
    TQ_ROLLBACK_TO,
    TQ_USER_VERSION,
    /* shadows */
    TQ_SHADOW_GET,
    TQ_SHADOW_VERSION,
    TQ_SHADOW_UPSERT,
    TQ_SHADOW_LIST,
    TQ_SHADOW_COUNT,
    TQ_HISTORY_INSERT,
    TQ_HISTORY_PAGE,
    TQ_HISTORY_PRUNE,
    /* commands */
    TQ_CMD_INSERT,
    TQ_CMD_BY_IDEM,
    TQ_CMD_GET,
    TQ_CMD_STATE,
    TQ_CMD_UPDATE,
    TQ_CMD_LIST,
    TQ_CMD_LIST_DEVICE,
    TQ_CMD_LIST_BATCH,
    TQ_CMD_PENDING,
    TQ_CMD_WAITING,
    TQ_CMD_DUE,
    TQ_CMD_DUE_NEXT,
    TQ_TRANSITION_INSERT,
    TQ_TRANSITION_LIST,
    /* group fan-out batches */
    TQ_BATCH_INSERT,
    TQ_BATCH_GET,
    TQ_BATCH_COUNTS,
    /* purge_device */
    TQ_PURGE_SHADOWS,
    TQ_PURGE_HISTORY,
    TQ_PURGE_TRANSITIONS,
    TQ_PURGE_COMMANDS,
    TQ_COUNT
} tw_query;

/* The statement table, indexed by tw_query (scoped entries are reached
 * through tw_scoped). */
extern const drv_sq_def tw_queries[TQ_COUNT];
/* Schema migrations: tw_migrations[i] takes PRAGMA user_version from i to
 * i + 1. */
extern const char *const tw_migrations[];
extern const int tw_migration_count;

/* The column scoped statements bind as ?1. */
#define TW_TENANT_COL "tenant"

/* An open SQLite handle. */
typedef struct tw_store {
    drv_twin_store base; /* first: a drv_twin_store * is a tw_store * */
    union {
        drv_sq sq;   /* the connection and its statement cache */
        sqlite3 *db; /* sq.db, its first field, by the name twin_store_test.c uses */
    };
    bool in_tx;                   /* begin() opened a transaction the caller ends */
    sqlite3_stmt *stmt[TQ_COUNT]; /* sq's cache: prepared on first use, finalised on close */
} tw_store;

static inline tw_store *tw_of(drv_twin_store *st)
{
    return (tw_store *)st;
}

/* Longest strings the store keeps (the drv_command arrays less their NUL). */
#define TW_TENANT_MAX 63
#define TW_KEY_MAX 128 /* device, shadow and command names, idempotency keys */

/* -- statements (twin_sqlite.c) ---------------------------------------------- */

/* The cached scoped statement q, reset, with tenant bound as ?1.  DRV_INVAL
 * when tenant is NULL, empty or longer than TW_TENANT_MAX. */
drv_err tw_scoped(tw_store *s, const char *tenant, tw_query q, sqlite3_stmt **out);

/* The SQL of a scoped statement filters on, or inserts, tenant ?1. */
static inline bool tw_tenant_bound(const char *sql)
{
    return drv_sq_tenant_bound(sql, TW_TENANT_COL);
}

/* Bind text, or NULL when p is NULL or empty. */
void tw_bind_opt(sqlite3_stmt *stmt, int idx, const char *p);
/* Copy column col into dst[cap]; DRV_CORRUPT when it does not fit. */
drv_err tw_col_copy(sqlite3_stmt *stmt, int col, char *dst, size_t cap);
/* p is a NUL-terminated string of min..max bytes (p NULL: false). */
bool tw_valid_str(const char *p, size_t min, size_t max);
/* p is one JSON value (any type). */
bool tw_json_valid(const char *p);

/* -- transactions ---------------------------------------------------------------- */

/* Make one write op atomic: BEGIN IMMEDIATE when no transaction is open
 * (*own set), else a savepoint inside the caller's, so a failed op leaves
 * the batch as it was before the op. */
drv_err tw_op_begin(tw_store *s, bool *own);
/* End what tw_op_begin started: keep the op's writes when e is DRV_OK, undo
 * them otherwise.  Returns the outcome (a failed commit). */
drv_err tw_op_end(tw_store *s, bool own, drv_err e);

/* -- cursors ----------------------------------------------------------------------- */

/* The shared positive-key cursors by the names twin_store_test.c knows them. */
static inline char *tw_cursor_encode(int64_t key)
{
    return drv_sq_cursor_encode_int(key);
}

static inline drv_err tw_cursor_decode(const char *cursor, int64_t *key)
{
    return drv_sq_cursor_decode_int(cursor, key);
}

/* -- shadow ops (twin_sqlite_shadow.c) -------------------------------------- */

drv_err tw_shadow_get(drv_twin_store *st, const char *tenant, const char *device, const char *name,
                      drv_shadow_row *out);
drv_err tw_shadow_put(drv_twin_store *st, const char *tenant, const char *device, const char *name,
                      const json_t *stored, const drv_shadow_change *change);
drv_err tw_shadow_list(drv_twin_store *st, const char *tenant, const char *device, json_t **out);
drv_err tw_shadow_count(drv_twin_store *st, const char *tenant, const char *device, int64_t *out);
drv_err tw_shadow_history(drv_twin_store *st, const char *tenant, const char *device,
                          const char *name, int64_t from_ms, int64_t to_ms, const char *cursor,
                          uint32_t limit, json_t **out);
drv_err tw_history_prune(drv_twin_store *st, int64_t before_ms, uint32_t limit, uint32_t *n);

/* -- command ops (twin_sqlite_cmd.c) ---------------------------------------- */

drv_err tw_command_add(drv_twin_store *st, drv_command *c);
drv_err tw_command_get(drv_twin_store *st, const char *tenant, const char *id, drv_command *out);
drv_err tw_command_update(drv_twin_store *st, const drv_command *c, drv_cmd_state from,
                          const json_t *detail);
drv_err tw_command_json(drv_twin_store *st, const char *tenant, const char *id, json_t **out);
drv_err tw_command_list(drv_twin_store *st, const char *tenant, const drv_cmd_filter *f,
                        const char *cursor, uint32_t limit, json_t **out);
drv_err tw_command_waiting(drv_twin_store *st, const char *tenant, const char *device,
                           int64_t *out);
drv_err tw_command_pending(drv_twin_store *st, const char *tenant, const char *device, uint32_t max,
                           bool (*fn)(void *ud, drv_command *c), void *ud);
drv_err tw_due_commands(drv_twin_store *st, int64_t now_ms, uint32_t max,
                        bool (*fn)(void *ud, drv_command *c), void *ud);
drv_err tw_due_next(drv_twin_store *st, int64_t *out);
drv_err tw_batch_add(drv_twin_store *st, const char *tenant, const json_t *doc, char id_out[40]);
drv_err tw_batch_get(drv_twin_store *st, const char *tenant, const char *id, json_t **out);
drv_err tw_purge_device(drv_twin_store *st, const char *tenant, const char *device);

#endif
