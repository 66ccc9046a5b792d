/*
 * sq.h — the SQLite plumbing the registry store (src/registry/store_sqlite*)
 * and the twin store (src/twin/twin_sqlite*) share: opening a connection,
 * pragmas, schema migrations, a statement cache with one scoped entry
 * point, error mapping, transactions, and the row, cursor and JSON helpers
 * their ops use.
 *
 * It is not a store: it knows no table, no resource and no op.  Each backend
 * keeps its SQL text (a table of drv_sq_def), its rules for ids and tenants,
 * and whatever its transactions add (the registry's event hook, the twin's
 * savepoints), and describes itself to this layer with one drv_sq.
 *
 * Tenant isolation: a scoped statement is reached only through
 * drv_sq_scoped, which binds the tenant as ?1, and every scoped text filters
 * on "<tenant_col> = ?1" or inserts ?1 as <tenant_col> (asserted when it is
 * prepared).  The backend checks that the tenant is well formed first.
 *
 * A drv_sq serves one thread at a time (the connection is opened NOMUTEX);
 * there is no locking here.  Every log line starts with drv_sq.who.
 */
#ifndef DRV_SQLITE_SQ_H
#define DRV_SQLITE_SQ_H

#include <jansson.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* One entry of a backend's statement table. */
typedef struct drv_sq_def {
    const char *sql; /* one statement */
    bool scoped;     /* binds a tenant as ?1: reachable only through drv_sq_scoped */
} drv_sq_def;

/* The first three entries of every statement table, which the shared
 * transactions run: "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK". */
enum {
    DRV_SQ_BEGIN,
    DRV_SQ_COMMIT,
    DRV_SQ_ROLLBACK
};

/* One connection and its statement cache. */
typedef struct drv_sq {
    sqlite3 *db;            /* the connection; first (twin_sqlite_int.h relies on it) */
    char *path;             /* database file, for log lines (drv_malloc'd, freed by close) */
    const char *who;        /* what the log lines say this is: "store", "twin store" */
    const char *tenant_col; /* the column scoped statements bind as ?1 */
    const drv_sq_def *defs; /* the statement table, indexed by the backend's enum */
    sqlite3_stmt **stmt;    /* its cache, ndefs slots (the backend's array), finalised by close */
    int ndefs;              /* entries in defs and stmt */
    /* SQLITE_CANTOPEN is DRV_NOTFOUND (a reader opening a file nobody
     * created), else DRV_IO (a store creates its file: what fails is the
     * directory or the disk). */
    bool cantopen_notfound;
    uint64_t busy_since_ms; /* when the current wait for a lock began (busy handler) */
} drv_sq;

/* -- open, pragmas, migrations, close ------------------------------------------ */

/* A pragma to run when a connection opens. */
typedef struct drv_sq_pragma {
    const char *sql;  /* "PRAGMA ..." */
    const char *want; /* its one-row answer must be this (any case); NULL: not checked */
} drv_sq_pragma;

/* Open c->path (set, with who, tenant_col, defs, stmt and ndefs, by the
 * caller; create: make the file if missing) and configure the connection:
 * extended result codes, a 5 s busy timeout (polled finely: sq.c), no double-quoted string
 * literals, defensive mode, then the n pragmas p in order (DRV_CONFIG when
 * one is not in effect).  On failure (logged) the caller still calls
 * drv_sq_close. */
drv_err drv_sq_open(drv_sq *c, bool create, const drv_sq_pragma *p, size_t n);
/* Finalise the cached statements, close the connection (a failure is
 * logged) and free path.  Does not free c. */
void drv_sq_close(drv_sq *c);

/* A schema: its migrations and where the database keeps its version. */
typedef struct drv_sq_schema {
    const char *const *steps; /* steps[v] takes the schema from version v to v + 1 */
    int count;                /* how many steps: the binary's version */
    /* The database's version (read inside the step's transaction). */
    drv_err (*version)(drv_sq *c, int64_t *v);
    /* Note that the schema is now at version v, inside the step's
     * transaction. */
    drv_err (*record)(drv_sq *c, int64_t v);
} drv_sq_schema;

