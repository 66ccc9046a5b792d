/*
 * twin_sqlite_cmd.c — commands in the SQLite twin store (twin_store.h):
 * adding (with idempotency keys), compare-and-set updates that append a
 * transition on every change of state, the API's documents and lists, the
 * device's pending queue, the timer's due list, group fan-out batches and
 * purging a device.
 *
 * Invariants: a command's transitions are numbered 1, 2, ... in the order
 * its states changed, and the first is "queued" at created_ms; a row's state
 * changes only through command_update's compare-and-set, so two writers
 * cannot both move a command out of one state.  Calls that hand commands to
 * a callback read them all first, so the callback may use the store.
 */
#include "twin/twin_sqlite_int.h"

#include <string.h>

#include "core/alloc.h"
#include "platform/clock.h"

#define ID_CHARS 24     /* random base32 characters after "cmd_" / "cb_" */
#define ID_TRIES 3      /* a duplicate of 120 random bits is a broken RNG, not bad luck */
#define MAX_ATTEMPTS 20 /* the contract's ceiling of max_attempts */
#define CMD_SEQ_COL 19  /* seq, the last of CMD_COLS */

/* -- rows ---------------------------------------------------------------------- */

/* The row (columns CMD_COLS of twin_sqlite_sql.c) into out, which is
 * overwritten, not cleared first; on error out holds nothing to free. */
static drv_err cmd_row(sqlite3_stmt *stmt, drv_command *out)
{
    memset(out, 0, sizeof(*out));
    drv_err e = tw_col_copy(stmt, 0, out->tenant, sizeof(out->tenant));
    if (e == DRV_OK)
        e = tw_col_copy(stmt, 1, out->id, sizeof(out->id));
    if (e == DRV_OK)
        e = tw_col_copy(stmt, 2, out->device, sizeof(out->device));
    if (e == DRV_OK)
        e = tw_col_copy(stmt, 3, out->batch, sizeof(out->batch));
    if (e == DRV_OK)
        e = tw_col_copy(stmt, 4, out->name, sizeof(out->name));
    if (e == DRV_OK)
        e = tw_col_copy(stmt, 5, out->idem_key, sizeof(out->idem_key));
    if (e == DRV_OK)
        e = drv_sq_col_dup(stmt, 6, &out->params);
    if (e == DRV_OK)
        e = drv_sq_col_dup(stmt, 7, &out->result);
    if (e == DRV_OK)
        e = drv_sq_col_dup(stmt, 8, &out->error);
    if (e != DRV_OK) {
        drv_command_clear(out);
        return e;
    }
    out->state = (drv_cmd_state)sqlite3_column_int(stmt, 9);
    out->attempts = (uint32_t)sqlite3_column_int64(stmt, 10);
    out->max_attempts = (uint32_t)sqlite3_column_int64(stmt, 11);
    out->timeout_ms = sqlite3_column_int64(stmt, 12);
    out->created_ms = sqlite3_column_int64(stmt, 13);
    out->updated_ms = sqlite3_column_int64(stmt, 14);
    out->expires_ms = sqlite3_column_int64(stmt, 15);
    out->sent_ms = sqlite3_column_int64(stmt, 16);
    out->delivered_ms = sqlite3_column_int64(stmt, 17);
    out->next_ms = sqlite3_column_int64(stmt, 18);
    out->seq = sqlite3_column_int64(stmt, CMD_SEQ_COL);
    return DRV_OK;
}

/* Step a statement expected to give one command row; resets it. */
static drv_err cmd_one(tw_store *s, sqlite3_stmt *stmt, drv_command *out)
{
    memset(out, 0, sizeof(*out));
    drv_err e = drv_sq_step(&s->sq, stmt, "command get");
    if (e == DRV_OK)
        e = cmd_row(stmt, out);
    sqlite3_reset(stmt);
    return e;
}

static drv_err cmd_get(tw_store *s, const char *tenant, const char *id, drv_command *out)
{
    sqlite3_stmt *stmt = NULL;
    if (!id)
        return DRV_INVAL;
    drv_err e = tw_scoped(s, tenant, TQ_CMD_GET, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, id, -1, SQLITE_TRANSIENT);
    return cmd_one(s, stmt, out);
}

