/*
 * store_sqlite_log.c — device events and the audit log in the SQLite store:
 * the two append-only histories, listed newest first with keyset
 * pagination on (ts, row id).
 *
 * A "connected" or "disconnected" event also updates the device document's
 * "connectivity" object in the same transaction.  That is a status, not an
 * edit: the document's version (its ETag) and updated_at stay as they are,
 * so a client's conditional update is not refused because the device
 * reconnected.  An event older than the connectivity already recorded (two
 * workers reporting out of order) is kept in the history but does not
 * overwrite the newer status.
 *
 * Neither history is pruned here yet; retention belongs to a later purge op.
 */
#include "registry/store_int.h"

#include <string.h>

#include "core/alloc.h"
#include "core/log.h"

#define EVENT_KIND_MAX 64

/* The connectivity fields an event sets, as JSON text to merge (drv_free). */
static drv_err connectivity_patch(bool online, const char *last_seen, json_t *detail, char **out)
{
    json_t *p = json_object();
    const char *address = json_string_value(json_object_get(detail, "address"));
    const char *reason = json_string_value(json_object_get(detail, "reason"));
    bool ok = p && drv_sq_set(p, "online", json_boolean(online)) &&
              drv_sq_set(p, "last_seen", json_string(last_seen)) &&
              (!address || drv_sq_set(p, "last_address", json_string(address))) &&
              (!reason || drv_sq_set(p, "last_reason", json_string(reason)));
    drv_err e = ok ? drv_sq_json_dump(p, DRV_STORE_DOC_MAX, out) : DRV_NOMEM;
    json_decref(p);
    return e;
}

/* Update the device's connectivity unless it records a later event; the
 * device must exist either way. */
static drv_err set_connectivity(sq_store *s, const drv_scope *sc, const char *device,
                                const char *kind, int64_t ts, json_t *detail)
{
    char seen[32], *patch = NULL;
    drv_store_format_time(ts, seen, sizeof(seen));
    drv_err e = connectivity_patch(strcmp(kind, "connected") == 0, seen, detail, &patch);
    sqlite3_stmt *stmt = NULL;
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_DEVICE_CONNECTIVITY, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, device);
        drv_sq_bind_text(stmt, 3, patch);
        drv_sq_bind_text(stmt, 4, seen);
        e = drv_sq_run(&s->sq, stmt, "device connectivity");
    }
    drv_free(patch);
    if (e == DRV_OK && sqlite3_changes(s->sq.db) == 0)
        e = sq_device_exists(s, sc, device); /* missing, or the event is stale */
    return e;
}

/* Insert one event inside the caller's transaction. */
static drv_err event_insert(sq_store *s, const drv_scope *sc, const char *device, const char *kind,
                            int64_t ts_ms, json_t *detail)
{
    char *text = NULL;
    if (!sq_valid_id(device) || !kind || !*kind || strlen(kind) > EVENT_KIND_MAX)
        return DRV_INVAL;
    if (ts_ms == 0)
        ts_ms = drv_store_now_ms();
    drv_err e = detail ? drv_sq_json_dump(detail, DRV_STORE_DOC_MAX, &text) : DRV_OK;
    if (e != DRV_OK)
        return e;
    if (strcmp(kind, "connected") == 0 || strcmp(kind, "disconnected") == 0)
        e = set_connectivity(s, sc, device, kind, ts_ms, detail);
    else
        e = sq_device_exists(s, sc, device);
    sqlite3_stmt *stmt = NULL;
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_EVENT_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, device);
        sqlite3_bind_int64(stmt, 3, ts_ms);
        drv_sq_bind_text(stmt, 4, kind);
        drv_sq_bind_text(stmt, 5, text);
        e = drv_sq_run(&s->sq, stmt, "event insert");
    }
    if (e == DRV_OK)
        sq_note_event(s, sc->tenant, device, kind, ts_ms, text);
    drv_free(text);
    return e;
}

drv_err sq_event_append(drv_store *st, const drv_scope *sc, const char *device, const char *kind,
                        int64_t ts_ms, json_t *detail)
{
    sq_store *s = sq_of(st);
    drv_err e = sq_begin(s);
    if (e != DRV_OK)
        return e;
    e = event_insert(s, sc, device, kind, ts_ms, detail);
    return sq_end(s, e);
}

drv_err sq_event_append_batch(drv_store *st, const drv_device_event *ev, size_t n)
{
    sq_store *s = sq_of(st);
    drv_err e = sq_begin(s);
    if (e != DRV_OK)
        return e;
    for (size_t i = 0; i < n && e == DRV_OK; i++) {
        json_t *detail = json_object();
        if (ev[i].address[0])
            json_object_set_new(detail, "address", json_string(ev[i].address));
        if (ev[i].reason[0])
            json_object_set_new(detail, "reason", json_string(ev[i].reason));
        drv_scope sc = {ev[i].tenant};
        e = event_insert(s, &sc, ev[i].device, ev[i].kind, ev[i].ts_ms, detail);
        json_decref(detail);
        if (e == DRV_NOTFOUND || e == DRV_INVAL)
            e = DRV_OK; /* a device purged meanwhile: its events have nowhere to go */
    }
    return sq_end(s, e);
}

