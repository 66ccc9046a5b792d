/*
 * sq.c — the SQLite plumbing of the registry and twin stores (sq.h): the
 * connection's life, the statement cache, error mapping, transactions,
 * migrations, and the row, cursor and JSON helpers.
 *
 * Nothing here knows a table: SQL text comes from the backend's drv_sq_def
 * table (or, for pragmas and migrations, from the backend's arguments).
 */
#include "sqlite/sq.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/b64.h"
#include "core/log.h"
#include "core/timefmt.h"
#include "platform/clock.h"

#define BUSY_TIMEOUT_MS 5000
#define PAGE_DEFAULT 100
#define PAGE_MAX 1000
#define MSG_MAX 128

/* "<who>: text", the message of a log line about c, in buf[MSG_MAX]. */
static const char *msg(const drv_sq *c, const char *text, char *buf)
{
    snprintf(buf, MSG_MAX, "%s: %s", c->who, text);
    return buf;
}

/* -- errors ------------------------------------------------------------------ */

static drv_err map_rc(const drv_sq *c, int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return DRV_EXISTS;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return DRV_NOTFOUND; /* the tenant or device the row belongs to */
    default:
        break;
    }
    switch (rc & 0xff) {
    case SQLITE_OK:
        return DRV_OK;
    case SQLITE_CONSTRAINT:
        return DRV_INVAL;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return DRV_AGAIN;
    case SQLITE_NOMEM:
        return DRV_NOMEM;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return DRV_CORRUPT;
    case SQLITE_TOOBIG:
        return DRV_TOOBIG;
    case SQLITE_CANTOPEN:
        return c->cantopen_notfound ? DRV_NOTFOUND : DRV_IO;
    default:
        return DRV_IO;
    }
}

/* Map an SQLite result code to drv_err and log it once with what; expected
 * outcomes (a duplicate key, a missing parent row) are logged at debug. */
static drv_err fail(drv_sq *c, int rc, const char *what)
{
    char buf[MSG_MAX];
    drv_err e = map_rc(c, rc);
    drv_log_level level = DRV_LOG_ERROR;
    if (e == DRV_EXISTS || e == DRV_NOTFOUND)
        level = DRV_LOG_DEBUG;
    else if (e == DRV_AGAIN)
        level = DRV_LOG_WARN;
    drv_log(level, msg(c, "sqlite error", buf), "op", what, "error", sqlite3_errmsg(c->db), "path",
            c->path, (const char *)0);
    return e;
}

/* -- open, close ------------------------------------------------------------------ */

/* Run a pragma and, when want is not NULL, check its one-row answer. */
static drv_err pragma(drv_sq *c, const char *sql, const char *want)
{
    char buf[MSG_MAX];
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(c->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return fail(c, rc, sql);
    rc = sqlite3_step(stmt);
    drv_err e = DRV_OK;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        e = fail(c, rc, sql);
    } else if (want && (rc != SQLITE_ROW || sqlite3_stricmp(drv_sq_col_text(stmt, 0), want) != 0)) {
        drv_error(msg(c, "pragma not in effect", buf), "pragma", sql, "got",
                  rc == SQLITE_ROW ? drv_sq_col_text(stmt, 0) : "", "path", c->path);
        e = DRV_CONFIG;
    }
    sqlite3_finalize(stmt);
    return e;
}

/*
 * Waiting for another connection's write lock.  SQLite's own handler sleeps
 * 1, 2, 5, 10, 15, 20, 25 ms between tries, far longer than the lock is held
 * (one transaction and its fsync, a millisecond or two): two threads that
 * write in turn (the API thread and the twin service) then spend most of
 * their time asleep.  Poll at 100 µs, doubling to 1 ms, up to the timeout.
 */
static int busy_wait(void *ud, int tries)
{
    drv_sq *c = ud;
    uint64_t now = drv_mono_ms();
    if (tries == 0)
        c->busy_since_ms = now;
    if (now - c->busy_since_ms >= BUSY_TIMEOUT_MS)
        return 0; /* SQLITE_BUSY: DRV_AGAIN to the caller */
    usleep(tries < 4 ? 100u << tries : 1000u);
    return 1;
}

