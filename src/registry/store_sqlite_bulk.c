/*
 * store_sqlite_bulk.c — doc_create_many: many documents in one transaction,
 * for bulk device provisioning (POST .../device-imports).
 *
 * One BEGIN IMMEDIATE ... COMMIT per batch, so a batch of 500 devices costs
 * one fsync instead of 500.  Items are independent: reserving an item's id
 * is its first write, and the only one that can fail because of the item
 * (the id is taken, or was used once: ids are never reused).  A failed
 * INSERT undoes only that statement (SQLite's ABORT), so the item is marked
 * DRV_EXISTS and the batch goes on; every later write of a reserved id
 * (its document, its "provisioned" event, its secret credential) cannot
 * conflict, so any other failure is the store's and aborts the batch.  A
 * dry run makes the same writes and rolls them back: its results are what
 * a real run would give at that moment.
 */
#include "registry/store_int.h"

#include <string.h>

#include "core/alloc.h"

#define CRED_ID_CHARS 16
#define SECRET_HASH_MAX 512

/* Store one item whose id is reserved: document, event, credential. */
static drv_err insert_item(sq_store *s, const drv_scope *sc, const char *kind, const char *id,
                           const char *text, const char *secret_hash, int64_t now)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, SQ_DOC_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, kind);
        drv_sq_bind_text(stmt, 3, id);
        sqlite3_bind_int64(stmt, 4, 1);
        drv_sq_bind_text(stmt, 5, text);
        sqlite3_bind_int64(stmt, 6, now);
        sqlite3_bind_int64(stmt, 7, now);
        e = drv_sq_run(&s->sq, stmt, "bulk doc insert");
    }
    if (e != DRV_OK || strcmp(kind, DRV_KIND_DEVICE) != 0)
        return e;
    e = sq_scoped(s, sc, SQ_EVENT_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, id);
        sqlite3_bind_int64(stmt, 3, now);
        drv_sq_bind_text(stmt, 4, "provisioned");
        e = drv_sq_run(&s->sq, stmt, "bulk event insert");
    }
    if (e == DRV_OK)
        sq_note_event(s, sc->tenant, id, "provisioned", now, NULL);
    if (e != DRV_OK || !secret_hash)
        return e;
    char cred[40];
    e = drv_sq_random_id(&s->sq, "cred_", CRED_ID_CHARS, cred, sizeof(cred));
    if (e == DRV_OK)
        e = sq_scoped(s, sc, SQ_CRED_INSERT, &stmt);
    if (e == DRV_OK) {
        drv_sq_bind_text(stmt, 2, cred);
        drv_sq_bind_text(stmt, 3, id);
        drv_sq_bind_text(stmt, 4, "secret");
        drv_sq_bind_text(stmt, 5, secret_hash);
        sqlite3_bind_int64(stmt, 9, now);
        e = drv_sq_run(&s->sq, stmt, "bulk credential insert");
    }
    return e;
}

drv_err sq_doc_create_many(drv_store *st, const drv_scope *sc, const char *kind,
                           drv_doc_batch_item *items, size_t n, bool dry_run)
{
    sq_store *s = sq_of(st);
    if (!sc || !sq_valid_tenant_id(sc->tenant) || !sq_valid_kind(kind) || n > DRV_STORE_BATCH_MAX ||
        (n && !items))
        return DRV_INVAL;
    if (n == 0)
        return DRV_OK;
    char **texts = drv_calloc(n, sizeof(*texts));
    if (!texts)
        return DRV_NOMEM;
    int64_t now = drv_store_now_ms();
    drv_err e = DRV_OK;

    /* The stored form of each item, before the write lock is taken. */
    for (size_t i = 0; i < n && e == DRV_OK; i++) {
        drv_doc_batch_item *it = &items[i];
        const char *id = json_string_value(json_object_get(it->doc, "id"));
        it->result = DRV_OK;
        if (!json_is_object(it->doc) || !sq_valid_id(id) ||
            (it->secret_hash && (!*it->secret_hash || strlen(it->secret_hash) > SECRET_HASH_MAX))) {
            it->result = DRV_INVAL;
            continue;
        }
        json_t *d = sq_doc_form_new(sc->tenant, kind, id, it->doc, now);
        if (!d) {
            e = DRV_NOMEM;
            break;
        }
        drv_err de = drv_sq_json_dump(d, DRV_STORE_DOC_MAX, &texts[i]);
        json_decref(d);
        if (de == DRV_TOOBIG || de == DRV_INVAL)
            it->result = de;
        else
            e = de;
    }
    if (e == DRV_OK)
        e = sq_begin(s);
    if (e != DRV_OK)
        goto out_free;

    for (size_t i = 0; i < n && e == DRV_OK; i++) {
        drv_doc_batch_item *it = &items[i];
        if (it->result != DRV_OK)
            continue;
        const char *id = json_string_value(json_object_get(it->doc, "id"));
        sqlite3_stmt *stmt = NULL;
        e = sq_scoped(s, sc, SQ_ID_RESERVE, &stmt);
        if (e == DRV_OK) {
            drv_sq_bind_text(stmt, 2, kind);
            drv_sq_bind_text(stmt, 3, id);
            e = drv_sq_run(&s->sq, stmt, "bulk reserve id");
        }
        if (e == DRV_EXISTS) { /* this item only: the statement alone was undone */
            it->result = DRV_EXISTS;
            e = DRV_OK;
            continue;
        }
        if (e == DRV_OK)
            e = insert_item(s, sc, kind, id, texts[i], it->secret_hash, now);
    }
    if (e == DRV_OK && !dry_run)
        e = sq_commit(s);
    else
        sq_rollback(s);

out_free:
    for (size_t i = 0; i < n; i++)
        drv_free(texts[i]);
    drv_free(texts);
    return e;
}