/* Bind a half-open time range and the keyset position to parameters
 * first..first+3: from, to, last ts, last id. */
static drv_err bind_range(sqlite3_stmt *stmt, int first, int64_t from_ms, int64_t to_ms,
                          const drv_page *pg)
{
    int64_t ts = INT64_MAX, id = INT64_MAX;
    if (pg && pg->cursor && drv_sq_cursor_decode_pos(pg->cursor, &ts, &id) != DRV_OK)
        return DRV_INVAL;
    int64_t to = to_ms ? to_ms : INT64_MAX;
    /* The row-value comparison is a filter, not an index bound: tightening
     * "ts < to" to the cursor's ts makes a later page start at the cursor
     * instead of skipping every newer row again. */
    if (ts < to)
        to = ts + 1;
    sqlite3_bind_int64(stmt, first, from_ms ? from_ms : INT64_MIN);
    sqlite3_bind_int64(stmt, first + 1, to);
    sqlite3_bind_int64(stmt, first + 2, ts);
    sqlite3_bind_int64(stmt, first + 3, id);
    return DRV_OK;
}

/* An event from a row of SQ_EVENT_LIST: id, ts, kind, detail. */
static drv_err event_row(drv_sq *sq, sqlite3_stmt *stmt, json_t **item)
{
    json_t *detail = NULL;
    drv_err e = drv_sq_json_col(sq, stmt, 3, &detail);
    if (e != DRV_OK)
        return e;
    json_t *ev = json_object();
    bool ok = ev && drv_sq_set(ev, "ts", drv_sq_time_json(sqlite3_column_int64(stmt, 1))) &&
              drv_sq_set(ev, "kind", json_string(drv_sq_col_text(stmt, 2)));
    if (detail)
        ok = ok ? drv_sq_set(ev, "detail", detail) : (json_decref(detail), false);
    if (!ok) {
        json_decref(ev);
        return DRV_NOMEM;
    }
    *item = ev;
    return DRV_OK;
}

drv_err sq_event_list(drv_store *st, const drv_scope *sc, const char *device, int64_t from_ms,
                      int64_t to_ms, const drv_page *pg, json_t **out)
{
    sq_store *s = sq_of(st);
    uint32_t limit;
    *out = NULL;
    if (sq_page_limit(pg, &limit) != DRV_OK)
        return DRV_INVAL;
    drv_err e = sq_device_exists(s, sc, device);
    if (e != DRV_OK)
        return e;
    sqlite3_stmt *stmt = NULL;
    e = sq_scoped(s, sc, SQ_EVENT_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, device);
    if (bind_range(stmt, 3, from_ms, to_ms, pg) != DRV_OK) {
        drv_sq_reset(stmt);
        return DRV_INVAL;
    }
    sqlite3_bind_int64(stmt, 7, (int64_t)limit + 1);
    return drv_sq_collect(&s->sq, stmt, limit, DRV_SQ_POS_KEY(1, 0), event_row, out);
}

drv_err sq_event_since(drv_store *st, const drv_scope *sc, int64_t after_id, uint32_t limit,
                       bool (*fn)(void *ud, const drv_store_event *ev), void *ud)
{
    sq_store *s = sq_of(st);
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_EVENT_SINCE, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_int64(stmt, 2, after_id);
    sqlite3_bind_int64(stmt, 3, limit);
    while ((e = drv_sq_step(&s->sq, stmt, "event since")) == DRV_OK) {
        drv_store_event ev = {.tenant = sc->tenant,
                              .id = sqlite3_column_int64(stmt, 0),
                              .device = drv_sq_col_text(stmt, 1),
                              .ts_ms = sqlite3_column_int64(stmt, 2),
                              .kind = drv_sq_col_text(stmt, 3),
                              .detail = (const char *)sqlite3_column_text(stmt, 4)};
        if (!fn(ud, &ev))
            break;
    }
    drv_sq_reset(stmt);
    return e == DRV_NOTFOUND || e == DRV_OK ? DRV_OK : e;
}

drv_err sq_event_last_id(drv_store *st, int64_t *out)
{
    sq_store *s = sq_of(st);
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_EVENT_LAST_ID, &stmt);
    if (e == DRV_OK)
        e = drv_sq_step(&s->sq, stmt, "event last id");
    *out = e == DRV_OK ? sqlite3_column_int64(stmt, 0) : 0;
    drv_sq_reset(stmt);
    return e;
}