/* A fixed array holds a string of min..cap-1 bytes (NUL-terminated). */
static bool fits(const char *a, size_t cap, size_t min)
{
    size_t n = strnlen(a, cap);
    return n < cap && n >= min;
}

static bool cmd_valid(const drv_command *c)
{
    return fits(c->tenant, sizeof(c->tenant), 1) && fits(c->device, sizeof(c->device), 1) &&
           fits(c->batch, sizeof(c->batch), 0) && fits(c->name, sizeof(c->name), 1) &&
           fits(c->idem_key, sizeof(c->idem_key), 0) && c->max_attempts >= 1 &&
           c->max_attempts <= MAX_ATTEMPTS && c->timeout_ms >= 0 &&
           (unsigned)c->state < DRV_CMD_STATE_COUNT && tw_json_valid(c->params) &&
           (!c->result || tw_json_valid(c->result));
}

/* -- transitions ------------------------------------------------------------------ */

static drv_err transition_add(tw_store *s, const char *tenant, const char *id, drv_cmd_state state,
                              int64_t ts_ms, const json_t *detail)
{
    sqlite3_stmt *stmt = NULL;
    char *text = NULL;
    drv_err e = detail ? drv_sq_json_dump(detail, SIZE_MAX, &text) : DRV_OK;
    if (e == DRV_OK)
        e = tw_scoped(s, tenant, TQ_TRANSITION_INSERT, &stmt);
    if (e == DRV_OK) {
        sqlite3_bind_text(stmt, 2, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(stmt, 3, (int)state);
        sqlite3_bind_int64(stmt, 4, ts_ms);
        tw_bind_opt(stmt, 5, text);
        e = drv_sq_run(&s->sq, stmt, "transition insert");
    }
    drv_free(text);
    return e;
}

/* The transitions of a command as [{"state", "at", "detail"?}], by n. */
static drv_err transitions_json(tw_store *s, const char *tenant, const char *id, json_t **out)
{
    sqlite3_stmt *stmt = NULL;
    json_t *arr = NULL;
    drv_err e = tw_scoped(s, tenant, TQ_TRANSITION_LIST, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, id, -1, SQLITE_TRANSIENT);
    arr = json_array();
    e = arr ? DRV_OK : DRV_NOMEM;
    while (e == DRV_OK && (e = drv_sq_step(&s->sq, stmt, "transition list")) == DRV_OK) {
        json_t *detail = NULL, *t = json_object();
        bool ok =
            t &&
            drv_sq_set(t, "state", json_string(drv_cmd_state_name(sqlite3_column_int(stmt, 0)))) &&
            drv_sq_set(t, "at", drv_sq_time_json(sqlite3_column_int64(stmt, 1)));
        e = ok ? drv_sq_json_col(&s->sq, stmt, 2, &detail) : DRV_NOMEM;
        if (e == DRV_OK && detail)
            e = drv_sq_set(t, "detail", detail) ? DRV_OK : DRV_NOMEM;
        if (e == DRV_OK && json_array_append_new(arr, t) != 0)
            e = DRV_NOMEM;
        else if (e != DRV_OK)
            json_decref(t);
    }
    sqlite3_reset(stmt);
    if (e != DRV_NOTFOUND) {
        json_decref(arr);
        return e;
    }
    *out = arr;
    return DRV_OK;
}

/* -- add ------------------------------------------------------------------------- */

/* The command the device already sent with c's idempotency key, into *out. */
static drv_err find_idem(tw_store *s, const drv_command *c, drv_command *out)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = tw_scoped(s, c->tenant, TQ_CMD_BY_IDEM, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, c->device, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, c->idem_key, -1, SQLITE_TRANSIENT);
    return cmd_one(s, stmt, out);
}

