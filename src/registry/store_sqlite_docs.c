/*
 * store_sqlite_docs.c — tenants (platform scope) and tenant resources kept as
 * JSON documents, in the SQLite store.
 *
 * A stored document is the caller's object with the store's bookkeeping
 * fields written over it: "id" (and "tenant") first, then the caller's
 * fields minus the ones the store owns, then "version", "created_at" and
 * "updated_at".  A device's "connectivity" is owned too: event_append keeps
 * it (store_sqlite_log.c) and doc_replace carries it over untouched.
 *
 * Every document id is reserved (reserved_ids) in the same transaction that
 * creates it and stays reserved after deletion, so an id never names two
 * different things over time.  Tenants are only ever marked deleted.
 */
#include "registry/store_int.h"

#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"

#define ID_CHARS 20

static const char *const tenant_owned[] = {"id",         "status",     "version",
                                           "created_at", "updated_at", NULL};
static const char *const doc_owned[] = {"id",         "tenant",     "version",
                                        "created_at", "updated_at", NULL};
static const char *const device_owned[] = {"id",         "tenant",       "version", "created_at",
                                           "updated_at", "connectivity", NULL};

static bool in_list(const char *key, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(key, *list) == 0)
            return true;
    return false;
}

/* Copy src's fields except the skipped ones (deep, so the stored form shares
 * nothing with the caller's object). */
static bool copy_fields(json_t *dst, json_t *src, const char *const *skip)
{
    const char *key;
    json_t *v;
    json_object_foreach(src, key, v)
    {
        if (!in_list(key, skip) && !drv_sq_set(dst, key, json_deep_copy(v)))
            return false;
    }
    return true;
}

static bool set_bookkeeping(json_t *dst, int64_t version, int64_t created, int64_t updated)
{
    return drv_sq_set(dst, "version", json_integer(version)) &&
           drv_sq_set(dst, "created_at", drv_sq_time_json(created)) &&
           drv_sq_set(dst, "updated_at", drv_sq_time_json(updated));
}

/* Decode a list cursor into the id to continue after ("" for the first page). */
static drv_err cursor_id(const drv_page *pg, char *after, size_t cap)
{
    after[0] = '\0';
    if (!pg || !pg->cursor)
        return DRV_OK;
    if (drv_sq_cursor_decode(pg->cursor, after, cap) != DRV_OK || !sq_valid_id(after))
        return DRV_INVAL;
    return DRV_OK;
}

/* Item of a list whose second column is the stored document. */
static drv_err doc_row(drv_sq *sq, sqlite3_stmt *stmt, json_t **item)
{
    drv_err e = drv_sq_json_col(sq, stmt, 1, item);
    if (e == DRV_OK && !*item)
        e = DRV_CORRUPT;
    return e;
}

/* -- tenants ------------------------------------------------------------------ */

/* The stored form of a tenant. */
static json_t *tenant_form(const char *id, json_t *src, const char *status, int64_t version,
                           int64_t created, int64_t updated)
{
    json_t *t = json_object();
    if (!t || !drv_sq_set(t, "id", json_string(id)) || !copy_fields(t, src, tenant_owned) ||
        !drv_sq_set(t, "status", json_string(status)) ||
        !set_bookkeeping(t, version, created, updated)) {
        json_decref(t);
        return NULL;
    }
    return t;
}

