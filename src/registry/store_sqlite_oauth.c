/*
 * store_sqlite_oauth.c — OAuth 2.0 clients and the API's signing keys in the
 * SQLite store (ADR-0010).
 *
 * An OAuth client belongs to one tenant and is managed like an API token: its
 * random secret is shown once by the API and only its SHA-256 is stored;
 * listings never return the digest.  lookup_oauth_client is the one unscoped
 * read, by the client_id's primary key, for the token endpoint and for the
 * revocation check on every JWT-authenticated request.
 *
 * Signing keys are platform state with no tenant.  Exactly one key is active
 * (a partial unique index); adding a key retires the active one in the same
 * transaction: it stops signing, keeps verifying until the time the caller
 * gives (when every token it signed has expired), and its private key is
 * erased from the row.  Keys past that time are deleted on the next add.
 * Only platform_signing_key_active returns private key material.
 */
#include "registry/store_int.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"

#define CLIENT_ID_CHARS 20
#define PRIVATE_KEY_MAX 8192
#define PUBLIC_JWK_MAX 4096

/* -- OAuth clients ----------------------------------------------------------------- */

/* Client metadata from a row of SQ_OAUTH_CLIENT_LIST: no secret digest. */
static drv_err client_row(drv_sq *sq, sqlite3_stmt *stmt, json_t **item)
{
    json_t *c = json_object();
    bool ok = c && drv_sq_set(c, "client_id", json_string(drv_sq_col_text(stmt, 0))) &&
              drv_sq_set(c, "tenant", json_string(drv_sq_col_text(stmt, 1))) &&
              drv_sq_set(c, "name", json_string(drv_sq_col_text(stmt, 2))) &&
              drv_sq_set(c, "role", json_string(drv_sq_col_text(stmt, 3))) &&
              drv_sq_set(c, "scopes", sq_split_scopes(drv_sq_col_text(stmt, 4))) &&
              drv_sq_set(c, "created_at", drv_sq_time_json(sqlite3_column_int64(stmt, 5))) &&
              drv_sq_set(c, "revoked_at", drv_sq_time_json(sqlite3_column_int64(stmt, 6)));
    if (!ok) {
        json_decref(c);
        return DRV_NOMEM;
    }
    *item = c;
    return DRV_OK;
}

drv_err sq_oauth_client_create(drv_store *st, const drv_scope *sc, json_t *doc,
                               const uint8_t sha256[32], json_t **out)
{
    sq_store *s = sq_of(st);
    char id[40], scopes[DRV_SCOPES_MAX];
    *out = NULL;
    if (!json_is_object(doc) || !sha256)
        return DRV_INVAL;
    const char *name = json_string_value(json_object_get(doc, "name"));
    const char *role = json_string_value(json_object_get(doc, "role"));
    if (!name || !*name || !sq_valid_role(role, false) ||
        !sq_join_scopes(json_object_get(doc, "scopes"), scopes, sizeof(scopes)))
        return DRV_INVAL;
    drv_err e = drv_sq_random_id(&s->sq, "oc_", CLIENT_ID_CHARS, id, sizeof(id));
    if (e != DRV_OK)
        return e;
    int64_t now = drv_store_now_ms();
    sqlite3_stmt *stmt = NULL;
    e = sq_begin(s);
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_OAUTH_CLIENT_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, id);
        drv_sq_bind_text(stmt, 3, name);
        drv_sq_bind_text(stmt, 4, role);
        drv_sq_bind_text(stmt, 5, scopes);
        sqlite3_bind_blob(stmt, 6, sha256, 32, SQLITE_TRANSIENT);
        sqlite3_bind_int64(stmt, 7, now);
        e = drv_sq_run(&s->sq, stmt, "oauth client insert");
    }
    if (e == DRV_OK)
        e = sq_commit(s);
    if (e != DRV_OK) {
        sq_rollback(s);
        return e;
    }
    json_t *c = json_object();
    bool ok = c && drv_sq_set(c, "client_id", json_string(id)) &&
              drv_sq_set(c, "tenant", json_string(sc->tenant)) &&
              drv_sq_set(c, "name", json_string(name)) &&
              drv_sq_set(c, "role", json_string(role)) &&
              drv_sq_set(c, "scopes", sq_split_scopes(scopes)) &&
              drv_sq_set(c, "created_at", drv_sq_time_json(now)) &&
              drv_sq_set(c, "revoked_at", json_null());
    if (!ok) {
        json_decref(c);
        return DRV_NOMEM; /* the client exists; the caller may list it */
    }
    *out = c;
    return DRV_OK;
}