static drv_err cmd_insert(tw_store *s, drv_command *c)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_random_id(&s->sq, "cmd_", ID_CHARS, c->id, sizeof(c->id));
    if (e == DRV_OK)
        e = tw_scoped(s, c->tenant, TQ_CMD_INSERT, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, c->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, c->device, -1, SQLITE_TRANSIENT);
    tw_bind_opt(stmt, 4, c->batch);
    sqlite3_bind_text(stmt, 5, c->name, -1, SQLITE_TRANSIENT);
    tw_bind_opt(stmt, 6, c->idem_key);
    sqlite3_bind_text(stmt, 7, c->params, -1, SQLITE_TRANSIENT);
    tw_bind_opt(stmt, 8, c->result);
    tw_bind_opt(stmt, 9, c->error);
    sqlite3_bind_int(stmt, 10, (int)c->state);
    sqlite3_bind_int64(stmt, 11, c->attempts);
    sqlite3_bind_int64(stmt, 12, c->max_attempts);
    sqlite3_bind_int64(stmt, 13, c->timeout_ms);
    sqlite3_bind_int64(stmt, 14, c->created_ms);
    sqlite3_bind_int64(stmt, 15, c->updated_ms);
    sqlite3_bind_int64(stmt, 16, c->expires_ms);
    sqlite3_bind_int64(stmt, 17, c->sent_ms);
    sqlite3_bind_int64(stmt, 18, c->delivered_ms);
    sqlite3_bind_int64(stmt, 19, c->next_ms);
    e = drv_sq_run(&s->sq, stmt, "command insert");
    if (e != DRV_OK)
        return e;
    c->seq = sqlite3_last_insert_rowid(s->sq.db);
    return transition_add(s, c->tenant, c->id, DRV_CMD_QUEUED, c->created_ms, NULL);
}

/* Inside the op's transaction: the stored twin of c (DRV_EXISTS, *dup
 * filled) or c inserted. */
static drv_err cmd_add_tx(tw_store *s, drv_command *c, drv_command *dup)
{
    drv_err e = DRV_NOTFOUND;
    if (c->idem_key[0]) {
        e = find_idem(s, c, dup);
        if (e == DRV_OK)
            return DRV_EXISTS;
        if (e != DRV_NOTFOUND)
            return e;
    }
    /* The idempotency key is free (checked in this transaction), so a
     * duplicate now is the id: draw again. */
    e = DRV_EXISTS;
    for (int i = 0; i < ID_TRIES && e == DRV_EXISTS; i++)
        e = cmd_insert(s, c);
    return e == DRV_EXISTS ? DRV_IO : e;
}

drv_err tw_command_add(drv_twin_store *st, drv_command *c)
{
    tw_store *s = tw_of(st);
    drv_command dup;
    bool own = false;
    if (!c)
        return DRV_INVAL;
    c->state = DRV_CMD_QUEUED;
    if (!c->updated_ms)
        c->updated_ms = c->created_ms;
    if (!cmd_valid(c))
        return DRV_INVAL;
    drv_err e = tw_op_begin(s, &own);
    if (e != DRV_OK)
        return e;
    e = cmd_add_tx(s, c, &dup);
    /* A found twin wrote nothing: end the op as a success. */
    drv_err end = tw_op_end(s, own, e == DRV_EXISTS ? DRV_OK : e);
    if (e == DRV_EXISTS && end != DRV_OK)
        drv_command_clear(&dup);
    if (e == DRV_EXISTS && end == DRV_OK) {
        drv_command_clear(c);
        *c = dup;
    }
    return end != DRV_OK ? end : e;
}

/* -- get, update ----------------------------------------------------------------- */

drv_err tw_command_get(drv_twin_store *st, const char *tenant, const char *id, drv_command *out)
{
    return cmd_get(tw_of(st), tenant, id, out);
}

/* Why the compare-and-set matched no row: gone, or in another state. */
static drv_err update_missed(tw_store *s, const drv_command *c)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = tw_scoped(s, c->tenant, TQ_CMD_STATE, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, c->id, -1, SQLITE_TRANSIENT);
    e = drv_sq_step(&s->sq, stmt, "command state");
    sqlite3_reset(stmt);
    return e == DRV_OK ? DRV_CONFLICT : e;
}