/* Write a tenant's row: insert (old_version 0) or update from old_version. */
static drv_err tenant_write(sq_store *s, const char *id, json_t *t, const char *status,
                            int64_t version, int64_t created, int64_t updated, int64_t old_version)
{
    char *text = NULL;
    drv_err e = drv_sq_json_dump(t, DRV_STORE_DOC_MAX, &text);
    if (e != DRV_OK)
        return e;
    sqlite3_stmt *stmt = NULL;
    if (old_version == 0) {
        e = drv_sq_unscoped(&s->sq, SQ_TENANT_INSERT, &stmt);
        if (e == DRV_OK) {
            drv_sq_bind_text(stmt, 1, id);
            drv_sq_bind_text(stmt, 2, status);
            sqlite3_bind_int64(stmt, 3, version);
            drv_sq_bind_text(stmt, 4, text);
            sqlite3_bind_int64(stmt, 5, created);
            sqlite3_bind_int64(stmt, 6, updated);
            e = drv_sq_run(&s->sq, stmt, "tenant insert");
        }
    } else {
        e = drv_sq_unscoped(&s->sq, SQ_TENANT_UPDATE, &stmt);
        if (e == DRV_OK) {
            drv_sq_bind_text(stmt, 1, id);
            drv_sq_bind_text(stmt, 2, status);
            sqlite3_bind_int64(stmt, 3, version);
            drv_sq_bind_text(stmt, 4, text);
            sqlite3_bind_int64(stmt, 5, updated);
            sqlite3_bind_int64(stmt, 6, old_version);
            e = drv_sq_run(&s->sq, stmt, "tenant update");
        }
        /* The version was read in this transaction, so it cannot differ. */
        if (e == DRV_OK && sqlite3_changes(s->sq.db) != 1)
            e = DRV_CONFLICT;
    }
    drv_free(text);
    return e;
}

drv_err sq_tenant_create(drv_store *st, json_t *doc, json_t **out)
{
    sq_store *s = sq_of(st);
    *out = NULL;
    if (!json_is_object(doc) || !json_is_string(json_object_get(doc, "name")))
        return DRV_INVAL;
    char id[64];
    json_t *jid = json_object_get(doc, "id");
    if (jid) {
        if (!json_is_string(jid) || !sq_valid_tenant_id(json_string_value(jid)))
            return DRV_INVAL;
        snprintf(id, sizeof(id), "%s", json_string_value(jid));
    } else {
        drv_err e = drv_sq_random_id(&s->sq, "", ID_CHARS, id, sizeof(id));
        if (e != DRV_OK)
            return e;
    }
    int64_t now = drv_store_now_ms();
    json_t *t = tenant_form(id, doc, "active", 1, now, now);
    if (!t)
        return DRV_NOMEM;
    drv_err e = sq_begin(s);
    if (e == DRV_OK)
        e = tenant_write(s, id, t, "active", 1, now, now, 0);
    if (e == DRV_OK)
        e = sq_commit(s);
    if (e != DRV_OK) {
        sq_rollback(s);
        json_decref(t);
        return e;
    }
    *out = t;
    return DRV_OK;
}

/* Read a tenant row: its status, version, creation time and document. */
static drv_err tenant_read(sq_store *s, const char *id, char status[16], int64_t *version,
                           int64_t *created, json_t **doc)
{
    if (!sq_valid_tenant_id(id))
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_TENANT_GET, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 1, id);
    e = drv_sq_step(&s->sq, stmt, "tenant get");
    if (e == DRV_OK) {
        snprintf(status, 16, "%s", drv_sq_col_text(stmt, 0));
        *version = sqlite3_column_int64(stmt, 1);
        *created = sqlite3_column_int64(stmt, 3);
        e = drv_sq_json_col(&s->sq, stmt, 2, doc);
        if (e == DRV_OK && !*doc)
            e = DRV_CORRUPT;
    }
    drv_sq_reset(stmt);
    return e;
}

drv_err sq_tenant_get(drv_store *st, const char *id, json_t **out)
{
    char status[16];
    int64_t version, created;
    *out = NULL;
    return tenant_read(sq_of(st), id, status, &version, &created, out);
}

drv_err sq_tenant_list(drv_store *st, const drv_page *pg, json_t **out)
{
    sq_store *s = sq_of(st);
    char after[64];
    uint32_t limit;
    *out = NULL;
    if (sq_page_limit(pg, &limit) != DRV_OK || cursor_id(pg, after, sizeof(after)) != DRV_OK)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_TENANT_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 1, after);
    sqlite3_bind_int64(stmt, 2, (int64_t)limit + 1);
    return drv_sq_collect(&s->sq, stmt, limit, DRV_SQ_TEXT_KEY(0), doc_row, out);
}