drv_err sq_audit_append(drv_store *st, const char *tenant, const char *actor, const char *action,
                        const char *target, const char *source, json_t *detail)
{
    sq_store *s = sq_of(st);
    char *text = NULL;
    if (!actor || !*actor || !action || !*action || (tenant && !sq_valid_tenant_id(tenant)))
        return DRV_INVAL;
    drv_err e = detail ? drv_sq_json_dump(detail, DRV_STORE_DOC_MAX, &text) : DRV_OK;
    drv_scope sc = {.tenant = tenant};
    sqlite3_stmt *stmt = NULL;
    if (e == DRV_OK)
        e = sq_begin(s);
    if (e == DRV_OK)
        e = tenant ? sq_scoped(s, &sc, SQ_AUDIT_INSERT, &stmt)
                   : drv_sq_unscoped(&s->sq, SQ_AUDIT_INSERT_PLATFORM, &stmt);
    if (e == DRV_OK) {
        sqlite3_bind_int64(stmt, 2, drv_store_now_ms());
        drv_sq_bind_text(stmt, 3, actor);
        drv_sq_bind_text(stmt, 4, action);
        drv_sq_bind_text(stmt, 5, target);
        drv_sq_bind_text(stmt, 6, source);
        drv_sq_bind_text(stmt, 7, text);
        e = drv_sq_run(&s->sq, stmt, "audit insert");
    }
    e = sq_end(s, e);
    drv_free(text);
    return e;
}

/* Optional text column as a JSON string or null. */
static json_t *opt_text(sqlite3_stmt *stmt, int col)
{
    return sqlite3_column_type(stmt, col) == SQLITE_NULL ? json_null()
                                                         : json_string(drv_sq_col_text(stmt, col));
}

/* An audit entry from a row of AUDIT_COLUMNS (store_sqlite_sql.c). */
static drv_err audit_row(drv_sq *sq, sqlite3_stmt *stmt, json_t **item)
{
    json_t *detail = NULL;
    drv_err e = drv_sq_json_col(sq, stmt, 7, &detail);
    if (e != DRV_OK)
        return e;
    json_t *a = json_object();
    bool ok = a && drv_sq_set(a, "id", json_integer(sqlite3_column_int64(stmt, 0))) &&
              drv_sq_set(a, "ts", drv_sq_time_json(sqlite3_column_int64(stmt, 2))) &&
              drv_sq_set(a, "tenant", opt_text(stmt, 1)) &&
              drv_sq_set(a, "actor", json_string(drv_sq_col_text(stmt, 3))) &&
              drv_sq_set(a, "action", json_string(drv_sq_col_text(stmt, 4))) &&
              drv_sq_set(a, "target", opt_text(stmt, 5)) &&
              drv_sq_set(a, "source", opt_text(stmt, 6));
    if (detail)
        ok = ok ? drv_sq_set(a, "detail", detail) : (json_decref(detail), false);
    if (!ok) {
        json_decref(a);
        return DRV_NOMEM;
    }
    *item = a;
    return DRV_OK;
}

/* The audit entries of the scope's tenant, or the platform's when sc is NULL. */
static drv_err audit_list(sq_store *s, const drv_scope *sc, int64_t from_ms, int64_t to_ms,
                          const drv_page *pg, json_t **out)
{
    uint32_t limit;
    *out = NULL;
    if (sq_page_limit(pg, &limit) != DRV_OK)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sc ? sq_scoped(s, sc, SQ_AUDIT_LIST, &stmt)
                   : drv_sq_unscoped(&s->sq, SQ_AUDIT_LIST_PLATFORM, &stmt);
    if (e != DRV_OK)
        return e;
    if (bind_range(stmt, 2, from_ms, to_ms, pg) != DRV_OK) {
        drv_sq_reset(stmt);
        return DRV_INVAL;
    }
    sqlite3_bind_int64(stmt, 6, (int64_t)limit + 1);
    return drv_sq_collect(&s->sq, stmt, limit, DRV_SQ_POS_KEY(2, 0), audit_row, out);
}

drv_err sq_audit_list(drv_store *st, const drv_scope *sc, int64_t from_ms, int64_t to_ms,
                      const drv_page *pg, json_t **out)
{
    if (!sc) {
        *out = NULL;
        return DRV_INVAL; /* NULL means "platform" to audit_list() */
    }
    return audit_list(sq_of(st), sc, from_ms, to_ms, pg, out);
}

drv_err sq_platform_audit_list(drv_store *st, int64_t from_ms, int64_t to_ms, const drv_page *pg,
                               json_t **out)
{
    return audit_list(sq_of(st), NULL, from_ms, to_ms, pg, out);
}
