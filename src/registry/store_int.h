/*
 * store_int.h — private to the SQLite registry store (store_sqlite*.c).
 *
 * Every SQL text the store runs is one entry of sq_queries
 * (store_sqlite_sql.c), marked scoped or not.  A scoped statement is reached
 * only through sq_scoped(), which refuses a missing or malformed scope and
 * binds the scope's tenant as ?1; every scoped text filters on
 * "tenant_id = ?1" or inserts ?1 as tenant_id (asserted when it is prepared,
 * and checked for every entry by store_test.c).  So tenant isolation lives in
 * one function and one table: an op cannot run tenant SQL without binding a
 * tenant, and cannot bind the wrong one.
 *
 * Statements are prepared on first use and cached per handle until close.
 * A handle serves one thread at a time, so there is no locking here.
 *
 * File map: store_sqlite.c (open, migrations, statements, errors, helpers),
 * store_sqlite_sql.c (schema and queries), store_sqlite_docs.c (tenants and
 * documents), store_sqlite_auth.c (tokens and credentials),
 * store_sqlite_sort.c (document lists in another order than by id),
 * store_sqlite_bulk.c (bulk document creation),
 * store_sqlite_log.c (device events and the audit log), store_sqlite_oauth.c
 * (OAuth clients and the API's signing keys), store_sqlite_cas.c (device
 * CAs and zero-touch device creation).
 */
#ifndef DRV_REGISTRY_STORE_INT_H
#define DRV_REGISTRY_STORE_INT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry/store.h"

/* Every statement the store runs; the SQL text is sq_queries[q].sql. */
typedef enum {
    SQ_BEGIN,
    SQ_COMMIT,
    SQ_ROLLBACK,
    SQ_PING,
    SQ_SCHEMA_VERSION,
    SQ_SCHEMA_RECORD,
    /* tenants (platform) */
    SQ_TENANT_INSERT,
    SQ_TENANT_GET,
    SQ_TENANT_LIST,
    SQ_TENANT_UPDATE,
    /* API tokens */
    SQ_TOKEN_INSERT,
    SQ_TOKEN_INSERT_PLATFORM,
    SQ_TOKEN_LIST,
    SQ_TOKEN_LIST_PLATFORM,
    SQ_TOKEN_REVOKE,
    SQ_TOKEN_REVOKE_PLATFORM,
    SQ_TOKEN_COUNT_PLATFORM,
    SQ_TOKEN_LOOKUP,
    /* documents */
    SQ_ID_RESERVE,
    SQ_DOC_INSERT,
    SQ_DOC_GET,
    SQ_DOC_EXISTS,
    SQ_DOC_UPDATE,
    SQ_DOC_DELETE,
    SQ_DOC_LIST,
    SQ_DOC_COUNT,
    SQ_DEVICE_CONNECTIVITY,
    /* sorted document lists (store_sqlite_sort.c), in sort_table's order */
    SQ_DOC_LIST_ID_DESC,
    SQ_DOC_LIST_NAME,
    SQ_DOC_LIST_NAME_DESC,
    SQ_DOC_LIST_CREATED,
    SQ_DOC_LIST_CREATED_DESC,
    SQ_DOC_LIST_UPDATED,
    SQ_DOC_LIST_UPDATED_DESC,
    /* credentials */
    SQ_CRED_INSERT,
    SQ_CRED_LIVE_COUNT,
    SQ_CRED_LIST,
    SQ_CRED_REVOKE,
    SQ_CRED_REVOKE_ALL,
    SQ_CRED_LOOKUP,
    SQ_CRED_LOOKUP_FINGERPRINT,
    /* device events */
    SQ_EVENT_INSERT,
    SQ_EVENT_LIST,
    SQ_EVENT_SINCE,
    SQ_EVENT_LAST_ID,
    /* audit log */
    SQ_AUDIT_INSERT,
    SQ_AUDIT_INSERT_PLATFORM,
    SQ_AUDIT_LIST,
    SQ_AUDIT_LIST_PLATFORM,
    /* OAuth clients and signing keys (store_sqlite_oauth.c) */
    SQ_OAUTH_CLIENT_INSERT,
    SQ_OAUTH_CLIENT_LIST,
    SQ_OAUTH_CLIENT_REVOKE,
    SQ_OAUTH_CLIENT_LOOKUP,
    SQ_SIGNING_KEY_RETIRE,
    SQ_SIGNING_KEY_PURGE,
    SQ_SIGNING_KEY_INSERT,
    SQ_SIGNING_KEY_LIST,
    SQ_SIGNING_KEY_ACTIVE,
    /* device CAs (store_sqlite_cas.c) */
    SQ_CA_INSERT,
    SQ_CA_OWNERS,
    SQ_CA_LIST,
    SQ_CA_GET,
    SQ_CA_REVOKE,
    SQ_CA_LOOKUP_SUBJECT,
    SQ_COUNT
} sq_query;