drv_err sq_oauth_client_list(drv_store *st, const drv_scope *sc, const drv_page *pg, json_t **out)
{
    sq_store *s = sq_of(st);
    uint32_t limit;
    char after[40] = "";
    *out = NULL;
    if (sq_page_limit(pg, &limit) != DRV_OK ||
        (pg && pg->cursor && drv_sq_cursor_decode(pg->cursor, after, sizeof(after)) != DRV_OK))
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_OAUTH_CLIENT_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, after);
    sqlite3_bind_int64(stmt, 3, (int64_t)limit + 1);
    return drv_sq_collect(&s->sq, stmt, limit, DRV_SQ_TEXT_KEY(0), client_row, out);
}

drv_err sq_oauth_client_revoke(drv_store *st, const drv_scope *sc, const char *client_id)
{
    sq_store *s = sq_of(st);
    if (!client_id || !*client_id)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_begin(s);
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_OAUTH_CLIENT_REVOKE, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, client_id);
        sqlite3_bind_int64(stmt, 3, drv_store_now_ms());
        e = drv_sq_run(&s->sq, stmt, "oauth client revoke");
    }
    if (e == DRV_OK && sqlite3_changes(s->sq.db) == 0)
        e = DRV_NOTFOUND;
    return sq_end(s, e);
}

drv_err sq_lookup_oauth_client(drv_store *st, const char *client_id, drv_oauth_client *out)
{
    sq_store *s = sq_of(st);
    memset(out, 0, sizeof(*out));
    if (!client_id || !*client_id)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_OAUTH_CLIENT_LOOKUP, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 1, client_id);
    e = drv_sq_step(&s->sq, stmt, "oauth client lookup");
    if (e == DRV_OK) {
        /* oauth_client_create bounded every field to its struct member. */
        if (!drv_sq_copy_str(out->id, sizeof(out->id), drv_sq_col_text(stmt, 0)) ||
            !drv_sq_copy_str(out->tenant, sizeof(out->tenant), drv_sq_col_text(stmt, 1)) ||
            !drv_sq_copy_str(out->role, sizeof(out->role), drv_sq_col_text(stmt, 2)) ||
            !drv_sq_copy_str(out->scopes, sizeof(out->scopes), drv_sq_col_text(stmt, 3)) ||
            sqlite3_column_bytes(stmt, 4) != 32)
            e = DRV_CORRUPT;
        else
            memcpy(out->secret_sha256, sqlite3_column_blob(stmt, 4), 32);
        out->revoked = sqlite3_column_type(stmt, 5) != SQLITE_NULL;
    }
    drv_sq_reset(stmt);
    if (e != DRV_OK)
        memset(out, 0, sizeof(*out));
    return e;
}

/* -- signing keys ------------------------------------------------------------------ */

void drv_signing_key_clear(drv_signing_key *k)
{
    if (!k)
        return;
    if (k->private_key_pem)
        OPENSSL_cleanse(k->private_key_pem, strlen(k->private_key_pem));
    drv_free(k->private_key_pem);
    drv_free(k->public_jwk);
    memset(k, 0, sizeof(*k));
}

static bool key_text_ok(const char *s, size_t max)
{
    return s && *s && strlen(s) <= max;
}

drv_err sq_signing_key_add(drv_store *st, const drv_signing_key *key, int64_t retire_prev_ms)
{
    sq_store *s = sq_of(st);
    if (!key || !sq_valid_id(key->kid) || strcmp(key->alg, "ES256") != 0 ||
        !key_text_ok(key->private_key_pem, PRIVATE_KEY_MAX) ||
        !key_text_ok(key->public_jwk, PUBLIC_JWK_MAX) || retire_prev_ms <= 0)
        return DRV_INVAL;
    int64_t now = drv_store_now_ms();
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_begin(s);
    if (e == DRV_OK)
        e = drv_sq_unscoped(&s->sq, SQ_SIGNING_KEY_PURGE, &stmt);
    if (e == DRV_OK) {
        sqlite3_bind_int64(stmt, 1, now);
        e = drv_sq_run(&s->sq, stmt, "signing key purge");
    }
    if (e == DRV_OK)
        e = drv_sq_unscoped(&s->sq, SQ_SIGNING_KEY_RETIRE, &stmt);
    if (e == DRV_OK) {
        sqlite3_bind_int64(stmt, 1, retire_prev_ms);
        e = drv_sq_run(&s->sq, stmt, "signing key retire");
    }
    if (e == DRV_OK)
        e = drv_sq_unscoped(&s->sq, SQ_SIGNING_KEY_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 1, key->kid);
        drv_sq_bind_text(stmt, 2, key->alg);
        drv_sq_bind_text(stmt, 3, key->private_key_pem);
        drv_sq_bind_text(stmt, 4, key->public_jwk);
        sqlite3_bind_int64(stmt, 5, now);
        e = drv_sq_run(&s->sq, stmt, "signing key insert");
    }
    return sq_end(s, e);
}

