/*
 * twin_sqlite_shadow.c — shadows in the SQLite twin store (twin_store.h):
 * reading a shadow row, the compare-and-set write with its history entry,
 * lists and counts, history pages and pruning.
 *
 * Invariants: a shadow row's version only grows — shadow_put writes version
 * v only over v - 1 (a never-written shadow is 0) and deletion keeps the
 * version — and every write appends exactly one history entry in the same
 * transaction.  The store keeps the stored form opaque (shadow_doc.h owns
 * its shape); it only checks that it is an object.
 */
#include "twin/twin_sqlite_int.h"

#include <string.h>

#include "core/alloc.h"
#include "core/log.h"

static drv_err shadow_key_ok(const char *tenant, const char *device, const char *name)
{
    (void)tenant; /* tw_scoped checks it */
    if (!tw_valid_str(device, 1, TW_KEY_MAX) || !tw_valid_str(name, 0, TW_KEY_MAX))
        return DRV_INVAL;
    return DRV_OK;
}

drv_err tw_shadow_get(drv_twin_store *st, const char *tenant, const char *device, const char *name,
                      drv_shadow_row *out)
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    memset(out, 0, sizeof(*out));
    drv_err e = shadow_key_ok(tenant, device, name);
    if (e == DRV_OK)
        e = tw_scoped(s, tenant, TQ_SHADOW_GET, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, device, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, name, -1, SQLITE_TRANSIENT);
    e = drv_sq_step(&s->sq, stmt, "shadow get");
    if (e == DRV_OK) {
        out->version = sqlite3_column_int64(stmt, 0);
        out->ts_ms = sqlite3_column_int64(stmt, 1);
        out->deleted = sqlite3_column_int(stmt, 2) != 0;
        e = drv_sq_json_col(&s->sq, stmt, 3, &out->stored);
        if (e == DRV_OK && !out->deleted && !json_is_object(out->stored)) {
            drv_error("twin store: live shadow without a document", "path", s->sq.path);
            e = DRV_CORRUPT;
        }
    }
    sqlite3_reset(stmt);
    if (e != DRV_OK)
        drv_shadow_row_clear(out);
    return e;
}

/* The stored version of a shadow, 0 when it was never written. */
static drv_err shadow_version(tw_store *s, const char *tenant, const char *device, const char *name,
                              int64_t *out)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = tw_scoped(s, tenant, TQ_SHADOW_VERSION, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, device, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, name, -1, SQLITE_TRANSIENT);
    e = drv_sq_step(&s->sq, stmt, "shadow version");
    *out = e == DRV_OK ? sqlite3_column_int64(stmt, 0) : 0;
    sqlite3_reset(stmt);
    return e == DRV_NOTFOUND ? DRV_OK : e;
}

/* Bind a JSON value as text (NULL when j is NULL); the text is handed to
 * SQLite, which frees it. */
static drv_err bind_json(sqlite3_stmt *stmt, int idx, const json_t *j)
{
    char *text = NULL;
    if (!j) {
        sqlite3_bind_null(stmt, idx);
        return DRV_OK;
    }
    drv_err e = drv_sq_json_dump(j, SIZE_MAX, &text);
    if (e != DRV_OK)
        return e;
    int rc = sqlite3_bind_text(stmt, idx, text, -1, drv_free);
    return rc == SQLITE_OK ? DRV_OK : rc == SQLITE_TOOBIG ? DRV_TOOBIG : DRV_NOMEM;
}

static drv_err history_append(tw_store *s, const char *tenant, const char *device, const char *name,
                              const drv_shadow_change *ch)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = tw_scoped(s, tenant, TQ_HISTORY_INSERT, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, device, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 4, ch->version);
    sqlite3_bind_int64(stmt, 5, ch->ts_ms);
    sqlite3_bind_text(stmt, 6, ch->actor, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 7, ch->source, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 8, ch->op, -1, SQLITE_TRANSIENT);
    e = bind_json(stmt, 9, ch->desired);
    if (e == DRV_OK)
        e = bind_json(stmt, 10, ch->reported);
    if (e == DRV_OK)
        e = drv_sq_run(&s->sq, stmt, "history insert");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt); /* let go of the JSON texts now */
    return e;
}

static drv_err shadow_write(tw_store *s, const char *tenant, const char *device, const char *name,
                            const json_t *stored, const drv_shadow_change *ch)
{
    int64_t version = 0;
    drv_err e = shadow_version(s, tenant, device, name, &version);
    if (e != DRV_OK)
        return e;
    if (version != ch->version - 1)
        return DRV_CONFLICT;
    sqlite3_stmt *stmt = NULL;
    e = tw_scoped(s, tenant, TQ_SHADOW_UPSERT, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, device, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 4, ch->version);
    sqlite3_bind_int64(stmt, 5, ch->ts_ms);
    sqlite3_bind_int(stmt, 6, stored == NULL);
    e = bind_json(stmt, 7, stored);
    if (e == DRV_OK)
        e = drv_sq_run(&s->sq, stmt, "shadow upsert");
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (e == DRV_OK)
        e = history_append(s, tenant, device, name, ch);
    return e;
}