typedef struct sq_query_def {
    const char *sql; /* one statement */
    bool scoped;     /* binds a tenant as ?1: reachable only through sq_scoped */
} sq_query_def;

/* The statement table, indexed by sq_query. */
extern const sq_query_def sq_queries[SQ_COUNT];
/* Schema migrations: sq_migrations[i] takes the schema from version i to i+1. */
extern const char *const sq_migrations[];
extern const int sq_migration_count;
/* Creates schema_migrations itself; idempotent, runs before the migrations. */
extern const char sq_schema_bootstrap[];

/* An open SQLite handle. */
typedef struct sq_store {
    drv_store base;               /* first: a drv_store * is an sq_store * */
    sqlite3 *db;                  /* the connection, used by one thread at a time */
    char *path;                   /* database file, for log lines (drv_strdup) */
    bool reader;                  /* query_only handle: write ops answer DRV_UNSUPPORTED */
    sqlite3_stmt *stmt[SQ_COUNT]; /* prepared on first use, finalised on close */
    /* Device events inserted by the open transaction, for the event hook
     * once it commits (sq_note_event). */
    struct sq_noted *noted;
    size_t nnoted, noted_cap;
} sq_store;

/* Remember the event row just inserted (its id is the last insert rowid)
 * for the event hook; dropped at rollback, told at commit. */
void sq_note_event(sq_store *s, const char *tenant, const char *device, const char *kind,
                   int64_t ts_ms, const char *detail);

static inline sq_store *sq_of(drv_store *st)
{
    return (sq_store *)st;
}

/* -- statements (store_sqlite.c) -------------------------------------------- */

/* The cached scoped statement q, reset, with the scope's tenant bound as ?1.
 * DRV_INVAL when sc, sc->tenant or the tenant id is missing or malformed. */
drv_err sq_scoped(sq_store *s, const drv_scope *sc, sq_query q, sqlite3_stmt **out);
/* The cached unscoped statement q (platform, lookup and housekeeping), reset. */
drv_err sq_unscoped(sq_store *s, sq_query q, sqlite3_stmt **out);
/* Step once: a row is DRV_OK, the end DRV_NOTFOUND, anything else the mapped
 * error (logged with what).  Does not reset. */
drv_err sq_step(sq_store *s, sqlite3_stmt *stmt, const char *what);
/* Run a statement that returns no rows to completion, then reset it. */
drv_err sq_run(sq_store *s, sqlite3_stmt *stmt, const char *what);
/* End a statement's use (releases its read snapshot); NULL is a no-op. */
void sq_reset(sqlite3_stmt *stmt);
/* Map an SQLite result code to drv_err and log it once with what; expected
 * outcomes (a duplicate key, a missing parent row) are logged at debug. */
drv_err sq_fail(sq_store *s, int rc, const char *what);
/* The SQL of a scoped statement filters on, or inserts, tenant ?1. */
bool sq_tenant_bound(const char *sql);

/* Bind text, or NULL when s is NULL. */
void sq_bind_text(sqlite3_stmt *stmt, int idx, const char *s);
/* Bind a time in ms, or NULL when it is 0. */
void sq_bind_time(sqlite3_stmt *stmt, int idx, int64_t ms);
/* Column text, "" for NULL. */
const char *sq_col_text(sqlite3_stmt *stmt, int col);
/* Copy src into dst[cap]; false (dst emptied) when it does not fit. */
bool sq_copy_str(char *dst, size_t cap, const char *src);

/* One write transaction (BEGIN IMMEDIATE, so the write lock is taken up
 * front and a WAL snapshot can never go stale under us). */
drv_err sq_begin(sq_store *s);
/* End the transaction sq_begin opened: commit when e is DRV_OK, else (or when the
 * commit fails) roll back.  Returns the outcome. */
drv_err sq_end(sq_store *s, drv_err e);
drv_err sq_commit(sq_store *s);
void sq_rollback(sq_store *s);

/* -- validation and ids ------------------------------------------------------ */

/* Resource ids: [A-Za-z0-9._:-], 1..128. */
bool sq_valid_id(const char *id);
/* Tenant ids: [a-z0-9-], 3..63. */
bool sq_valid_tenant_id(const char *id);
/* One of the four DRV_KIND_* names. */
bool sq_valid_kind(const char *kind);
/* A role a credential may carry: "platform_admin" for a platform one, else
 * "tenant_admin", "operator" or "viewer". */
bool sq_valid_role(const char *role, bool platform);
/* prefix followed by n lower-case base32 characters from getrandom. */
drv_err sq_random_id(const char *prefix, size_t n, char *out, size_t cap);