/* Public parts of a row of SQ_SIGNING_KEY_LIST. */
static drv_err key_row(drv_sq *sq, sqlite3_stmt *stmt, json_t **item)
{
    json_t *jwk = NULL;
    drv_err e = drv_sq_json_col(sq, stmt, 2, &jwk);
    if (e != DRV_OK)
        return e;
    json_t *k = json_object();
    bool ok = k && jwk && drv_sq_set(k, "kid", json_string(drv_sq_col_text(stmt, 0))) &&
              drv_sq_set(k, "alg", json_string(drv_sq_col_text(stmt, 1))) &&
              drv_sq_set(k, "created_at", drv_sq_time_json(sqlite3_column_int64(stmt, 3))) &&
              drv_sq_set(k, "active", json_boolean(sqlite3_column_int(stmt, 5) != 0)) &&
              drv_sq_set(k, "retires_at", drv_sq_time_json(sqlite3_column_int64(stmt, 4))) &&
              drv_sq_set(k, "jwk", jwk);
    jwk = NULL; /* stolen by drv_sq_set, or released by it on failure */
    if (!ok) {
        json_decref(k);
        return DRV_NOMEM;
    }
    *item = k;
    return DRV_OK;
}

drv_err sq_signing_key_list(drv_store *st, json_t **out)
{
    sq_store *s = sq_of(st);
    *out = NULL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_SIGNING_KEY_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    return drv_sq_collect(&s->sq, stmt, UINT32_MAX, DRV_SQ_TEXT_KEY(0), key_row, out);
}

drv_err sq_signing_key_public(drv_store *st, drv_signing_key *out, size_t max, size_t *n)
{
    sq_store *s = sq_of(st);
    *n = 0;
    if (max > 0 && !out)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_SIGNING_KEY_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    size_t got = 0;
    while (got < max && (e = drv_sq_step(&s->sq, stmt, "signing key list")) == DRV_OK) {
        drv_signing_key *k = &out[got];
        memset(k, 0, sizeof(*k));
        if (!drv_sq_copy_str(k->kid, sizeof(k->kid), drv_sq_col_text(stmt, 0)) ||
            !drv_sq_copy_str(k->alg, sizeof(k->alg), drv_sq_col_text(stmt, 1))) {
            e = DRV_CORRUPT;
            break;
        }
        k->public_jwk = drv_strdup(drv_sq_col_text(stmt, 2));
        if (!k->public_jwk) {
            e = DRV_NOMEM;
            break;
        }
        k->created_ms = sqlite3_column_int64(stmt, 3);
        k->not_after_ms = sqlite3_column_int64(stmt, 4);
        k->active = sqlite3_column_int(stmt, 5) != 0;
        got++;
    }
    drv_sq_reset(stmt);
    if (e != DRV_OK && e != DRV_NOTFOUND) {
        /* The entry being filled owns nothing yet (its strdup failed or
         * never ran); the ones before it do. */
        for (size_t i = 0; i < got; i++)
            drv_signing_key_clear(&out[i]);
        return e;
    }
    *n = got;
    return DRV_OK;
}

drv_err sq_signing_key_active(drv_store *st, drv_signing_key *out)
{
    sq_store *s = sq_of(st);
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_SIGNING_KEY_ACTIVE, &stmt);
    if (e != DRV_OK)
        return e;
    e = drv_sq_step(&s->sq, stmt, "signing key active");
    if (e == DRV_OK) {
        if (!drv_sq_copy_str(out->kid, sizeof(out->kid), drv_sq_col_text(stmt, 0)) ||
            !drv_sq_copy_str(out->alg, sizeof(out->alg), drv_sq_col_text(stmt, 1)))
            e = DRV_CORRUPT;
        else if (!(out->private_key_pem = drv_strdup(drv_sq_col_text(stmt, 2))) ||
                 !(out->public_jwk = drv_strdup(drv_sq_col_text(stmt, 3))))
            e = DRV_NOMEM;
        out->created_ms = sqlite3_column_int64(stmt, 4);
        out->active = true;
    }
    drv_sq_reset(stmt);
    if (e != DRV_OK)
        drv_signing_key_clear(out);
    return e;
}