/* Update (doc non-NULL) or mark deleted (doc NULL) a tenant that is not deleted. */
static drv_err tenant_change(sq_store *s, const char *id, json_t *doc, int64_t expected,
                             json_t **out)
{
    char status[16];
    int64_t version = 0, created = 0;
    json_t *old = NULL, *t = NULL;
    drv_err e = sq_begin(s);
    if (e == DRV_OK)
        e = tenant_read(s, id, status, &version, &created, &old);
    if (e != DRV_OK)
        goto out_rollback;
    if (strcmp(status, "deleted") == 0) {
        e = DRV_NOTFOUND;
        goto out_rollback;
    }
    if (expected != 0 && expected != version) {
        e = DRV_CONFLICT;
        goto out_rollback;
    }
    const char *new_status = "deleted";
    if (doc) {
        json_t *js = json_object_get(doc, "status");
        new_status = js ? json_string_value(js) : status;
        if (!new_status || (strcmp(new_status, "active") != 0 && strcmp(new_status, "suspended")))
            new_status = NULL;
    }
    if (!new_status) {
        e = DRV_INVAL;
        goto out_rollback;
    }
    int64_t now = drv_store_now_ms();
    t = tenant_form(id, doc ? doc : old, new_status, version + 1, created, now);
    if (!t) {
        e = DRV_NOMEM;
        goto out_rollback;
    }
    e = tenant_write(s, id, t, new_status, version + 1, created, now, version);
    if (e == DRV_OK)
        e = sq_commit(s);
    if (e != DRV_OK)
        goto out_rollback;
    json_decref(old);
    if (out)
        *out = t;
    else
        json_decref(t);
    return DRV_OK;

out_rollback:
    sq_rollback(s);
    json_decref(old);
    json_decref(t);
    return e;
}

drv_err sq_tenant_update(drv_store *st, const char *id, json_t *doc, int64_t expected_version,
                         json_t **out)
{
    *out = NULL;
    if (!json_is_object(doc) || !json_is_string(json_object_get(doc, "name")) ||
        expected_version < 0)
        return DRV_INVAL;
    return tenant_change(sq_of(st), id, doc, expected_version, out);
}

drv_err sq_tenant_delete(drv_store *st, const char *id)
{
    return tenant_change(sq_of(st), id, NULL, 0, NULL);
}

/* -- documents ---------------------------------------------------------------- */

/* The stored form of a resource; connectivity (borrowed, may be NULL) is the
 * device status carried over from the previous version. */
static json_t *doc_form(const char *tenant, const char *kind, const char *id, json_t *src,
                        json_t *connectivity, int64_t version, int64_t created, int64_t updated)
{
    bool device = strcmp(kind, DRV_KIND_DEVICE) == 0;
    json_t *d = json_object();
    if (!d || !drv_sq_set(d, "id", json_string(id)) ||
        !drv_sq_set(d, "tenant", json_string(tenant)) ||
        !copy_fields(d, src, device ? device_owned : doc_owned) ||
        (connectivity && !drv_sq_set(d, "connectivity", json_deep_copy(connectivity))) ||
        !set_bookkeeping(d, version, created, updated)) {
        json_decref(d);
        return NULL;
    }
    return d;
}

json_t *sq_doc_form_new(const char *tenant, const char *kind, const char *id, json_t *src,
                        int64_t now)
{
    return doc_form(tenant, kind, id, src, NULL, 1, now, now);
}