static drv_err cmd_update_tx(tw_store *s, const drv_command *c, drv_cmd_state from,
                             const json_t *detail)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = tw_scoped(s, c->tenant, TQ_CMD_UPDATE, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, c->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(stmt, 3, (int)c->state);
    sqlite3_bind_int64(stmt, 4, c->attempts);
    sqlite3_bind_int64(stmt, 5, c->sent_ms);
    sqlite3_bind_int64(stmt, 6, c->delivered_ms);
    sqlite3_bind_int64(stmt, 7, c->next_ms);
    tw_bind_opt(stmt, 8, c->result);
    tw_bind_opt(stmt, 9, c->error);
    sqlite3_bind_int64(stmt, 10, c->updated_ms);
    sqlite3_bind_int(stmt, 11, (int)from);
    e = drv_sq_run(&s->sq, stmt, "command update");
    if (e != DRV_OK)
        return e;
    if (sqlite3_changes(s->sq.db) == 0)
        return update_missed(s, c);
    if (c->state == from)
        return DRV_OK;
    return transition_add(s, c->tenant, c->id, c->state, c->updated_ms, detail);
}

drv_err tw_command_update(drv_twin_store *st, const drv_command *c, drv_cmd_state from,
                          const json_t *detail)
{
    tw_store *s = tw_of(st);
    bool own = false;
    if (!c || !fits(c->tenant, sizeof(c->tenant), 1) || !fits(c->id, sizeof(c->id), 1) ||
        (unsigned)c->state >= DRV_CMD_STATE_COUNT || (unsigned)from >= DRV_CMD_STATE_COUNT ||
        (c->result && !tw_json_valid(c->result)))
        return DRV_INVAL;
    drv_err e = tw_op_begin(s, &own);
    if (e != DRV_OK)
        return e;
    e = cmd_update_tx(s, c, from, detail);
    return tw_op_end(s, own, e);
}

/* -- documents and lists --------------------------------------------------------- */

static json_t *str_or_null(const char *p)
{
    return p && *p ? json_string(p) : json_null();
}

/* The API's document of c without "transitions" (a new object). */
static drv_err cmd_doc(drv_sq *sq, const drv_command *c, json_t **out)
{
    json_t *params = NULL, *result = NULL;
    drv_err e = drv_sq_json_parse(sq, c->params, c->params ? strlen(c->params) : 0, &params);
    if (e == DRV_OK)
        e = drv_sq_json_parse(sq, c->result, c->result ? strlen(c->result) : 0, &result);
    if (e != DRV_OK) {
        json_decref(params);
        return e;
    }
    json_t *o = json_object();
    if (!o) {
        json_decref(params);
        json_decref(result);
        return DRV_NOMEM;
    }
    /* drv_sq_set steals its value even when it fails, so params and result are
     * set unconditionally; the others are not made after a failure. */
    bool ok = drv_sq_set(o, "id", json_string(c->id)) &&
              drv_sq_set(o, "device", json_string(c->device)) &&
              drv_sq_set(o, "batch", str_or_null(c->batch)) &&
              drv_sq_set(o, "name", json_string(c->name));
    ok = drv_sq_set(o, "params", params ? params : json_null()) && ok;
    ok = ok && drv_sq_set(o, "state", json_string(drv_cmd_state_name(c->state))) &&
         drv_sq_set(o, "attempts", json_integer(c->attempts)) &&
         drv_sq_set(o, "max_attempts", json_integer(c->max_attempts)) &&
         drv_sq_set(o, "timeout_ms", json_integer(c->timeout_ms)) &&
         drv_sq_set(o, "expires_at", drv_sq_time_json(c->expires_ms)) &&
         drv_sq_set(o, "created_at", drv_sq_time_json(c->created_ms)) &&
         drv_sq_set(o, "updated_at", drv_sq_time_json(c->updated_ms)) &&
         drv_sq_set(o, "idempotency_key", str_or_null(c->idem_key));
    ok = drv_sq_set(o, "result", result ? result : json_null()) && ok;
    ok = ok && drv_sq_set(o, "error", str_or_null(c->error));
    if (!ok) {
        json_decref(o);
        return DRV_NOMEM;
    }
    *out = o;
    return DRV_OK;
}

