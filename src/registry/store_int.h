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
 * The statement cache, stepping, errors, transactions, cursors and JSON
 * helpers are the shared SQLite layer's (src/sqlite/sq.h, drv_sq_*); this
 * header adds what is the registry's own.  Statements are prepared on first
 * use and cached per handle until close.  A handle serves one thread at a
 * time, so there is no locking here.
 *
 * File map: store_sqlite.c (open, migrations, scopes, transactions and the
 * event hook, validation, times),
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
#include "sqlite/sq.h"

/* Every statement the store runs; the SQL text is sq_queries[q].sql. */
typedef enum {
    SQ_BEGIN = DRV_SQ_BEGIN,
    SQ_COMMIT = DRV_SQ_COMMIT,
    SQ_ROLLBACK = DRV_SQ_ROLLBACK,
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
    SQ_CA_CRL_SET,
    SQ_CA_CRL_CLEAR,
    SQ_CA_EXISTS,
    SQ_CA_CODE_INSERT,
    SQ_CA_CODE_GET,
    SQ_COUNT
} sq_query;

/* The statement table, indexed by sq_query (scoped entries are reached
 * through sq_scoped). */
extern const drv_sq_def sq_queries[SQ_COUNT];
/* Schema migrations: sq_migrations[i] takes the schema from version i to i+1. */
extern const char *const sq_migrations[];
extern const int sq_migration_count;
/* Creates schema_migrations itself; idempotent, runs before the migrations. */
extern const char sq_schema_bootstrap[];

/* The column scoped statements bind as ?1. */
#define SQ_TENANT_COL "tenant_id"

/* An open SQLite handle. */
typedef struct sq_store {
    drv_store base;               /* first: a drv_store * is an sq_store * */
    drv_sq sq;                    /* the connection and its statement cache */
    bool reader;                  /* query_only handle: write ops answer DRV_UNSUPPORTED */
    sqlite3_stmt *stmt[SQ_COUNT]; /* sq's cache: prepared on first use, finalised on close */
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

/* -- statements and transactions (store_sqlite.c) --------------------------- */

/* The cached scoped statement q, reset, with the scope's tenant bound as ?1.
 * DRV_INVAL when sc, sc->tenant or the tenant id is missing or malformed. */
drv_err sq_scoped(sq_store *s, const drv_scope *sc, sq_query q, sqlite3_stmt **out);

/* The SQL of a scoped statement filters on, or inserts, tenant ?1. */
static inline bool sq_tenant_bound(const char *sql)
{
    return drv_sq_tenant_bound(sql, SQ_TENANT_COL);
}

/* One write transaction (drv_sq_begin: BEGIN IMMEDIATE); DRV_UNSUPPORTED on
 * a reader handle. */
drv_err sq_begin(sq_store *s);
/* End the transaction sq_begin opened: commit when e is DRV_OK, else (or when the
 * commit fails) roll back.  Returns the outcome. */
drv_err sq_end(sq_store *s, drv_err e);
/* Commit (rolling back when that fails) and tell the event hook. */
drv_err sq_commit(sq_store *s);
/* Roll back and forget the events noted since sq_begin. */
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

/* -- pagination and JSON ---------------------------------------------------- */

/* The page size to use (pg NULL or limit 0: 100; above 1000: DRV_INVAL). */
static inline drv_err sq_page_limit(const drv_page *pg, uint32_t *limit)
{
    return drv_sq_page_limit(pg ? pg->limit : 0, limit);
}

/* The shared cursors by the names store_test.c knows them. */
static inline char *sq_cursor_encode(const char *key)
{
    return drv_sq_cursor_encode(key);
}

static inline drv_err sq_cursor_decode(const char *cursor, char *out, size_t cap)
{
    return drv_sq_cursor_decode(cursor, out, cap);
}

static inline char *sq_cursor_encode_pos(int64_t ts, int64_t id)
{
    return drv_sq_cursor_encode_pos(ts, id);
}

static inline drv_err sq_cursor_decode_pos(const char *cursor, int64_t *ts, int64_t *id)
{
    return drv_sq_cursor_decode_pos(cursor, ts, id);
}

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
drv_err sq_ca_crl_set(drv_store *st, const drv_scope *sc, const char *id, json_t *doc,
                      json_t **out);
drv_err sq_ca_registration_code(drv_store *st, const drv_scope *sc, const char *fresh, char *out,
                                size_t cap);
drv_err sq_lookup_cas(drv_store *st, const char *subject, drv_device_ca *out, size_t max,
                      size_t *n);
drv_err sq_device_provision_x509(drv_store *st, const drv_scope *sc, json_t *doc,
                                 const char *fingerprint, json_t *detail);

#endif