/* -- pagination and JSON ---------------------------------------------------- */

/* The page size to use (pg NULL or limit 0: 100; above 1000: DRV_INVAL). */
drv_err sq_page_limit(const drv_page *pg, uint32_t *limit);
/* Opaque cursor for the key text (base64url); NULL on allocation failure.
 * The caller frees it with drv_free. */
char *sq_cursor_encode(const char *key);
/* The key text inside cursor (NUL-terminated in out); DRV_INVAL if malformed
 * or longer than cap - 1. */
drv_err sq_cursor_decode(const char *cursor, char *out, size_t cap);
/* Cursor for an (ts, row id) position in a newest-first list, and back. */
char *sq_cursor_encode_pos(int64_t ts, int64_t id);
drv_err sq_cursor_decode_pos(const char *cursor, int64_t *ts, int64_t *id);
/* {"items": items, "next_cursor": cursor-or-null}; steals items. */
drv_err sq_list_answer(json_t *items, const char *next_cursor, json_t **out);
/* Turns the current row of a list query into a JSON item (new reference). */
typedef drv_err (*sq_row_fn)(sq_store *s, sqlite3_stmt *stmt, json_t **item);
/* Step stmt (which asks for limit + 1 rows) into a list answer of at most
 * limit items.  The next cursor is the last item's key: column key_col as
 * text when id_col < 0, else the (ts, row id) pair of columns key_col and
 * id_col.  Resets stmt. */
drv_err sq_collect(sq_store *s, sqlite3_stmt *stmt, uint32_t limit, int key_col, int id_col,
                   sq_row_fn fn, json_t **out);

/* Serialise compactly into a drv_malloc'd string (caller frees); DRV_TOOBIG
 * past DRV_STORE_DOC_MAX. */
drv_err sq_json_dump(const json_t *j, char **out);
/* Parse a JSON column written by the store; DRV_CORRUPT (logged) if it is not
 * JSON. */
drv_err sq_json_col(sq_store *s, sqlite3_stmt *stmt, int col, json_t **out);
/* The RFC 3339 string for ms, or JSON null when ms is 0 ("never"). */
json_t *sq_time_json(int64_t ms);
/* Set key to value (stolen); false when value is NULL or the set failed. */
bool sq_set(json_t *obj, const char *key, json_t *value);
/* Join a "scopes" array (absent or null: none) into space-separated words in
 * out[cap]; false when it is not an array of non-empty words without spaces
 * or does not fit. */
bool sq_join_scopes(json_t *arr, char *out, size_t cap);
/* A scopes column (space-separated words) as a JSON array of words; NULL on
 * allocation failure. */
json_t *sq_split_scopes(const char *s);

/* -- ops, one per file ------------------------------------------------------- */

/* store_sqlite_docs.c */
drv_err sq_tenant_create(drv_store *st, json_t *doc, json_t **out);
drv_err sq_tenant_get(drv_store *st, const char *id, json_t **out);
drv_err sq_tenant_list(drv_store *st, const drv_page *pg, json_t **out);
drv_err sq_tenant_update(drv_store *st, const char *id, json_t *doc, int64_t expected_version,
                         json_t **out);
drv_err sq_tenant_delete(drv_store *st, const char *id);
drv_err sq_doc_create(drv_store *st, const drv_scope *sc, const char *kind, json_t *doc,
                      json_t **out);
drv_err sq_doc_get(drv_store *st, const drv_scope *sc, const char *kind, const char *id,
                   json_t **out);
drv_err sq_doc_replace(drv_store *st, const drv_scope *sc, const char *kind, const char *id,
                       json_t *doc, int64_t expected_version, json_t **out);
drv_err sq_doc_delete(drv_store *st, const drv_scope *sc, const char *kind, const char *id);
drv_err sq_doc_list(drv_store *st, const drv_scope *sc, const char *kind, const drv_doc_filter *f,
                    const drv_page *pg, json_t **out);
drv_err sq_doc_count(drv_store *st, const drv_scope *sc, const char *kind, int64_t *out);
/* DRV_OK when the device exists in the scope, else DRV_NOTFOUND (or an error). */
drv_err sq_device_exists(sq_store *s, const drv_scope *sc, const char *device);
/* The stored form of a new document (version 1, created and updated now),
 * as doc_create stores it; NULL when out of memory. */
json_t *sq_doc_form_new(const char *tenant, const char *kind, const char *id, json_t *src,
                        int64_t now);
/* Bind a list filter to the parameters every document list statement shares
 * (?4..?10, ?12, ?13); f may be NULL.  DRV_INVAL for a malformed filter. */
drv_err sq_bind_doc_filter(sqlite3_stmt *stmt, const drv_doc_filter *f);

