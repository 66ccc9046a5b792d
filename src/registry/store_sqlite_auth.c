/*
 * store_sqlite_auth.c — API tokens and device credentials in the SQLite store:
 * what the REST API manages and what authentication looks up.
 *
 * Only digests and public material are stored: a token's SHA-256 (the caller
 * generated and showed the secret once), a device secret's Argon2id hash, a
 * certificate's SHA-256 fingerprint, a JWT public key.  Listings never return
 * a token digest, a secret hash or a key.
 *
 * The lookup_* calls run on the broker workers' reader handles before a
 * tenant is known; they return only live rows (not revoked, not expired)
 * and fill fixed-size structs, so they allocate only for the two heap
 * strings of drv_credential (freed by drv_credential_clear).
 */
#include "registry/store_int.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"

#define TOKEN_ID_CHARS 16
#define CRED_ID_CHARS 16
#define SECRET_HASH_MAX 512
#define PUBLIC_KEY_MAX 16384

/* An optional RFC 3339 time field: absent or null is 0. */
static bool opt_time(json_t *doc, const char *key, int64_t *ms)
{
    json_t *v = json_object_get(doc, key);
    *ms = 0;
    if (!v || json_is_null(v))
        return true;
    return json_is_string(v) && drv_store_parse_time(json_string_value(v), ms) && *ms != 0;
}

/* -- tokens -------------------------------------------------------------------- */

/* Token metadata from a row of TOKEN_COLUMNS (store_sqlite_sql.c). */
static drv_err token_row(drv_sq *sq, sqlite3_stmt *stmt, json_t **item)
{
    json_t *t = json_object();
    bool ok = t && drv_sq_set(t, "id", json_string(drv_sq_col_text(stmt, 0))) &&
              drv_sq_set(t, "tenant",
                         sqlite3_column_type(stmt, 1) == SQLITE_NULL
                             ? json_null()
                             : json_string(drv_sq_col_text(stmt, 1))) &&
              drv_sq_set(t, "name", json_string(drv_sq_col_text(stmt, 2))) &&
              drv_sq_set(t, "role", json_string(drv_sq_col_text(stmt, 3))) &&
              drv_sq_set(t, "scopes", sq_split_scopes(drv_sq_col_text(stmt, 4))) &&
              (sqlite3_column_type(stmt, 5) == SQLITE_NULL ||
               drv_sq_set(t, "user", json_string(drv_sq_col_text(stmt, 5)))) &&
              drv_sq_set(t, "created_at", drv_sq_time_json(sqlite3_column_int64(stmt, 6))) &&
              drv_sq_set(t, "expires_at", drv_sq_time_json(sqlite3_column_int64(stmt, 7))) &&
              drv_sq_set(t, "revoked_at", drv_sq_time_json(sqlite3_column_int64(stmt, 8)));
    if (!ok) {
        json_decref(t);
        return DRV_NOMEM;
    }
    *item = t;
    return DRV_OK;
}

