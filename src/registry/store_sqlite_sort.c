/*
 * store_sqlite_sort.c — document lists in another order than by id
 * (drv_doc_filter.sort): by name, creation or update time, either way.
 *
 * Keyset pagination over (key, id): each sort has its own statement
 * (DOC_LIST_SORTED in store_sqlite_sql.c) that continues strictly after the
 * last (key, id) pair seen, so pages neither repeat nor skip documents while
 * others are added or removed, and the keyset indexes of migration 3 serve
 * every page as an index range.  A document whose key changes between two
 * pages (a rename) may be seen twice or not at all, as in any keyset scheme.
 *
 * The cursor is the base64url text "<sort> RS <id> RS <key>" (RS = 0x1e):
 * the sort guards against a cursor from another order, the id cannot hold
 * RS, and the key, last, may hold anything but NUL.
 */
#include "registry/store_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

#define SEP '\x1e'
/* Sort name + id + the longest key a cursor may carry, with separators. */
#define CURSOR_TEXT_MAX 2048

typedef struct sort_def {
    const char *name; /* as drv_doc_filter.sort spells it */
    sq_query q;       /* its statement */
    bool integer;     /* the key is an integer column (a time in ms) */
} sort_def;

static const sort_def sort_table[] = {
    {"-id", SQ_DOC_LIST_ID_DESC, false},
    {"name", SQ_DOC_LIST_NAME, false},
    {"-name", SQ_DOC_LIST_NAME_DESC, false},
    {"created_at", SQ_DOC_LIST_CREATED, true},
    {"-created_at", SQ_DOC_LIST_CREATED_DESC, true},
    {"updated_at", SQ_DOC_LIST_UPDATED, true},
    {"-updated_at", SQ_DOC_LIST_UPDATED_DESC, true},
};

static const sort_def *find_sort(const char *name)
{
    for (size_t i = 0; i < sizeof(sort_table) / sizeof(sort_table[0]); i++)
        if (strcmp(sort_table[i].name, name) == 0)
            return &sort_table[i];
    return NULL;
}

/* The cursor of the current row of stmt (id in column 0, key in column 2). */
static char *cursor_of(const sort_def *sd, sqlite3_stmt *stmt)
{
    const char *id = drv_sq_col_text(stmt, 0);
    char num[24];
    const char *key = num;
    if (sd->integer)
        snprintf(num, sizeof(num), "%lld", (long long)sqlite3_column_int64(stmt, 2));
    else
        key = drv_sq_col_text(stmt, 2);
    size_t n = strlen(sd->name) + strlen(id) + strlen(key) + 3;
    char *text = drv_malloc(n);
    if (!text)
        return NULL;
    snprintf(text, n, "%s%c%s%c%s", sd->name, SEP, id, SEP, key);
    char *c = drv_sq_cursor_encode(text);
    drv_free(text);
    return c;
}

/* Bind the position a cursor names to ?3 (key) and ?14 (id). */
static drv_err bind_cursor(const sort_def *sd, const char *cursor, sqlite3_stmt *stmt)
{
    char *text = drv_malloc(CURSOR_TEXT_MAX);
    if (!text)
        return DRV_NOMEM;
    drv_err e = DRV_INVAL;
    if (drv_sq_cursor_decode(cursor, text, CURSOR_TEXT_MAX) != DRV_OK)
        goto out;
    char *id = strchr(text, SEP);
    char *key = id ? strchr(id + 1, SEP) : NULL;
    if (!key)
        goto out;
    *id++ = '\0';
    *key++ = '\0';
    if (strcmp(text, sd->name) != 0 || !sq_valid_id(id))
        goto out;
    if (sd->integer) {
        char *end;
        errno = 0;
        long long v = strtoll(key, &end, 10);
        if (!*key || *end || errno)
            goto out;
        sqlite3_bind_int64(stmt, 3, v);
    } else {
        sqlite3_bind_text(stmt, 3, key, -1, SQLITE_TRANSIENT);
    }
    sqlite3_bind_text(stmt, 14, id, -1, SQLITE_TRANSIENT);
    e = DRV_OK;
out:
    drv_free(text);
    return e;
}

/* The position before every document: the least key and id ascending, and
 * descending a key and id above all (every stored text is UTF-8, which never
 * holds the byte 0xFF, and SQLite compares text bytewise). */
static void bind_start(const sort_def *sd, sqlite3_stmt *stmt)
{
    bool desc = sd->name[0] == '-';
    if (sd->integer)
        sqlite3_bind_int64(stmt, 3, desc ? INT64_MAX : INT64_MIN);
    else
        sqlite3_bind_text(stmt, 3, desc ? "\xff" : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 14, desc ? "\xff" : "", -1, SQLITE_STATIC);
}

drv_err sq_doc_list_sorted(sq_store *s, const drv_scope *sc, const char *kind,
                           const drv_doc_filter *f, const drv_page *pg, json_t **out)
{
    uint32_t limit;
    *out = NULL;
    const sort_def *sd = f && f->sort ? find_sort(f->sort) : NULL;
    if (!sd || !sq_valid_kind(kind) || sq_page_limit(pg, &limit) != DRV_OK)
        return DRV_INVAL;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_scoped(s, sc, sd->q, &stmt);
    if (e != DRV_OK)
        return e;
    drv_sq_bind_text(stmt, 2, kind);
    if (pg && pg->cursor)
        e = bind_cursor(sd, pg->cursor, stmt);
    else
        bind_start(sd, stmt);
    if (e == DRV_OK)
        e = sq_bind_doc_filter(stmt, f);
    if (e != DRV_OK) {
        drv_sq_reset(stmt);
        return e;
    }
    sqlite3_bind_int64(stmt, 11, (int64_t)limit + 1);

    char *cursor = NULL;
    bool more = false;
    json_t *items = json_array();
    if (!items) {
        e = DRV_NOMEM;
        goto out;
    }
    for (uint32_t n = 0;; n++) {
        e = drv_sq_step(&s->sq, stmt, "sorted list");
        if (e == DRV_NOTFOUND) {
            e = DRV_OK;
            break;
        }
        if (e != DRV_OK)
            goto out;
        if (n == limit) { /* the extra row: there is a next page */
            more = true;
            break;
        }
        json_t *item = NULL;
        e = drv_sq_json_col(&s->sq, stmt, 1, &item);
        if (e == DRV_OK && !item)
            e = DRV_CORRUPT;
        if (e == DRV_OK && json_array_append_new(items, item) != 0)
            e = DRV_NOMEM;
        if (e == DRV_OK && n + 1 == limit && !(cursor = cursor_of(sd, stmt)))
            e = DRV_NOMEM;
        if (e != DRV_OK)
            goto out;
    }
    drv_sq_reset(stmt);
    e = drv_sq_list_answer(items, more ? cursor : NULL, out);
    items = NULL;
out:
    drv_sq_reset(stmt);
    json_decref(items);
    drv_free(cursor);
    return e;
}