drv_err drv_sq_open(drv_sq *c, bool create, const drv_sq_pragma *p, size_t n)
{
    char buf[MSG_MAX];
    /* NOMUTEX: a connection serves one thread at a time (sq.h). */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(c->path, &c->db, flags, NULL);
    if (rc != SQLITE_OK) {
        /* Not through fail(): a missing file is worth an error line here. */
        drv_error(msg(c, "cannot open database", buf), "error", sqlite3_errstr(rc), "path",
                  c->path);
        return map_rc(c, rc);
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_handler(c->db, busy_wait, c);
    /* Refuse "double-quoted strings" as literals and writes to the schema
     * through SQL tricks. */
    sqlite3_db_config(c->db, SQLITE_DBCONFIG_DQS_DML, 0, NULL);
    sqlite3_db_config(c->db, SQLITE_DBCONFIG_DQS_DDL, 0, NULL);
    sqlite3_db_config(c->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    drv_err e = DRV_OK;
    for (size_t i = 0; i < n && e == DRV_OK; i++)
        e = pragma(c, p[i].sql, p[i].want);
    return e;
}

void drv_sq_close(drv_sq *c)
{
    char buf[MSG_MAX];
    for (int i = 0; i < c->ndefs; i++)
        sqlite3_finalize(c->stmt[i]);
    if (sqlite3_close(c->db) != SQLITE_OK)
        drv_error(msg(c, "close failed", buf), "error", sqlite3_errmsg(c->db), "path", c->path);
    drv_free(c->path);
    c->path = NULL;
}

/* -- migrations ---------------------------------------------------------------- */

drv_err drv_sq_too_new(drv_sq *c, int64_t v, int count)
{
    char buf[MSG_MAX], db[24], bin[24];
    snprintf(db, sizeof(db), "%lld", (long long)v);
    snprintf(bin, sizeof(bin), "%d", count);
    drv_error(msg(c, "database schema is newer than this binary; upgrade drover", buf),
              "db_version", db, "binary_version", bin, "path", c->path);
    return DRV_CONFIG;
}

drv_err drv_sq_migrate_sql(drv_sq *c, const char *sql, int64_t v)
{
    char buf[MSG_MAX], ver[24], *err = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &err) == SQLITE_OK)
        return DRV_OK;
    snprintf(ver, sizeof(ver), "%lld", (long long)v);
    drv_error(msg(c, "migration failed", buf), "version", ver, "error", err ? err : "", "path",
              c->path);
    sqlite3_free(err);
    return DRV_IO;
}

drv_err drv_sq_migrate(drv_sq *c, const drv_sq_schema *sc)
{
    for (;;) {
        int64_t v = 0;
        drv_err e = drv_sq_begin(c);
        if (e == DRV_OK)
            e = sc->version(c, &v);
        if (e != DRV_OK || v >= sc->count) {
            drv_sq_rollback(c);
            return e != DRV_OK ? e : v > sc->count ? drv_sq_too_new(c, v, sc->count) : DRV_OK;
        }
        e = drv_sq_migrate_sql(c, sc->steps[v], v + 1);
        if (e == DRV_OK)
            e = sc->record(c, v + 1);
        if (e == DRV_OK)
            e = drv_sq_commit(c);
        if (e != DRV_OK) {
            drv_sq_rollback(c);
            return e;
        }
        char buf[MSG_MAX], ver[24];
        snprintf(ver, sizeof(ver), "%lld", (long long)v + 1);
        drv_info(msg(c, "schema migrated", buf), "version", ver, "path", c->path);
    }
}

/* -- statements ---------------------------------------------------------------- */

bool drv_sq_tenant_bound(const char *sql, const char *col)
{
    char eq[64], ins[64];
    snprintf(eq, sizeof(eq), "%s = ?1", col);
    snprintf(ins, sizeof(ins), "(%s,", col);
    return strstr(sql, eq) != NULL ||
           (strstr(sql, ins) != NULL && strstr(sql, "VALUES (?1,") != NULL);
}

static drv_err prepare(drv_sq *c, int q, sqlite3_stmt **out)
{
    sqlite3_stmt *stmt = c->stmt[q];
    if (stmt) {
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
    } else {
        int rc =
            sqlite3_prepare_v3(c->db, c->defs[q].sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, NULL);
        if (rc != SQLITE_OK)
            return fail(c, rc, "prepare");
        c->stmt[q] = stmt;
    }
    *out = stmt;
    return DRV_OK;
}