drv_err sq_token_create(drv_store *st, const char *tenant, json_t *doc, const uint8_t sha256[32],
                        json_t **out)
{
    sq_store *s = sq_of(st);
    char id[40], scopes[DRV_SCOPES_MAX];
    int64_t expires;
    *out = NULL;
    if (!json_is_object(doc) || !sha256 || (tenant && !sq_valid_tenant_id(tenant)))
        return DRV_INVAL;
    const char *name = json_string_value(json_object_get(doc, "name"));
    const char *role = json_string_value(json_object_get(doc, "role"));
    json_t *juser = json_object_get(doc, "user");
    if (json_is_null(juser))
        juser = NULL;
    const char *user = json_string_value(juser);
    if (!name || !sq_valid_role(role, tenant == NULL) ||
        !sq_join_scopes(json_object_get(doc, "scopes"), scopes, sizeof(scopes)) ||
        !opt_time(doc, "expires_at", &expires) || (juser && !sq_valid_id(user)))
        return DRV_INVAL;
    drv_err e = drv_sq_random_id(&s->sq, "tok_", TOKEN_ID_CHARS, id, sizeof(id));
    if (e != DRV_OK)
        return e;

    int64_t now = drv_store_now_ms();
    drv_scope sc = {.tenant = tenant};
    sqlite3_stmt *stmt = NULL;
    e = sq_begin(s);
    if (e == DRV_OK)
        e = tenant ? sq_scoped(s, &sc, SQ_TOKEN_INSERT, &stmt)
                   : drv_sq_unscoped(&s->sq, SQ_TOKEN_INSERT_PLATFORM, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, id);
        drv_sq_bind_text(stmt, 3, name);
        drv_sq_bind_text(stmt, 4, role);
        drv_sq_bind_text(stmt, 5, scopes);
        drv_sq_bind_text(stmt, 6, user);
        sqlite3_bind_blob(stmt, 7, sha256, 32, SQLITE_TRANSIENT);
        sqlite3_bind_int64(stmt, 8, now);
        drv_sq_bind_time(stmt, 9, expires);
        e = drv_sq_run(&s->sq, stmt, "token insert");
    }
    if (e == DRV_OK)
        e = sq_commit(s);
    if (e != DRV_OK) {
        sq_rollback(s);
        return e;
    }
    json_t *t = json_object();
    bool ok = t && drv_sq_set(t, "id", json_string(id)) &&
              drv_sq_set(t, "tenant", tenant ? json_string(tenant) : json_null()) &&
              drv_sq_set(t, "name", json_string(name)) &&
              drv_sq_set(t, "role", json_string(role)) &&
              drv_sq_set(t, "scopes", sq_split_scopes(scopes)) &&
              (!user || drv_sq_set(t, "user", json_string(user))) &&
              drv_sq_set(t, "created_at", drv_sq_time_json(now)) &&
              drv_sq_set(t, "expires_at", drv_sq_time_json(expires)) &&
              drv_sq_set(t, "revoked_at", json_null());
    if (!ok) {
        json_decref(t);
        return DRV_NOMEM; /* the token exists; the caller may list it */
    }
    *out = t;
    return DRV_OK;
}

/* The id to continue a token list after ("" for the first page). */
static drv_err token_page(const drv_page *pg, uint32_t *limit, char after[40])
{
    after[0] = '\0';
    if (sq_page_limit(pg, limit) != DRV_OK)
        return DRV_INVAL;
    if (pg && pg->cursor && drv_sq_cursor_decode(pg->cursor, after, 40) != DRV_OK)
        return DRV_INVAL;
    return DRV_OK;
}

drv_err sq_token_list(drv_store *st, const drv_scope *sc, const drv_page *pg, json_t **out)
{
    sq_store *s = sq_of(st);
    uint32_t limit;
    char after[40];
    *out = NULL;
    if (token_page(pg, &limit, after) != DRV_OK)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_TOKEN_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, after);
    sqlite3_bind_int64(stmt, 3, (int64_t)limit + 1);
    return drv_sq_collect(&s->sq, stmt, limit, DRV_SQ_TEXT_KEY(0), token_row, out);
}

drv_err sq_platform_token_list(drv_store *st, const drv_page *pg, json_t **out)
{
    sq_store *s = sq_of(st);
    uint32_t limit;
    char after[40];
    *out = NULL;
    if (token_page(pg, &limit, after) != DRV_OK)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_TOKEN_LIST_PLATFORM, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, after);
    sqlite3_bind_int64(stmt, 3, (int64_t)limit + 1);
    return drv_sq_collect(&s->sq, stmt, limit, DRV_SQ_TEXT_KEY(0), token_row, out);
}

/* Revoke token id of the scope's tenant, or a platform token when sc is NULL. */
static drv_err token_revoke(sq_store *s, const drv_scope *sc, const char *id)
{
    if (!id || !*id)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_begin(s);
    if (e == DRV_OK)
        e = sc ? sq_scoped(s, sc, SQ_TOKEN_REVOKE, &stmt)
               : drv_sq_unscoped(&s->sq, SQ_TOKEN_REVOKE_PLATFORM, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, id);
        sqlite3_bind_int64(stmt, 3, drv_store_now_ms());
        e = drv_sq_run(&s->sq, stmt, "token revoke");
    }
    if (e == DRV_OK && sqlite3_changes(s->sq.db) == 0)
        e = DRV_NOTFOUND;
    return sq_end(s, e);
}