/* store_sqlite_sort.c: doc_list for a sort other than the default "id". */
drv_err sq_doc_list_sorted(sq_store *s, const drv_scope *sc, const char *kind,
                           const drv_doc_filter *f, const drv_page *pg, json_t **out);

/* store_sqlite_bulk.c */
drv_err sq_doc_create_many(drv_store *st, const drv_scope *sc, const char *kind,
                           drv_doc_batch_item *items, size_t n, bool dry_run);

/* store_sqlite_auth.c */
drv_err sq_token_create(drv_store *st, const char *tenant, json_t *doc, const uint8_t sha256[32],
                        json_t **out);
drv_err sq_token_list(drv_store *st, const drv_scope *sc, const drv_page *pg, json_t **out);
drv_err sq_token_revoke(drv_store *st, const drv_scope *sc, const char *id);
drv_err sq_lookup_token(drv_store *st, const uint8_t sha256[32], drv_token_info *out);
drv_err sq_platform_token_count(drv_store *st, int64_t *out);
drv_err sq_platform_token_list(drv_store *st, const drv_page *pg, json_t **out);
drv_err sq_platform_token_revoke(drv_store *st, const char *id);
drv_err sq_credential_add(drv_store *st, const drv_scope *sc, const char *device, json_t *doc,
                          json_t **out);
drv_err sq_credential_list(drv_store *st, const drv_scope *sc, const char *device, json_t **out);
drv_err sq_credential_revoke(drv_store *st, const drv_scope *sc, const char *device,
                             const char *id);
drv_err sq_credential_revoke_all(drv_store *st, const drv_scope *sc, const char *device);
drv_err sq_lookup_credentials(drv_store *st, const char *tenant, const char *device,
                              drv_credential *out, size_t max, size_t *n);
drv_err sq_lookup_fingerprint(drv_store *st, const char *fingerprint, drv_credential *out);

/* store_sqlite_log.c */
drv_err sq_event_append_batch(drv_store *st, const drv_device_event *ev, size_t n);
drv_err sq_event_append(drv_store *st, const drv_scope *sc, const char *device, const char *kind,
                        int64_t ts_ms, json_t *detail);
drv_err sq_event_since(drv_store *st, const drv_scope *sc, int64_t after_id, uint32_t limit,
                       bool (*fn)(void *ud, const drv_store_event *ev), void *ud);
drv_err sq_event_last_id(drv_store *st, int64_t *out);
drv_err sq_event_list(drv_store *st, const drv_scope *sc, const char *device, int64_t from_ms,
                      int64_t to_ms, const drv_page *pg, json_t **out);
drv_err sq_audit_append(drv_store *st, const char *tenant, const char *actor, const char *action,
                        const char *target, const char *source, json_t *detail);
drv_err sq_audit_list(drv_store *st, const drv_scope *sc, int64_t from_ms, int64_t to_ms,
                      const drv_page *pg, json_t **out);
drv_err sq_platform_audit_list(drv_store *st, int64_t from_ms, int64_t to_ms, const drv_page *pg,
                               json_t **out);

/* store_sqlite_oauth.c */
drv_err sq_oauth_client_create(drv_store *st, const drv_scope *sc, json_t *doc,
                               const uint8_t sha256[32], json_t **out);
drv_err sq_oauth_client_list(drv_store *st, const drv_scope *sc, const drv_page *pg, json_t **out);
drv_err sq_oauth_client_revoke(drv_store *st, const drv_scope *sc, const char *client_id);
drv_err sq_lookup_oauth_client(drv_store *st, const char *client_id, drv_oauth_client *out);
drv_err sq_signing_key_add(drv_store *st, const drv_signing_key *key, int64_t retire_prev_ms);
drv_err sq_signing_key_list(drv_store *st, json_t **out);
drv_err sq_signing_key_public(drv_store *st, drv_signing_key *out, size_t max, size_t *n);
drv_err sq_signing_key_active(drv_store *st, drv_signing_key *out);

/* store_sqlite_cas.c */
drv_err sq_ca_create(drv_store *st, const drv_scope *sc, json_t *doc, json_t **out);
drv_err sq_ca_list(drv_store *st, const drv_scope *sc, const drv_page *pg, json_t **out);
drv_err sq_ca_get(drv_store *st, const drv_scope *sc, const char *id, json_t **out);
drv_err sq_ca_revoke(drv_store *st, const drv_scope *sc, const char *id);
drv_err sq_lookup_cas(drv_store *st, const char *subject, drv_device_ca *out, size_t max,
                      size_t *n);
drv_err sq_device_provision_x509(drv_store *st, const drv_scope *sc, json_t *doc,
                                 const char *fingerprint, json_t *detail);

#endif