drv_err tw_command_json(drv_twin_store *st, const char *tenant, const char *id, json_t **out)
{
    tw_store *s = tw_of(st);
    drv_command c;
    json_t *doc = NULL, *trans = NULL;
    /* The row and its transitions from one snapshot: another thread's
     * transition may commit between the two reads. */
    bool snap = !s->in_tx && sqlite3_exec(s->sq.db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
    drv_err e = cmd_get(s, tenant, id, &c);
    if (e == DRV_OK) {
        e = cmd_doc(&s->sq, &c, &doc);
        if (e == DRV_OK)
            e = transitions_json(s, tenant, id, &trans);
        if (e == DRV_OK)
            e = drv_sq_set(doc, "transitions", trans) ? DRV_OK : DRV_NOMEM;
        drv_command_clear(&c);
    }
    if (snap && sqlite3_exec(s->sq.db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        sqlite3_exec(s->sq.db, "ROLLBACK", NULL, NULL, NULL); /* never leave it open */

    if (e != DRV_OK) {
        json_decref(doc);
        return e;
    }
    *out = doc;
    return DRV_OK;
}

/* A list row as an item (its key is seq, column CMD_SEQ_COL). */
static drv_err list_item(drv_sq *sq, sqlite3_stmt *stmt, json_t **item)
{
    drv_command c;
    drv_err e = cmd_row(stmt, &c);
    if (e != DRV_OK)
        return e;
    e = cmd_doc(sq, &c, item);
    drv_command_clear(&c);
    return e;
}

drv_err tw_command_list(drv_twin_store *st, const char *tenant, const drv_cmd_filter *f,
                        const char *cursor, uint32_t limit, json_t **out)
{
    static const drv_cmd_filter any = {.state = -1};
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    int64_t before = INT64_MAX;
    if (!f)
        f = &any;
    if (f->state < -1 || f->state >= DRV_CMD_STATE_COUNT)
        return DRV_INVAL;
    drv_err e = drv_sq_page_limit(limit, &limit);
    if (e == DRV_OK && cursor)
        e = drv_sq_cursor_decode_int(cursor, &before);
    /* The statement whose index fits the filter best. */
    tw_query q = f->batch ? TQ_CMD_LIST_BATCH : f->device ? TQ_CMD_LIST_DEVICE : TQ_CMD_LIST;
    if (e == DRV_OK)
        e = tw_scoped(s, tenant, q, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_int64(stmt, 2, before);
    sqlite3_bind_int64(stmt, 3, (int64_t)limit + 1);
    sqlite3_bind_int(stmt, 4, f->state);
    if (f->device)
        sqlite3_bind_text(stmt, 5, f->device, -1, SQLITE_TRANSIENT);
    if (f->batch)
        sqlite3_bind_text(stmt, 6, f->batch, -1, SQLITE_TRANSIENT);
    return drv_sq_collect(&s->sq, stmt, limit, DRV_SQ_INT_KEY(CMD_SEQ_COL), list_item, out);
}

/* -- pending and due --------------------------------------------------------------- */

/* Read every row of stmt (then reset it), and only then hand each to fn,
 * so fn may write to the store. */
static drv_err each_command(tw_store *s, sqlite3_stmt *stmt, bool (*fn)(void *, drv_command *),
                            void *ud)
{
    drv_command *v = NULL;
    size_t n = 0, cap = 0;
    drv_err e;
    while ((e = drv_sq_step(&s->sq, stmt, "command rows")) == DRV_OK) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            drv_command *nv = drv_realloc(v, ncap * sizeof(*nv));
            if (!nv) {
                e = DRV_NOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        e = cmd_row(stmt, &v[n]);
        if (e != DRV_OK)
            break;
        n++;
    }
    sqlite3_reset(stmt);
    if (e == DRV_NOTFOUND)
        e = DRV_OK;
    for (size_t i = 0; e == DRV_OK && i < n; i++)
        if (!fn(ud, &v[i]))
            break;
    for (size_t i = 0; i < n; i++)
        drv_command_clear(&v[i]);
    drv_free(v);
    return e;
}

drv_err tw_command_waiting(drv_twin_store *st, const char *tenant, const char *device, int64_t *out)
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    if (!tw_valid_str(device, 1, TW_KEY_MAX))
        return DRV_INVAL;
    drv_err e = tw_scoped(s, tenant, TQ_CMD_WAITING, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, device, -1, SQLITE_TRANSIENT);
    return drv_sq_step_int(&s->sq, stmt, "command waiting", out);
}

drv_err tw_command_pending(drv_twin_store *st, const char *tenant, const char *device, uint32_t max,
                           bool (*fn)(void *ud, drv_command *c), void *ud)
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    if (!fn || !tw_valid_str(device, 1, TW_KEY_MAX))
        return DRV_INVAL;
    drv_err e = tw_scoped(s, tenant, TQ_CMD_PENDING, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, device, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 3, max);
    return each_command(s, stmt, fn, ud);
}

drv_err tw_due_commands(drv_twin_store *st, int64_t now_ms, uint32_t max,
                        bool (*fn)(void *ud, drv_command *c), void *ud)
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    if (!fn)
        return DRV_INVAL;
    drv_err e = drv_sq_unscoped(&s->sq, TQ_CMD_DUE, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_int64(stmt, 1, now_ms);
    sqlite3_bind_int64(stmt, 2, max);
    return each_command(s, stmt, fn, ud);
}

drv_err tw_due_next(drv_twin_store *st, int64_t *out)
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    *out = 0;
    drv_err e = drv_sq_unscoped(&s->sq, TQ_CMD_DUE_NEXT, &stmt);
    if (e != DRV_OK)
        return e;
    /* MIN of no rows is NULL, which reads as 0. */
    return drv_sq_step_int(&s->sq, stmt, "due next", out);
}

/* -- group fan-out batches ------------------------------------------------------ */

drv_err tw_batch_add(drv_twin_store *st, const char *tenant, const json_t *doc, char id_out[40])
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    char *params = NULL;
    bool own = false;
    const char *group = json_string_value(json_object_get(doc, "group"));
    const char *name = json_string_value(json_object_get(doc, "name"));
    const json_t *pj = json_object_get(doc, "params");
    if (!json_is_object(doc) || !tw_valid_str(group, 1, TW_KEY_MAX) ||
        !tw_valid_str(name, 1, TW_KEY_MAX))
        return DRV_INVAL;
    drv_err e = pj ? drv_sq_json_dump(pj, SIZE_MAX, &params) : DRV_OK;
    if (e == DRV_OK)
        e = drv_sq_random_id(&s->sq, "cb_", ID_CHARS, id_out, 40);
    if (e == DRV_OK)
        e = tw_scoped(s, tenant, TQ_BATCH_INSERT, &stmt);
    if (e != DRV_OK)
        goto out_free;
    e = tw_op_begin(s, &own);
    if (e != DRV_OK)
        goto out_free;
    sqlite3_bind_text(stmt, 2, id_out, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, group, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 4, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 5, params ? params : "{}", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 6, (int64_t)drv_wall_ms());
    e = tw_op_end(s, own, drv_sq_run(&s->sq, stmt, "batch insert"));
out_free:
    drv_free(params);
    if (e != DRV_OK)
        id_out[0] = '\0';
    return e;
}