drv_err sq_token_revoke(drv_store *st, const drv_scope *sc, const char *id)
{
    if (!sc)
        return DRV_INVAL; /* NULL means "platform" to token_revoke() */
    return token_revoke(sq_of(st), sc, id);
}

drv_err sq_platform_token_revoke(drv_store *st, const char *id)
{
    return token_revoke(sq_of(st), NULL, id);
}

drv_err sq_lookup_token(drv_store *st, const uint8_t sha256[32], drv_token_info *out)
{
    sq_store *s = sq_of(st);
    memset(out, 0, sizeof(*out));
    if (!sha256)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_TOKEN_LOOKUP, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_blob(stmt, 1, sha256, 32, SQLITE_TRANSIENT);
    e = drv_sq_step(&s->sq, stmt, "token lookup");
    if (e == DRV_OK) {
        /* token_create bounded every field to its struct member. */
        if (!drv_sq_copy_str(out->id, sizeof(out->id), drv_sq_col_text(stmt, 0)) ||
            !drv_sq_copy_str(out->tenant, sizeof(out->tenant), drv_sq_col_text(stmt, 1)) ||
            !drv_sq_copy_str(out->role, sizeof(out->role), drv_sq_col_text(stmt, 2)) ||
            !drv_sq_copy_str(out->scopes, sizeof(out->scopes), drv_sq_col_text(stmt, 3)))
            e = DRV_CORRUPT;
        out->expires_ms = sqlite3_column_int64(stmt, 4);
        out->revoked = sqlite3_column_type(stmt, 5) != SQLITE_NULL;
    }
    drv_sq_reset(stmt);
    if (e != DRV_OK)
        memset(out, 0, sizeof(*out));
    return e;
}

drv_err sq_platform_token_count(drv_store *st, int64_t *out)
{
    sq_store *s = sq_of(st);
    *out = 0;
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_TOKEN_COUNT_PLATFORM, &stmt);
    if (e != DRV_OK)
        return e;
    return drv_sq_step_int(&s->sq, stmt, "token count", out);
}

/* -- credentials ----------------------------------------------------------------- */