drv_err sq_doc_create(drv_store *st, const drv_scope *sc, const char *kind, json_t *doc,
                      json_t **out)
{
    sq_store *s = sq_of(st);
    *out = NULL;
    if (!sc || !sq_valid_tenant_id(sc->tenant) || !sq_valid_kind(kind) || !json_is_object(doc))
        return DRV_INVAL;
    char id[130];
    json_t *jid = json_object_get(doc, "id");
    if (jid) {
        if (!json_is_string(jid) || !sq_valid_id(json_string_value(jid)))
            return DRV_INVAL;
        snprintf(id, sizeof(id), "%s", json_string_value(jid));
    } else {
        drv_err e = drv_sq_random_id(&s->sq, "", ID_CHARS, id, sizeof(id));
        if (e != DRV_OK)
            return e;
    }
    int64_t now = drv_store_now_ms();
    char *text = NULL;
    json_t *d = doc_form(sc->tenant, kind, id, doc, NULL, 1, now, now);
    if (!d)
        return DRV_NOMEM;
    drv_err e = drv_sq_json_dump(d, DRV_STORE_DOC_MAX, &text);
    if (e == DRV_OK)
        e = sq_begin(s);
    if (e != DRV_OK)
        goto out_free;
    /* Reserving first makes a deleted id as taken as a live one. */
    sqlite3_stmt *stmt = NULL;
    e = sq_scoped(s, sc, SQ_ID_RESERVE, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, kind);
        drv_sq_bind_text(stmt, 3, id);
        e = drv_sq_run(&s->sq, stmt, "reserve id");
    }
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_DOC_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, kind);
        drv_sq_bind_text(stmt, 3, id);
        sqlite3_bind_int64(stmt, 4, 1);
        drv_sq_bind_text(stmt, 5, text);
        sqlite3_bind_int64(stmt, 6, now);
        sqlite3_bind_int64(stmt, 7, now);
        e = drv_sq_run(&s->sq, stmt, "doc insert");
    }
    e = sq_end(s, e);
out_free:
    drv_free(text);
    if (e != DRV_OK) {
        json_decref(d);
        return e;
    }
    *out = d;
    return DRV_OK;
}

/* Read a document with its version and creation time. */
static drv_err doc_read(sq_store *s, const drv_scope *sc, const char *kind, const char *id,
                        int64_t *version, int64_t *created, json_t **doc)
{
    if (!sq_valid_kind(kind) || !sq_valid_id(id))
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_DOC_GET, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, kind);
    drv_sq_bind_text(stmt, 3, id);
    e = drv_sq_step(&s->sq, stmt, "doc get");
    if (e == DRV_OK) {
        *version = sqlite3_column_int64(stmt, 0);
        *created = sqlite3_column_int64(stmt, 2);
        e = doc_row(&s->sq, stmt, doc);
    }
    drv_sq_reset(stmt);
    return e;
}

drv_err sq_doc_get(drv_store *st, const drv_scope *sc, const char *kind, const char *id,
                   json_t **out)
{
    int64_t version, created;
    *out = NULL;
    return doc_read(sq_of(st), sc, kind, id, &version, &created, out);
}

drv_err sq_doc_replace(drv_store *st, const drv_scope *sc, const char *kind, const char *id,
                       json_t *doc, int64_t expected_version, json_t **out)
{
    sq_store *s = sq_of(st);
    int64_t version = 0, created = 0;
    json_t *old = NULL, *d = NULL;
    char *text = NULL;
    *out = NULL;
    if (!json_is_object(doc) || expected_version < 0)
        return DRV_INVAL;
    drv_err e = sq_begin(s);
    if (e == DRV_OK)
        e = doc_read(s, sc, kind, id, &version, &created, &old);
    if (e != DRV_OK)
        goto out_rollback;
    if (expected_version != 0 && expected_version != version) {
        e = DRV_CONFLICT;
        goto out_rollback;
    }
    int64_t now = drv_store_now_ms();
    json_t *conn = json_object_get(old, "connectivity");
    d = doc_form(sc->tenant, kind, id, doc, strcmp(kind, DRV_KIND_DEVICE) == 0 ? conn : NULL,
                 version + 1, created, now);
    e = d ? drv_sq_json_dump(d, DRV_STORE_DOC_MAX, &text) : DRV_NOMEM;
    sqlite3_stmt *stmt = NULL;
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_DOC_UPDATE, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, kind);
        drv_sq_bind_text(stmt, 3, id);
        sqlite3_bind_int64(stmt, 4, version + 1);
        drv_sq_bind_text(stmt, 5, text);
        sqlite3_bind_int64(stmt, 6, now);
        sqlite3_bind_int64(stmt, 7, version);
        e = drv_sq_run(&s->sq, stmt, "doc update");
    }
    if (e == DRV_OK && sqlite3_changes(s->sq.db) != 1)
        e = DRV_CONFLICT; /* cannot happen: the version was read in this transaction */
    if (e == DRV_OK)
        e = sq_commit(s);
    if (e != DRV_OK)
        goto out_rollback;
    drv_free(text);
    json_decref(old);
    *out = d;
    return DRV_OK;