/* "counts" (every state, 0 when none), "total" and "pending" of a batch. */
static drv_err batch_counts(tw_store *s, const char *tenant, const char *id, json_t *doc)
{
    sqlite3_stmt *stmt = NULL;
    int64_t counts[DRV_CMD_STATE_COUNT] = {0}, total = 0;
    drv_err e = tw_scoped(s, tenant, TQ_BATCH_COUNTS, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, id, -1, SQLITE_TRANSIENT);
    while ((e = drv_sq_step(&s->sq, stmt, "batch counts")) == DRV_OK) {
        int st = sqlite3_column_int(stmt, 0);
        if (st >= 0 && st < DRV_CMD_STATE_COUNT) /* the CHECK constraint keeps it so */
            counts[st] += sqlite3_column_int64(stmt, 1);
    }
    sqlite3_reset(stmt);
    if (e != DRV_NOTFOUND)
        return e;
    json_t *c = json_object();
    bool ok = c != NULL;
    for (int i = 0; ok && i < DRV_CMD_STATE_COUNT; i++) {
        ok = drv_sq_set(c, drv_cmd_state_name((drv_cmd_state)i), json_integer(counts[i]));
        total += counts[i];
    }
    if (!ok) {
        json_decref(c);
        return DRV_NOMEM;
    }
    int64_t pending = counts[DRV_CMD_QUEUED] + counts[DRV_CMD_SENT] + counts[DRV_CMD_DELIVERED];
    ok = drv_sq_set(doc, "total", json_integer(total));
    ok = drv_sq_set(doc, "counts", c) && ok; /* steals c either way */
    ok = ok && drv_sq_set(doc, "pending", json_integer(pending));
    return ok ? DRV_OK : DRV_NOMEM;
}