drv_err drv_sq_scoped(drv_sq *c, const char *tenant, int q, sqlite3_stmt **out)
{
    assert(q >= 0 && q < c->ndefs && c->defs[q].scoped &&
           drv_sq_tenant_bound(c->defs[q].sql, c->tenant_col));
    drv_err e = prepare(c, q, out);
    if (e != DRV_OK)
        return e;
    int rc = sqlite3_bind_text(*out, 1, tenant, -1, SQLITE_TRANSIENT);
    if (rc != SQLITE_OK)
        return fail(c, rc, "bind tenant");
    return DRV_OK;
}

drv_err drv_sq_unscoped(drv_sq *c, int q, sqlite3_stmt **out)
{
    assert(q >= 0 && q < c->ndefs && !c->defs[q].scoped);
    return prepare(c, q, out);
}

drv_err drv_sq_step(drv_sq *c, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return DRV_OK;
    if (rc == SQLITE_DONE)
        return DRV_NOTFOUND;
    return fail(c, rc, what);
}

drv_err drv_sq_step_int(drv_sq *c, sqlite3_stmt *stmt, const char *what, int64_t *out)
{
    drv_err e = drv_sq_step(c, stmt, what);
    if (e == DRV_OK)
        *out = sqlite3_column_int64(stmt, 0);
    sqlite3_reset(stmt);
    return e == DRV_NOTFOUND ? DRV_IO : e;
}

drv_err drv_sq_run(drv_sq *c, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    drv_err e = rc == SQLITE_DONE ? DRV_OK : fail(c, rc, what);
    sqlite3_reset(stmt);
    return e;
}

drv_err drv_sq_exec(drv_sq *c, int q, const char *what)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(c, q, &stmt);
    return e == DRV_OK ? drv_sq_run(c, stmt, what) : e;
}

void drv_sq_reset(sqlite3_stmt *stmt)
{
    if (stmt)
        sqlite3_reset(stmt);
}

void drv_sq_bind_text(sqlite3_stmt *stmt, int idx, const char *s)
{
    /* A failed bind (out of memory) leaves the parameter NULL, which the
     * NOT NULL constraints or the query's result then report. */
    if (s)
        sqlite3_bind_text(stmt, idx, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(stmt, idx);
}

void drv_sq_bind_time(sqlite3_stmt *stmt, int idx, int64_t ms)
{
    if (ms)
        sqlite3_bind_int64(stmt, idx, ms);
    else
        sqlite3_bind_null(stmt, idx);
}

const char *drv_sq_col_text(sqlite3_stmt *stmt, int col)
{
    const unsigned char *t = sqlite3_column_text(stmt, col);
    return t ? (const char *)t : "";
}

drv_err drv_sq_col_dup(sqlite3_stmt *stmt, int col, char **out)
{
    *out = NULL;
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        return DRV_OK;
    const char *t = (const char *)sqlite3_column_text(stmt, col);
    if (!t)
        return DRV_NOMEM;
    *out = drv_strndup(t, (size_t)sqlite3_column_bytes(stmt, col));
    return *out ? DRV_OK : DRV_NOMEM;
}

bool drv_sq_copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        dst[0] = '\0';
        return false;
    }
    memcpy(dst, src, n + 1);
    return true;
}

/* -- transactions ---------------------------------------------------------------- */

drv_err drv_sq_begin(drv_sq *c)
{
    return drv_sq_exec(c, DRV_SQ_BEGIN, "begin");
}

drv_err drv_sq_commit(drv_sq *c)
{
    return drv_sq_exec(c, DRV_SQ_COMMIT, "commit");
}

void drv_sq_rollback(drv_sq *c)
{
    if (sqlite3_get_autocommit(c->db))
        return; /* SQLite already rolled back (e.g. after SQLITE_FULL) */
    drv_sq_exec(c, DRV_SQ_ROLLBACK, "rollback");
}

/* -- ids, pages, cursors ------------------------------------------------------- */