drv_err tw_shadow_put(drv_twin_store *st, const char *tenant, const char *device, const char *name,
                      const json_t *stored, const drv_shadow_change *change)
{
    tw_store *s = tw_of(st);
    bool own = false;
    drv_err e = shadow_key_ok(tenant, device, name);
    if (e != DRV_OK)
        return e;
    if (!tw_valid_str(tenant, 1, TW_TENANT_MAX) || !change || change->version < 1 ||
        !change->actor || !change->source || !change->op || (stored && !json_is_object(stored)))
        return DRV_INVAL;
    e = tw_op_begin(s, &own);
    if (e != DRV_OK)
        return e;
    e = shadow_write(s, tenant, device, name, stored, change);
    return tw_op_end(s, own, e);
}

drv_err tw_shadow_list(drv_twin_store *st, const char *tenant, const char *device, json_t **out)
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    json_t *items = NULL;
    drv_err e = tw_valid_str(device, 1, TW_KEY_MAX) ? DRV_OK : DRV_INVAL;
    if (e == DRV_OK)
        e = tw_scoped(s, tenant, TQ_SHADOW_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, device, -1, SQLITE_TRANSIENT);
    items = json_array();
    if (!items) {
        e = DRV_NOMEM;
        goto out_reset;
    }
    while ((e = drv_sq_step(&s->sq, stmt, "shadow list")) == DRV_OK) {
        json_t *it = json_pack("{s:s, s:I, s:I}", "name", drv_sq_col_text(stmt, 0), "version",
                               (json_int_t)sqlite3_column_int64(stmt, 1), "timestamp",
                               (json_int_t)sqlite3_column_int64(stmt, 2));
        if (json_array_append_new(items, it) != 0) {
            e = DRV_NOMEM;
            goto out_reset;
        }
    }
    if (e != DRV_NOTFOUND)
        goto out_reset;
    sqlite3_reset(stmt);
    e = drv_sq_list_answer(items, NULL, out);
    items = NULL;
out_reset:
    sqlite3_reset(stmt);
    json_decref(items);
    return e;
}

drv_err tw_shadow_count(drv_twin_store *st, const char *tenant, const char *device, int64_t *out)
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    drv_err e = tw_valid_str(device, 1, TW_KEY_MAX) ? DRV_OK : DRV_INVAL;
    if (e == DRV_OK)
        e = tw_scoped(s, tenant, TQ_SHADOW_COUNT, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, device, -1, SQLITE_TRANSIENT);
    return drv_sq_step_int(&s->sq, stmt, "shadow count", out);
}

/* One history row as a list item (its key, the row id, is column 0). */
static drv_err history_item(drv_sq *sq, sqlite3_stmt *stmt, json_t **out)
{
    json_t *desired = NULL, *reported = NULL;
    json_t *it = json_pack(
        "{s:I, s:I, s:s, s:s, s:s}", "version", (json_int_t)sqlite3_column_int64(stmt, 1),
        "timestamp", (json_int_t)sqlite3_column_int64(stmt, 2), "actor", drv_sq_col_text(stmt, 3),
        "source", drv_sq_col_text(stmt, 4), "op", drv_sq_col_text(stmt, 5));
    drv_err e = it ? DRV_OK : DRV_NOMEM;
    if (e == DRV_OK)
        e = drv_sq_json_col(sq, stmt, 6, &desired);
    if (e == DRV_OK)
        e = drv_sq_json_col(sq, stmt, 7, &reported);
    if (e == DRV_OK && desired) {
        e = drv_sq_set(it, "desired", desired) ? DRV_OK : DRV_NOMEM;
        desired = NULL; /* stolen either way */
    }
    if (e == DRV_OK && reported) {
        e = drv_sq_set(it, "reported", reported) ? DRV_OK : DRV_NOMEM;
        reported = NULL;
    }
    json_decref(desired);
    json_decref(reported);
    if (e != DRV_OK) {
        json_decref(it);
        return e;
    }
    *out = it;
    return DRV_OK;
}

drv_err tw_shadow_history(drv_twin_store *st, const char *tenant, const char *device,
                          const char *name, int64_t from_ms, int64_t to_ms, const char *cursor,
                          uint32_t limit, json_t **out)
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    int64_t before = INT64_MAX;
    drv_err e = shadow_key_ok(tenant, device, name);
    if (e == DRV_OK)
        e = drv_sq_page_limit(limit, &limit);
    if (e == DRV_OK && cursor)
        e = drv_sq_cursor_decode_int(cursor, &before);
    if (e == DRV_OK)
        e = tw_scoped(s, tenant, TQ_HISTORY_PAGE, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, device, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 4, from_ms ? from_ms : INT64_MIN);
    sqlite3_bind_int64(stmt, 5, to_ms ? to_ms : INT64_MAX);
    sqlite3_bind_int64(stmt, 6, before);
    sqlite3_bind_int64(stmt, 7, (int64_t)limit + 1);
    return drv_sq_collect(&s->sq, stmt, limit, DRV_SQ_INT_KEY(0), history_item, out);
}

drv_err tw_history_prune(drv_twin_store *st, int64_t before_ms, uint32_t limit, uint32_t *n)
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    bool own = false;
    *n = 0;
    drv_err e = tw_op_begin(s, &own);
    if (e != DRV_OK)
        return e;
    e = drv_sq_unscoped(&s->sq, TQ_HISTORY_PRUNE, &stmt);
    if (e == DRV_OK) {
        sqlite3_bind_int64(stmt, 1, before_ms);
        sqlite3_bind_int64(stmt, 2, limit);
        e = drv_sq_run(&s->sq, stmt, "history prune");
    }
    if (e == DRV_OK)
        *n = (uint32_t)sqlite3_changes(s->sq.db);
    e = tw_op_end(s, own, e);
    if (e != DRV_OK)
        *n = 0;
    return e;
}