/* Bring the schema to the newest version, one BEGIN IMMEDIATE transaction
 * per step.  The version is read inside each transaction, so two processes
 * opening one file at once cannot apply a migration twice.  DRV_CONFIG
 * (logged) when the database is newer than the binary. */
drv_err drv_sq_migrate(drv_sq *c, const drv_sq_schema *sc);
/* Run sql (one or more statements) as the migration to version v; DRV_IO,
 * logged as a failed migration, when it fails. */
drv_err drv_sq_migrate_sql(drv_sq *c, const char *sql, int64_t v);
/* Log that the database's schema version v is newer than the binary's
 * (count); DRV_CONFIG. */
drv_err drv_sq_too_new(drv_sq *c, int64_t v, int count);

/* -- statements ------------------------------------------------------------------ */

/* The SQL of a scoped statement filters on, or inserts, tenant ?1 in column
 * col. */
bool drv_sq_tenant_bound(const char *sql, const char *col);
/* The cached scoped statement q, reset, with tenant bound as ?1.  The caller
 * has checked that tenant is well formed. */
drv_err drv_sq_scoped(drv_sq *c, const char *tenant, int q, sqlite3_stmt **out);
/* The cached unscoped statement q (platform, lookup and housekeeping), reset. */
drv_err drv_sq_unscoped(drv_sq *c, int q, sqlite3_stmt **out);
/* Step once: a row is DRV_OK, the end DRV_NOTFOUND, anything else the mapped
 * error (logged with what; a duplicate key or a missing parent row, which
 * are expected outcomes, at debug).  Does not reset. */
drv_err drv_sq_step(drv_sq *c, sqlite3_stmt *stmt, const char *what);
/* Step a statement that answers one row, read its column 0 as an integer
 * into *out, then reset it; no row is DRV_IO. */
drv_err drv_sq_step_int(drv_sq *c, sqlite3_stmt *stmt, const char *what, int64_t *out);
/* Run a statement that returns no rows to completion, then reset it. */
drv_err drv_sq_run(drv_sq *c, sqlite3_stmt *stmt, const char *what);
/* Run the unscoped statement q, which has no parameters, to completion. */
drv_err drv_sq_exec(drv_sq *c, int q, const char *what);
/* End a statement's use (releases its read snapshot); NULL is a no-op. */
void drv_sq_reset(sqlite3_stmt *stmt);

/* Bind text, or NULL when s is NULL. */
void drv_sq_bind_text(sqlite3_stmt *stmt, int idx, const char *s);
/* Bind a time in ms, or NULL when it is 0. */
void drv_sq_bind_time(sqlite3_stmt *stmt, int idx, int64_t ms);
/* Column text, "" for NULL. */
const char *drv_sq_col_text(sqlite3_stmt *stmt, int col);
/* Column text as a drv_malloc'd string in *out (NULL for a NULL column);
 * DRV_NOMEM. */
drv_err drv_sq_col_dup(sqlite3_stmt *stmt, int col, char **out);
/* Copy src into dst[cap]; false (dst emptied) when it does not fit. */
bool drv_sq_copy_str(char *dst, size_t cap, const char *src);

/* -- transactions ---------------------------------------------------------------- */

/* BEGIN IMMEDIATE, so the write lock is taken up front and a WAL snapshot
 * can never go stale under us. */
drv_err drv_sq_begin(drv_sq *c);
/* COMMIT.  On failure the transaction may still be open: roll it back. */
drv_err drv_sq_commit(drv_sq *c);
/* ROLLBACK, unless SQLite already rolled back (e.g. after SQLITE_FULL). */
void drv_sq_rollback(drv_sq *c);

/* -- ids, pages, cursors ------------------------------------------------------- */

/* prefix followed by n lower-case base32 characters from getrandom. */
drv_err drv_sq_random_id(const drv_sq *c, const char *prefix, size_t n, char *out, size_t cap);
/* The page size to use for a requested limit (0: 100; above 1000:
 * DRV_INVAL). */