drv_err drv_sq_random_id(const drv_sq *c, const char *prefix, size_t n, char *out, size_t cap)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    char buf[MSG_MAX];
    uint8_t rnd[64];
    size_t plen = strlen(prefix);
    assert(n <= sizeof(rnd) && plen + n < cap);
    for (size_t got = 0; got < n;) {
        ssize_t r = getrandom(rnd + got, n - got, 0);
        if (r <= 0) {
            drv_error(msg(c, "getrandom failed", buf));
            return DRV_IO;
        }
        got += (size_t)r;
    }
    memcpy(out, prefix, plen);
    for (size_t i = 0; i < n; i++)
        out[plen + i] = alphabet[rnd[i] & 31]; /* 256 is a multiple of 32: no bias */
    out[plen + n] = '\0';
    return DRV_OK;
}

drv_err drv_sq_page_limit(uint32_t limit, uint32_t *out)
{
    if (limit > PAGE_MAX)
        return DRV_INVAL;
    *out = limit ? limit : PAGE_DEFAULT;
    return DRV_OK;
}

char *drv_sq_cursor_encode(const char *key)
{
    size_t n = strlen(key), cap = n / 3 * 4 + 5; /* >= (4n + 2) / 3 + 1 */
    char *out = drv_malloc(cap);
    if (out)
        drv_b64url_encode(key, n, out, cap);
    return out;
}

drv_err drv_sq_cursor_decode(const char *cursor, char *out, size_t cap)
{
    size_t len;
    /* Strict base64url of 1..cap - 1 bytes with no NUL among them. */
    if (!cursor || cap == 0 ||
        !drv_b64url_decode(cursor, strlen(cursor), (uint8_t *)out, cap - 1, &len) || len == 0 ||
        memchr(out, '\0', len))
        return DRV_INVAL;
    out[len] = '\0';
    return DRV_OK;
}

/* A decimal int64 filling [p, end). */
static bool parse_i64(const char *p, const char *end, int64_t *v)
{
    bool neg = p < end && *p == '-';
    if (neg)
        p++;
    if (p == end || end - p > 19)
        return false;
    uint64_t x = 0;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        x = x * 10 + (uint64_t)(*p - '0');
    }
    if (x > INT64_MAX)
        return false;
    *v = neg ? -(int64_t)x : (int64_t)x;
    return true;
}

char *drv_sq_cursor_encode_pos(int64_t ts, int64_t id)
{
    char key[48];
    snprintf(key, sizeof(key), "%lld:%lld", (long long)ts, (long long)id);
    return drv_sq_cursor_encode(key);
}

drv_err drv_sq_cursor_decode_pos(const char *cursor, int64_t *ts, int64_t *id)
{
    char key[48];
    if (drv_sq_cursor_decode(cursor, key, sizeof(key)) != DRV_OK)
        return DRV_INVAL;
    const char *colon = strchr(key, ':');
    if (!colon || !parse_i64(key, colon, ts) || !parse_i64(colon + 1, key + strlen(key), id))
        return DRV_INVAL;
    return DRV_OK;
}

char *drv_sq_cursor_encode_int(int64_t key)
{
    char text[24];
    snprintf(text, sizeof(text), "%lld", (long long)key);
    return drv_sq_cursor_encode(text);
}

drv_err drv_sq_cursor_decode_int(const char *cursor, int64_t *key)
{
    char text[20];
    /* A positive decimal without leading zeros (nor a sign). */
    if (drv_sq_cursor_decode(cursor, text, sizeof(text)) != DRV_OK || text[0] == '0' ||
        text[0] == '-' || !parse_i64(text, text + strlen(text), key))
        return DRV_INVAL;
    return DRV_OK;
}

/* -- list answers ---------------------------------------------------------------- */

drv_err drv_sq_list_answer(json_t *items, const char *next_cursor, json_t **out)
{
    json_t *o = json_object();
    if (!o) {
        json_decref(items);
        return DRV_NOMEM;
    }
    if (!drv_sq_set(o, "items", items) ||
        !drv_sq_set(o, "next_cursor", next_cursor ? json_string(next_cursor) : json_null())) {
        json_decref(o);
        return DRV_NOMEM;
    }
    *out = o;
    return DRV_OK;
}