drv_err tw_batch_get(drv_twin_store *st, const char *tenant, const char *id, json_t **out)
{
    tw_store *s = tw_of(st);
    sqlite3_stmt *stmt = NULL;
    json_t *doc = NULL, *params = NULL;
    if (!id)
        return DRV_INVAL;
    drv_err e = tw_scoped(s, tenant, TQ_BATCH_GET, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_text(stmt, 2, id, -1, SQLITE_TRANSIENT);
    e = drv_sq_step(&s->sq, stmt, "batch get");
    if (e == DRV_OK)
        e = drv_sq_json_col(&s->sq, stmt, 3, &params);
    if (e == DRV_OK) {
        doc = json_object();
        bool ok = doc && drv_sq_set(doc, "id", json_string(drv_sq_col_text(stmt, 0))) &&
                  drv_sq_set(doc, "group", json_string(drv_sq_col_text(stmt, 1))) &&
                  drv_sq_set(doc, "name", json_string(drv_sq_col_text(stmt, 2)));
        if (doc) { /* steals params even when it fails */
            ok = drv_sq_set(doc, "params", params ? params : json_object()) && ok;
            params = NULL;
        }
        ok = ok && drv_sq_set(doc, "created_at", drv_sq_time_json(sqlite3_column_int64(stmt, 4)));
        e = ok ? DRV_OK : DRV_NOMEM;
    }
    sqlite3_reset(stmt);
    json_decref(params);
    if (e == DRV_OK)
        e = batch_counts(s, tenant, id, doc);
    if (e != DRV_OK) {
        json_decref(doc);
        return e;
    }
    *out = doc;
    return DRV_OK;
}

/* -- purge ------------------------------------------------------------------------- */

drv_err tw_purge_device(drv_twin_store *st, const char *tenant, const char *device)
{
    /* Transitions first: they find their commands through the device. */
    static const tw_query steps[] = {TQ_PURGE_TRANSITIONS, TQ_PURGE_COMMANDS, TQ_PURGE_HISTORY,
                                     TQ_PURGE_SHADOWS};
    tw_store *s = tw_of(st);
    bool own = false;
    if (!tw_valid_str(tenant, 1, TW_TENANT_MAX) || !tw_valid_str(device, 1, TW_KEY_MAX))
        return DRV_INVAL;
    drv_err e = tw_op_begin(s, &own);
    if (e != DRV_OK)
        return e;
    for (size_t i = 0; e == DRV_OK && i < sizeof(steps) / sizeof(steps[0]); i++) {
        sqlite3_stmt *stmt = NULL;
        e = tw_scoped(s, tenant, steps[i], &stmt);
        if (e == DRV_OK) {
            sqlite3_bind_text(stmt, 2, device, -1, SQLITE_TRANSIENT);
            e = drv_sq_run(&s->sq, stmt, "purge device");
        }
    }
    return tw_op_end(s, own, e);
}