drv_err drv_sq_page_limit(uint32_t limit, uint32_t *out);

/* Opaque cursor for the key text (base64url); NULL on allocation failure.
 * The caller frees it with drv_free. */
char *drv_sq_cursor_encode(const char *key);
/* The key text inside cursor (NUL-terminated in out); DRV_INVAL if NULL,
 * malformed or longer than cap - 1. */
drv_err drv_sq_cursor_decode(const char *cursor, char *out, size_t cap);
/* Cursor for an (ts, row id) position in a newest-first list, and back. */
char *drv_sq_cursor_encode_pos(int64_t ts, int64_t id);
drv_err drv_sq_cursor_decode_pos(const char *cursor, int64_t *ts, int64_t *id);
/* Cursor for a position that is a positive row key, and back; the decimal
 * is written without leading zeros, so a position has exactly one cursor. */
char *drv_sq_cursor_encode_int(int64_t key);
drv_err drv_sq_cursor_decode_int(const char *cursor, int64_t *key);

/* -- list answers ---------------------------------------------------------------- */

/* {"items": items, "next_cursor": cursor-or-null}; steals items. */
drv_err drv_sq_list_answer(json_t *items, const char *next_cursor, json_t **out);

/* Where a list's next cursor comes from: the last item's row. */
typedef enum {
    DRV_SQ_KEY_TEXT, /* column col as text (drv_sq_cursor_encode) */
    DRV_SQ_KEY_POS,  /* the (ts, row id) pair of columns col and id_col */
    DRV_SQ_KEY_INT,  /* column col, a positive integer (drv_sq_cursor_encode_int) */
} drv_sq_key_kind;

typedef struct drv_sq_key {
    drv_sq_key_kind kind; /* how the cursor encodes the key */
    int col;              /* the key column (the ts of a pair) */
    int id_col;           /* the row id column of a pair (DRV_SQ_KEY_POS only) */
} drv_sq_key;

#define DRV_SQ_TEXT_KEY(k) ((drv_sq_key){.kind = DRV_SQ_KEY_TEXT, .col = (k)})
#define DRV_SQ_POS_KEY(ts, id) ((drv_sq_key){.kind = DRV_SQ_KEY_POS, .col = (ts), .id_col = (id)})
#define DRV_SQ_INT_KEY(k) ((drv_sq_key){.kind = DRV_SQ_KEY_INT, .col = (k)})

/* Turns the current row of a list query into a JSON item (new reference). */
typedef drv_err (*drv_sq_row_fn)(drv_sq *c, sqlite3_stmt *stmt, json_t **item);
/* Step stmt (which asks for limit + 1 rows) into a list answer of at most
 * limit items, with the last item's key as the next cursor when there is
 * more.  Resets stmt. */
drv_err drv_sq_collect(drv_sq *c, sqlite3_stmt *stmt, uint32_t limit, drv_sq_key key,
                       drv_sq_row_fn fn, json_t **out);

/* -- JSON ---------------------------------------------------------------------------- */

/* Set key to value (stolen); false when value is NULL or the set failed. */
bool drv_sq_set(json_t *obj, const char *key, json_t *value);
/* Serialise compactly into a drv_malloc'd string (caller frees); DRV_TOOBIG
 * past max bytes. */
drv_err drv_sq_json_dump(const json_t *j, size_t max, char **out);
/* Parse JSON text the store wrote (NULL p: *out NULL); DRV_CORRUPT (logged)
 * when it does not parse. */
drv_err drv_sq_json_parse(drv_sq *c, const char *p, size_t n, json_t **out);
/* The same for a column (NULL: *out NULL). */
drv_err drv_sq_json_col(drv_sq *c, sqlite3_stmt *stmt, int col, json_t **out);
/* The RFC 3339 string for ms (clamped to years 0000..9999), or JSON null
 * when ms is 0 ("never"). */
json_t *drv_sq_time_json(int64_t ms);

#endif
