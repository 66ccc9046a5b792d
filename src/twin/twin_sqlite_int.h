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
 * Statements are prepared on first use and cached per handle until close.
 * A handle serves one thread at a time, so there is no locking here.
 *
 * File map: twin_sqlite.c (open, migrations, statements, errors,
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

#include "twin/twin_store.h"

/* Every statement the store runs; the SQL text is tw_queries[q].sql. */
typedef enum {
    TQ_BEGIN,
    TQ_COMMIT,
    TQ_ROLLBACK,
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

typedef struct tw_query_def {
    const char *sql; /* one statement */
    bool scoped;     /* binds a tenant as ?1: reachable only through tw_scoped */
} tw_query_def;

/* The statement table, indexed by tw_query. */
extern const tw_query_def tw_queries[TQ_COUNT];
/* Schema migrations: tw_migrations[i] takes PRAGMA user_version from i to
 * i + 1. */
extern const char *const tw_migrations[];
extern const int tw_migration_count;

/* An open SQLite handle. */
typedef struct tw_store {
    drv_twin_store base;          /* first: a drv_twin_store * is a tw_store * */
    sqlite3 *db;                  /* the connection, used by one thread at a time */
    char *path;                   /* database file, for log lines (drv_strdup) */
    bool in_tx;                   /* begin() opened a transaction the caller ends */
    sqlite3_stmt *stmt[TQ_COUNT]; /* prepared on first use, finalised on close */
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
/* The cached unscoped statement q, reset. */
drv_err tw_unscoped(tw_store *s, tw_query q, sqlite3_stmt **out);
/* Step once: a row is DRV_OK, the end DRV_NOTFOUND, anything else the mapped
 * error (logged with what).  Does not reset. */
drv_err tw_step(tw_store *s, sqlite3_stmt *stmt, const char *what);
/* Run a statement that returns no rows to completion, then reset it. */
drv_err tw_run(tw_store *s, sqlite3_stmt *stmt, const char *what);
/* Map an SQLite result code to drv_err and log it once with what. */
drv_err tw_fail(tw_store *s, int rc, const char *what);
/* The SQL of a scoped statement filters on, or inserts, tenant ?1. */
bool tw_tenant_bound(const char *sql);

/* Bind text, or NULL when p is NULL or empty. */
void tw_bind_opt(sqlite3_stmt *stmt, int idx, const char *p);
/* Column text, "" for NULL. */
const char *tw_col_text(sqlite3_stmt *stmt, int col);
/* Column text as a drv_strdup'd string in *out (NULL for a NULL column).
 * DRV_NOMEM. */
drv_err tw_col_dup(sqlite3_stmt *stmt, int col, char **out);
/* Copy column col into dst[cap]; DRV_CORRUPT when it does not fit. */
drv_err tw_col_copy(sqlite3_stmt *stmt, int col, char *dst, size_t cap);
/* p is a NUL-terminated string of min..max bytes (p NULL: false). */
bool tw_valid_str(const char *p, size_t min, size_t max);

/* -- transactions ---------------------------------------------------------------- */

/* Make one write op atomic: BEGIN IMMEDIATE when no transaction is open
 * (*own set), else a savepoint inside the caller's, so a failed op leaves
 * the batch as it was before the op. */
drv_err tw_op_begin(tw_store *s, bool *own);
/* End what tw_op_begin started: keep the op's writes when e is DRV_OK, undo
 * them otherwise.  Returns the outcome (a failed commit). */
drv_err tw_op_end(tw_store *s, bool own, drv_err e);

/* -- ids, cursors, JSON ---------------------------------------------------------- */

/* prefix followed by n lower-case base32 characters from getrandom. */
drv_err tw_random_id(const char *prefix, size_t n, char *out, size_t cap);
/* The page size to use (0: 100; above 1000: DRV_INVAL). */
drv_err tw_page_limit(uint32_t limit, uint32_t *out);
/* Opaque cursor for a position (a positive row key); NULL when out of
 * memory.  The caller frees it with drv_free. */
char *tw_cursor_encode(int64_t key);
/* The position inside cursor; DRV_INVAL when malformed. */
drv_err tw_cursor_decode(const char *cursor, int64_t *key);
/* {"items": items, "next_cursor": cursor-or-null}; steals items. */
drv_err tw_list_answer(json_t *items, const char *next_cursor, json_t **out);
/* Turns the current row of a list query into an item (new reference) and
 * gives the row's position for the next cursor. */
typedef drv_err (*tw_row_fn)(tw_store *s, sqlite3_stmt *stmt, json_t **item, int64_t *key);
/* Step stmt (which asks for limit + 1 rows) into a list answer of at most
 * limit items, with a next cursor when there is more.  Resets stmt. */
drv_err tw_collect(tw_store *s, sqlite3_stmt *stmt, uint32_t limit, tw_row_fn fn, json_t **out);
/* Set key to value (stolen); false when value is NULL or the set failed. */
bool tw_set(json_t *obj, const char *key, json_t *value);
/* Serialise compactly into a drv_malloc'd string (caller frees). */
drv_err tw_json_dump(const json_t *j, char **out);
/* Parse JSON text the store wrote (NULL p: *out NULL); DRV_CORRUPT (logged)
 * when it does not parse. */
drv_err tw_json_parse(tw_store *s, const char *p, size_t n, json_t **out);
/* The same for a column. */
drv_err tw_json_col(tw_store *s, sqlite3_stmt *stmt, int col, json_t **out);
/* p is one JSON value (any type). */
bool tw_json_valid(const char *p);
/* The RFC 3339 string for ms, or JSON null when ms is 0 ("never"). */
json_t *tw_time_json(int64_t ms);

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
drv_err tw_command_pending(drv_twin_store *st, const char *tenant, const char *device, uint32_t max,
                           bool (*fn)(void *ud, drv_command *c), void *ud);
drv_err tw_due_commands(drv_twin_store *st, int64_t now_ms, uint32_t max,
                        bool (*fn)(void *ud, drv_command *c), void *ud);
drv_err tw_due_next(drv_twin_store *st, int64_t *out);
drv_err tw_batch_add(drv_twin_store *st, const char *tenant, const json_t *doc, char id_out[40]);
drv_err tw_batch_get(drv_twin_store *st, const char *tenant, const char *id, json_t **out);
drv_err tw_purge_device(drv_twin_store *st, const char *tenant, const char *device);

#endif