/* A SHA-256 fingerprint: 64 hex digits, written lower-case to out[65]. */
static bool fingerprint_norm(const char *fp, char out[65])
{
    if (!fp || strlen(fp) != 64)
        return false;
    for (int i = 0; i < 64; i++) {
        char c = fp[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        out[i] = c;
    }
    out[64] = '\0';
    return true;
}

/* The secret material of a credential document, checked against its kind:
 * exactly the one field the kind uses. */
typedef struct cred_fields {
    const char *kind;
    const char *secret_hash;
    const char *public_key_pem;
    char fingerprint[65];
    bool has_fingerprint;
    int64_t not_after;
} cred_fields;

static bool cred_parse(json_t *doc, cred_fields *c)
{
    memset(c, 0, sizeof(*c));
    if (!json_is_object(doc))
        return false;
    c->kind = json_string_value(json_object_get(doc, "kind"));
    json_t *hash = json_object_get(doc, "secret_hash");
    json_t *fp = json_object_get(doc, "fingerprint");
    json_t *pem = json_object_get(doc, "public_key_pem");
    if (!c->kind || !opt_time(doc, "not_after", &c->not_after))
        return false;
    if (strcmp(c->kind, "secret") == 0) {
        c->secret_hash = json_string_value(hash);
        return c->secret_hash && *c->secret_hash && strlen(c->secret_hash) <= SECRET_HASH_MAX &&
               !fp && !pem;
    }
    if (strcmp(c->kind, "x509") == 0) {
        c->has_fingerprint = fingerprint_norm(json_string_value(fp), c->fingerprint);
        return c->has_fingerprint && !hash && !pem;
    }
    if (strcmp(c->kind, "jwt_key") == 0) {
        c->public_key_pem = json_string_value(pem);
        return c->public_key_pem && strncmp(c->public_key_pem, "-----BEGIN ", 11) == 0 &&
               strlen(c->public_key_pem) <= PUBLIC_KEY_MAX && !hash && !fp;
    }
    return false;
}

/* Credential metadata from a row of SQ_CRED_LIST: no secret material. */
static drv_err cred_row(drv_sq *sq, sqlite3_stmt *stmt, json_t **item)
{
    json_t *c = json_object();
    bool ok = c && drv_sq_set(c, "id", json_string(drv_sq_col_text(stmt, 0))) &&
              drv_sq_set(c, "device", json_string(drv_sq_col_text(stmt, 6))) &&
              drv_sq_set(c, "kind", json_string(drv_sq_col_text(stmt, 1))) &&
              (sqlite3_column_type(stmt, 2) == SQLITE_NULL ||
               drv_sq_set(c, "fingerprint", json_string(drv_sq_col_text(stmt, 2)))) &&
              drv_sq_set(c, "not_after", drv_sq_time_json(sqlite3_column_int64(stmt, 3))) &&
              drv_sq_set(c, "created_at", drv_sq_time_json(sqlite3_column_int64(stmt, 4))) &&
              drv_sq_set(c, "revoked_at", drv_sq_time_json(sqlite3_column_int64(stmt, 5)));
    if (!ok) {
        json_decref(c);
        return DRV_NOMEM;
    }
    *item = c;
    return DRV_OK;
}

drv_err sq_credential_add(drv_store *st, const drv_scope *sc, const char *device, json_t *doc,
                          json_t **out)
{
    sq_store *s = sq_of(st);
    cred_fields f;
    char id[40];
    *out = NULL;
    if (!cred_parse(doc, &f))
        return DRV_INVAL;
    drv_err e = drv_sq_random_id(&s->sq, "cred_", CRED_ID_CHARS, id, sizeof(id));
    if (e != DRV_OK)
        return e;
    int64_t now = drv_store_now_ms();
    sqlite3_stmt *stmt = NULL;
    e = sq_begin(s);
    if (e == DRV_OK)
        e = sq_device_exists(s, sc, device);
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_CRED_LIVE_COUNT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, device);
        e = drv_sq_step(&s->sq, stmt, "credential count");
        if (e == DRV_OK && sqlite3_column_int64(stmt, 0) >= DRV_STORE_CRED_MAX)
            e = DRV_LIMIT;
        drv_sq_reset(stmt);
    }
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_CRED_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, id);
        drv_sq_bind_text(stmt, 3, device);
        drv_sq_bind_text(stmt, 4, f.kind);
        drv_sq_bind_text(stmt, 5, f.secret_hash);
        drv_sq_bind_text(stmt, 6, f.has_fingerprint ? f.fingerprint : NULL);
        drv_sq_bind_text(stmt, 7, f.public_key_pem);
        drv_sq_bind_time(stmt, 8, f.not_after);
        sqlite3_bind_int64(stmt, 9, now);
        e = drv_sq_run(&s->sq, stmt, "credential insert");
    }
    if (e == DRV_OK)
        e = sq_commit(s);
    if (e != DRV_OK) {
        sq_rollback(s);
        return e;
    }
    json_t *c = json_object();
    bool ok = c && drv_sq_set(c, "id", json_string(id)) &&
              drv_sq_set(c, "device", json_string(device)) &&
              drv_sq_set(c, "kind", json_string(f.kind)) &&
              (!f.has_fingerprint || drv_sq_set(c, "fingerprint", json_string(f.fingerprint))) &&
              drv_sq_set(c, "not_after", drv_sq_time_json(f.not_after)) &&
              drv_sq_set(c, "created_at", drv_sq_time_json(now)) &&
              drv_sq_set(c, "revoked_at", json_null());
    if (!ok) {
        json_decref(c);
        return DRV_NOMEM;
    }
    *out = c;
    return DRV_OK;
}

drv_err sq_credential_list(drv_store *st, const drv_scope *sc, const char *device, json_t **out)
{
    sq_store *s = sq_of(st);
    *out = NULL;
    drv_err e = sq_device_exists(s, sc, device);
    if (e != DRV_OK)
        return e;
    sqlite3_stmt *stmt = NULL;
    e = sq_scoped(s, sc, SQ_CRED_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, device);
    return drv_sq_collect(&s->sq, stmt, UINT32_MAX, DRV_SQ_TEXT_KEY(0), cred_row, out);
}