out_rollback:
    sq_rollback(s);
    drv_free(text);
    json_decref(old);
    json_decref(d);
    return e;
}

drv_err sq_doc_delete(drv_store *st, const drv_scope *sc, const char *kind, const char *id)
{
    sq_store *s = sq_of(st);
    if (!sq_valid_kind(kind) || !sq_valid_id(id))
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_begin(s);
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_DOC_DELETE, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, kind);
        drv_sq_bind_text(stmt, 3, id);
        e = drv_sq_run(&s->sq, stmt, "doc delete");
    }
    if (e == DRV_OK && sqlite3_changes(s->sq.db) == 0)
        e = DRV_NOTFOUND;
    return sq_end(s, e);
}

/* Bind a "key=value" (or, with value_optional, a bare "key") filter to the
 * parameters k and k + 1; NULL binds neither (no such filter). */
static drv_err bind_pair(sqlite3_stmt *stmt, int k, const char *f, bool value_optional)
{
    if (!f)
        return DRV_OK;
    const char *eq = strchr(f, '=');
    if ((!eq && !value_optional) || eq == f || !*f)
        return DRV_INVAL;
    size_t klen = eq ? (size_t)(eq - f) : strlen(f);
    sqlite3_bind_text(stmt, k, f, (int)klen, SQLITE_TRANSIENT);
    if (eq)
        sqlite3_bind_text(stmt, k + 1, eq + 1, -1, SQLITE_TRANSIENT);
    return DRV_OK;
}

drv_err sq_bind_doc_filter(sqlite3_stmt *stmt, const drv_doc_filter *f)
{
    if (!f)
        return DRV_OK;
    drv_err e = bind_pair(stmt, 4, f->tag, true);
    if (e == DRV_OK)
        e = bind_pair(stmt, 6, f->attr, false);
    if (e == DRV_OK && f->name_prefix && *f->name_prefix)
        drv_sq_bind_text(stmt, 8, f->name_prefix);
    if (e == DRV_OK)
        e = bind_pair(stmt, 9, f->field_eq, false);
    if (e == DRV_OK)
        e = bind_pair(stmt, 12, f->array_contains, false);
    return e;
}

drv_err sq_doc_list(drv_store *st, const drv_scope *sc, const char *kind, const drv_doc_filter *f,
                    const drv_page *pg, json_t **out)
{
    sq_store *s = sq_of(st);
    char after[130];
    uint32_t limit;
    *out = NULL;
    if (f && f->sort && strcmp(f->sort, "id") != 0)
        return sq_doc_list_sorted(s, sc, kind, f, pg, out);
    if (!sq_valid_kind(kind) || sq_page_limit(pg, &limit) != DRV_OK ||
        cursor_id(pg, after, sizeof(after)) != DRV_OK)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_DOC_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, kind);
    drv_sq_bind_text(stmt, 3, after);
    e = sq_bind_doc_filter(stmt, f);
    if (e != DRV_OK) {
        drv_sq_reset(stmt);
        return e;
    }
    sqlite3_bind_int64(stmt, 11, (int64_t)limit + 1);
    return drv_sq_collect(&s->sq, stmt, limit, DRV_SQ_TEXT_KEY(0), doc_row, out);
}

drv_err sq_doc_count(drv_store *st, const drv_scope *sc, const char *kind, int64_t *out)
{
    sq_store *s = sq_of(st);
    *out = 0;
    if (!sq_valid_kind(kind))
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_DOC_COUNT, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, kind);
    return drv_sq_step_int(&s->sq, stmt, "doc count", out);
}

drv_err sq_device_exists(sq_store *s, const drv_scope *sc, const char *device)
{
    if (!sq_valid_id(device))
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_DOC_EXISTS, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, DRV_KIND_DEVICE);
    drv_sq_bind_text(stmt, 3, device);
    e = drv_sq_step(&s->sq, stmt, "device exists");
    drv_sq_reset(stmt);
    return e;
}