/* The cursor for the key of the current row; NULL when out of memory. */
static char *key_cursor(sqlite3_stmt *stmt, drv_sq_key key)
{
    switch (key.kind) {
    case DRV_SQ_KEY_POS:
        return drv_sq_cursor_encode_pos(sqlite3_column_int64(stmt, key.col),
                                        sqlite3_column_int64(stmt, key.id_col));
    case DRV_SQ_KEY_INT:
        return drv_sq_cursor_encode_int(sqlite3_column_int64(stmt, key.col));
    case DRV_SQ_KEY_TEXT:
    default:
        return drv_sq_cursor_encode(drv_sq_col_text(stmt, key.col));
    }
}

drv_err drv_sq_collect(drv_sq *c, sqlite3_stmt *stmt, uint32_t limit, drv_sq_key key,
                       drv_sq_row_fn fn, json_t **out)
{
    char *cursor = NULL;
    bool more = false;
    drv_err e = DRV_OK;
    json_t *items = json_array();
    if (!items) {
        e = DRV_NOMEM;
        goto out_reset;
    }
    for (uint32_t n = 0;; n++) {
        e = drv_sq_step(c, stmt, "list");
        if (e == DRV_NOTFOUND) {
            e = DRV_OK;
            break;
        }
        if (e != DRV_OK)
            goto out_reset;
        if (n == limit) { /* the extra row: there is a next page */
            more = true;
            break;
        }
        json_t *item = NULL;
        e = fn(c, stmt, &item);
        if (e != DRV_OK)
            goto out_reset;
        if (json_array_append_new(items, item) != 0) {
            e = DRV_NOMEM;
            goto out_reset;
        }
        if (n + 1 == limit && !(cursor = key_cursor(stmt, key))) {
            e = DRV_NOMEM;
            goto out_reset;
        }
    }
    drv_sq_reset(stmt);
    e = drv_sq_list_answer(items, more ? cursor : NULL, out);
    items = NULL;
out_reset:
    drv_sq_reset(stmt);
    json_decref(items);
    drv_free(cursor);
    return e;
}

/* -- JSON ---------------------------------------------------------------------------- */

bool drv_sq_set(json_t *obj, const char *key, json_t *value)
{
    /* json_object_set_new releases value on failure and rejects NULL. */
    return json_object_set_new(obj, key, value) == 0;
}

drv_err drv_sq_json_dump(const json_t *j, size_t max, char **out)
{
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    size_t n = json_dumpb(j, NULL, 0, flags);
    if (n == 0)
        return DRV_INVAL;
    if (n > max)
        return DRV_TOOBIG;
    char *buf = drv_malloc(n + 1);
    if (!buf)
        return DRV_NOMEM;
    if (json_dumpb(j, buf, n, flags) != n) {
        drv_free(buf);
        return DRV_NOMEM;
    }
    buf[n] = '\0';
    *out = buf;
    return DRV_OK;
}

drv_err drv_sq_json_parse(drv_sq *c, const char *p, size_t n, json_t **out)
{
    char buf[MSG_MAX];
    json_error_t jerr;
    *out = NULL;
    if (!p)
        return DRV_OK;
    *out = json_loadb(p, n, JSON_DECODE_ANY, &jerr);
    if (!*out) {
        drv_error(msg(c, "stored JSON does not parse", buf), "error", jerr.text, "path", c->path);
        return DRV_CORRUPT;
    }
    return DRV_OK;
}

drv_err drv_sq_json_col(drv_sq *c, sqlite3_stmt *stmt, int col, json_t **out)
{
    *out = NULL;
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        return DRV_OK;
    const char *t = (const char *)sqlite3_column_text(stmt, col);
    if (!t)
        return DRV_NOMEM;
    return drv_sq_json_parse(c, t, (size_t)sqlite3_column_bytes(stmt, col), out);
}

json_t *drv_sq_time_json(int64_t ms)
{
    static const int64_t min_ms = -62167219200000LL; /* 0000-01-01T00:00:00Z */
    static const int64_t max_ms = 253402300799999LL; /* 9999-12-31T23:59:59.999Z */
    char buf[40];
    if (!ms)
        return json_null();
    /* RFC 3339 has four-digit years. */
    size_t n = drv_format_time_ms(ms < min_ms   ? min_ms
                                  : ms > max_ms ? max_ms
                                                : ms,
                                  buf, sizeof(buf));
    return json_stringn(buf, n);
}