drv_err sq_credential_revoke(drv_store *st, const drv_scope *sc, const char *device, const char *id)
{
    sq_store *s = sq_of(st);
    if (!sq_valid_id(device) || !id || !*id)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_begin(s);
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_CRED_REVOKE, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, device);
        drv_sq_bind_text(stmt, 3, id);
        sqlite3_bind_int64(stmt, 4, drv_store_now_ms());
        e = drv_sq_run(&s->sq, stmt, "credential revoke");
    }
    if (e == DRV_OK && sqlite3_changes(s->sq.db) == 0)
        e = DRV_NOTFOUND;
    return sq_end(s, e);
}

drv_err sq_credential_revoke_all(drv_store *st, const drv_scope *sc, const char *device)
{
    sq_store *s = sq_of(st);
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_begin(s);
    if (e == DRV_OK)
        e = sq_device_exists(s, sc, device);
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_CRED_REVOKE_ALL, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, device);
        sqlite3_bind_int64(stmt, 3, drv_store_now_ms());
        e = drv_sq_run(&s->sq, stmt, "credential revoke all");
    }
    return sq_end(s, e);
}

/* Fill c from a row of CRED_LOOKUP (store_sqlite_sql.c). */
static drv_err cred_fill(sqlite3_stmt *stmt, drv_credential *c)
{
    memset(c, 0, sizeof(*c));
    if (!drv_sq_copy_str(c->tenant, sizeof(c->tenant), drv_sq_col_text(stmt, 0)) ||
        !drv_sq_copy_str(c->device, sizeof(c->device), drv_sq_col_text(stmt, 1)) ||
        !drv_sq_copy_str(c->id, sizeof(c->id), drv_sq_col_text(stmt, 2)) ||
        !drv_sq_copy_str(c->kind, sizeof(c->kind), drv_sq_col_text(stmt, 3)) ||
        !drv_sq_copy_str(c->fingerprint, sizeof(c->fingerprint), drv_sq_col_text(stmt, 6)))
        return DRV_CORRUPT;
    if (sqlite3_column_type(stmt, 4) != SQLITE_NULL &&
        !(c->secret_hash = drv_strdup(drv_sq_col_text(stmt, 4))))
        return DRV_NOMEM;
    if (sqlite3_column_type(stmt, 5) != SQLITE_NULL &&
        !(c->public_key_pem = drv_strdup(drv_sq_col_text(stmt, 5)))) {
        drv_credential_clear(c);
        return DRV_NOMEM;
    }
    c->not_after_ms = sqlite3_column_int64(stmt, 7);
    c->device_active = strcmp(drv_sq_col_text(stmt, 8), "decommissioned") != 0;
    return DRV_OK;
}

drv_err sq_lookup_credentials(drv_store *st, const char *tenant, const char *device,
                              drv_credential *out, size_t max, size_t *n)
{
    sq_store *s = sq_of(st);
    *n = 0;
    if (!sq_valid_id(device) || (max > 0 && !out))
        return DRV_INVAL;
    drv_scope sc = {.tenant = tenant};
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, &sc, SQ_CRED_LOOKUP, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, device);
    sqlite3_bind_int64(stmt, 3, drv_store_now_ms());
    sqlite3_bind_int64(stmt, 4, (int64_t)(max < INT32_MAX ? max : INT32_MAX));
    size_t got = 0;
    while (got < max && (e = drv_sq_step(&s->sq, stmt, "credential lookup")) == DRV_OK) {
        e = cred_fill(stmt, &out[got]);
        if (e != DRV_OK)
            break;
        got++;
    }
    drv_sq_reset(stmt);
    if (e != DRV_OK && e != DRV_NOTFOUND) {
        for (size_t i = 0; i < got; i++)
            drv_credential_clear(&out[i]);
        return e;
    }
    *n = got;
    return DRV_OK;
}

drv_err sq_lookup_fingerprint(drv_store *st, const char *fingerprint, drv_credential *out)
{
    sq_store *s = sq_of(st);
    char fp[65];
    memset(out, 0, sizeof(*out));
    if (!fingerprint_norm(fingerprint, fp))
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_CRED_LOOKUP_FINGERPRINT, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 1, fp);
    sqlite3_bind_int64(stmt, 2, drv_store_now_ms());
    e = drv_sq_step(&s->sq, stmt, "fingerprint lookup");
    if (e == DRV_OK)
        e = cred_fill(stmt, out);
    drv_sq_reset(stmt);
    return e;
}
