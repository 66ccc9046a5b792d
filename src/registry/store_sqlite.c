/*
 * store_sqlite.c — the SQLite backend of the registry store (store.h): opening
 * a handle, schema migrations, the statement cache with its one scoped entry
 * point, error mapping, and the helpers the op files share (times, ids,
 * cursors, JSON).
 *
 * The database runs in WAL mode with synchronous=FULL (a committed write is
 * on disk before the call returns), foreign keys on and a 5 s busy timeout.
 * The writer handle (drv_store_open_sqlite) migrates the schema; reader
 * handles (drv_store_open_reader) are query_only connections for other
 * threads and refuse a schema they do not know.  Every write op is one
 * BEGIN IMMEDIATE transaction.
 *
 * This file is not the place for per-resource logic (store_sqlite_docs.c,
 * _auth.c, _log.c) nor for SQL text (store_sqlite_sql.c).
 */
#include "registry/store_int.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/alloc.h"
#include "core/b64.h"
#include "core/log.h"

#define BUSY_TIMEOUT_MS 5000
#define PAGE_DEFAULT 100
#define PAGE_MAX 1000
#define MS_PER_DAY 86400000LL

/* -- errors ------------------------------------------------------------------ */

static drv_err map_rc(int rc)
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
        return DRV_NOTFOUND;
    default:
        return DRV_IO;
    }
}

drv_err sq_fail(sq_store *s, int rc, const char *what)
{
    drv_err e = map_rc(rc);
    drv_log_level level = DRV_LOG_ERROR;
    if (e == DRV_EXISTS || e == DRV_NOTFOUND)
        level = DRV_LOG_DEBUG;
    else if (e == DRV_AGAIN)
        level = DRV_LOG_WARN;
    drv_log(level, "store: sqlite error", "op", what, "error", sqlite3_errmsg(s->db), "path",
            s->path, (const char *)0);
    return e;
}

/* -- statements ---------------------------------------------------------------- */

bool sq_tenant_bound(const char *sql)
{
    return strstr(sql, "tenant_id = ?1") != NULL ||
           (strstr(sql, "(tenant_id,") != NULL && strstr(sql, "VALUES (?1,") != NULL);
}

static drv_err prepare(sq_store *s, sq_query q, sqlite3_stmt **out)
{
    sqlite3_stmt *stmt = s->stmt[q];
    if (stmt) {
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
    } else {
        int rc = sqlite3_prepare_v3(s->db, sq_queries[q].sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt,
                                    NULL);
        if (rc != SQLITE_OK)
            return sq_fail(s, rc, "prepare");
        s->stmt[q] = stmt;
    }
    *out = stmt;
    return DRV_OK;
}

drv_err sq_scoped(sq_store *s, const drv_scope *sc, sq_query q, sqlite3_stmt **out)
{
    assert(q < SQ_COUNT && sq_queries[q].scoped && sq_tenant_bound(sq_queries[q].sql));
    if (!sc || !sc->tenant || !sq_valid_tenant_id(sc->tenant))
        return DRV_INVAL;
    drv_err e = prepare(s, q, out);
    if (e != DRV_OK)
        return e;
    int rc = sqlite3_bind_text(*out, 1, sc->tenant, -1, SQLITE_TRANSIENT);
    if (rc != SQLITE_OK)
        return sq_fail(s, rc, "bind tenant");
    return DRV_OK;
}

drv_err sq_unscoped(sq_store *s, sq_query q, sqlite3_stmt **out)
{
    assert(q < SQ_COUNT && !sq_queries[q].scoped);
    return prepare(s, q, out);
}

drv_err sq_step(sq_store *s, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return DRV_OK;
    if (rc == SQLITE_DONE)
        return DRV_NOTFOUND;
    return sq_fail(s, rc, what);
}

drv_err sq_run(sq_store *s, sqlite3_stmt *stmt, const char *what)
{
    int rc = sqlite3_step(stmt);
    drv_err e = rc == SQLITE_DONE ? DRV_OK : sq_fail(s, rc, what);
    sqlite3_reset(stmt);
    return e;
}

void sq_reset(sqlite3_stmt *stmt)
{
    if (stmt)
        sqlite3_reset(stmt);
}

void sq_bind_text(sqlite3_stmt *stmt, int idx, const char *s)
{
    /* A failed bind (out of memory) leaves the parameter NULL, which the
     * NOT NULL constraints or the query's result then report. */
    if (s)
        sqlite3_bind_text(stmt, idx, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(stmt, idx);
}

void sq_bind_time(sqlite3_stmt *stmt, int idx, int64_t ms)
{
    if (ms)
        sqlite3_bind_int64(stmt, idx, ms);
    else
        sqlite3_bind_null(stmt, idx);
}

const char *sq_col_text(sqlite3_stmt *stmt, int col)
{
    const unsigned char *t = sqlite3_column_text(stmt, col);
    return t ? (const char *)t : "";
}

bool sq_copy_str(char *dst, size_t cap, const char *src)
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

drv_err sq_begin(sq_store *s)
{
    if (s->reader)
        return DRV_UNSUPPORTED;
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_unscoped(s, SQ_BEGIN, &stmt);
    if (e != DRV_OK)
        return e;
    return sq_run(s, stmt, "begin");
}

/* -- the event hook ----------------------------------------------------------- */

struct sq_noted {
    char tenant[64];
    char device[129];
    char kind[65];
    int64_t id, ts_ms;
    char *detail;
};

static drv_store_event_hook g_event_hook;
static void *g_event_hook_ud;

void drv_store_set_event_hook(drv_store_event_hook fn, void *ud)
{
    g_event_hook = fn;
    g_event_hook_ud = ud;
}

void sq_note_event(sq_store *s, const char *tenant, const char *device, const char *kind,
                   int64_t ts_ms, const char *detail)
{
    if (!g_event_hook)
        return;
    if (s->nnoted == s->noted_cap) {
        size_t cap = s->noted_cap ? s->noted_cap * 2 : 8;
        struct sq_noted *n = drv_realloc(s->noted, cap * sizeof(*n));
        if (!n)
            return; /* the live stream misses it; the history has it */
        s->noted = n;
        s->noted_cap = cap;
    }
    struct sq_noted *ev = &s->noted[s->nnoted];
    snprintf(ev->tenant, sizeof(ev->tenant), "%s", tenant);
    snprintf(ev->device, sizeof(ev->device), "%s", device);
    snprintf(ev->kind, sizeof(ev->kind), "%s", kind);
    ev->id = sqlite3_last_insert_rowid(s->db);
    ev->ts_ms = ts_ms;
    ev->detail = detail ? drv_strdup(detail) : NULL;
    if (detail && !ev->detail)
        return;
    s->nnoted++;
}

/* The transaction ended: tell the hook what it committed, or forget it. */
static void noted_end(sq_store *s, bool committed)
{
    drv_store_event_hook fn = g_event_hook;
    size_t n = s->nnoted;
    /* One call per commit: the hook publishes them as one batch. */
    drv_store_event *evs = committed && fn && n ? drv_malloc(n * sizeof(*evs)) : NULL;
    for (size_t i = 0; evs && i < n; i++) {
        struct sq_noted *no = &s->noted[i];
        evs[i] = (drv_store_event){.tenant = no->tenant,
                                   .device = no->device,
                                   .kind = no->kind,
                                   .id = no->id,
                                   .ts_ms = no->ts_ms,
                                   .detail = no->detail};
    }
    if (evs)
        fn(g_event_hook_ud, evs, n);
    drv_free(evs);
    for (size_t i = 0; i < n; i++)
        drv_free(s->noted[i].detail);
    s->nnoted = 0;
}

void sq_rollback(sq_store *s)
{
    noted_end(s, false);
    if (sqlite3_get_autocommit(s->db))
        return; /* SQLite already rolled back (e.g. after SQLITE_FULL) */
    sqlite3_stmt *stmt = NULL;
    if (sq_unscoped(s, SQ_ROLLBACK, &stmt) == DRV_OK)
        sq_run(s, stmt, "rollback");
}

drv_err sq_commit(sq_store *s)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_unscoped(s, SQ_COMMIT, &stmt);
    if (e == DRV_OK)
        e = sq_run(s, stmt, "commit");
    if (e != DRV_OK)
        sq_rollback(s);
    else
        noted_end(s, true);
    return e;
}

drv_err sq_end(sq_store *s, drv_err e)
{
    if (e == DRV_OK)
        e = sq_commit(s);
    if (e != DRV_OK)
        sq_rollback(s);
    return e;
}

/* -- validation and ids ---------------------------------------------------------- */

bool sq_valid_id(const char *id)
{
    if (!id)
        return false;
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok || n >= 128)
            return false;
    }
    return n >= 1;
}

bool sq_valid_tenant_id(const char *id)
{
    if (!id)
        return false;
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') || n >= 63)
            return false;
    }
    return n >= 3;
}

bool sq_valid_kind(const char *kind)
{
    static const char *const kinds[] = {DRV_KIND_USER, DRV_KIND_DEVICE, DRV_KIND_PROFILE,
                                        DRV_KIND_GROUP};
    for (size_t i = 0; kind && i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(kind, kinds[i]) == 0)
            return true;
    return false;
}

bool sq_valid_role(const char *role, bool platform)
{
    if (!role)
        return false;
    if (platform)
        return strcmp(role, "platform_admin") == 0;
    return strcmp(role, "tenant_admin") == 0 || strcmp(role, "operator") == 0 ||
           strcmp(role, "viewer") == 0;
}

drv_err sq_random_id(const char *prefix, size_t n, char *out, size_t cap)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint8_t rnd[64];
    size_t plen = strlen(prefix);
    assert(n <= sizeof(rnd) && plen + n < cap);
    for (size_t got = 0; got < n;) {
        ssize_t r = getrandom(rnd + got, n - got, 0);
        if (r <= 0) {
            drv_error("store: getrandom failed");
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

/* -- time -------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * algorithm), so no libc time zone state is involved. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

int64_t drv_store_now_ms(void)
{
    /* src/platform/clock.h offers whole wall-clock seconds only; registry
     * times need milliseconds.  (A drv_wall_ms there would be the right
     * home for this.) */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *drv_store_format_time(int64_t ms, char *buf, size_t cap)
{
    static const int64_t min_ms = -62167219200000LL; /* 0000-01-01T00:00:00Z */
    static const int64_t max_ms = 253402300799999LL; /* 9999-12-31T23:59:59.999Z */
    assert(cap >= 25);
    if (ms < min_ms)
        ms = min_ms;
    if (ms > max_ms)
        ms = max_ms;
    int64_t days = ms / MS_PER_DAY, rem = ms % MS_PER_DAY;
    if (rem < 0) {
        rem += MS_PER_DAY;
        days--;
    }
    int64_t y;
    unsigned mo, d;
    civil_from_days(days, &y, &mo, &d);
    unsigned r = (unsigned)rem;
    snprintf(buf, cap, "%04d-%02u-%02uT%02u:%02u:%02u.%03uZ", (int)y, mo, d, r / 3600000,
             r / 60000 % 60, r / 1000 % 60, r % 1000);
    return buf;
}

/* n decimal digits at *p, advancing it. */
static bool digits(const char **p, int n, unsigned *v)
{
    unsigned x = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        x = x * 10 + (unsigned)(c - '0');
    }
    *p += n;
    *v = x;
    return true;
}

bool drv_store_parse_time(const char *s, int64_t *ms)
{
    static const unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mo, d, h, mi, sec, frac = 0, oh = 0, om = 0;
    int sign = 0;
    if (!s)
        return false;
    const char *p = s;
    if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
        !digits(&p, 2, &d))
        return false;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return false;
    p++;
    if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || *p++ != ':' ||
        !digits(&p, 2, &sec))
        return false;
    if (*p == '.') {
        p++;
        int n = 0;
        for (; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 3)
                frac = frac * 10 + (unsigned)(*p - '0');
        if (n == 0)
            return false;
        for (; n < 3; n++)
            frac *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '+' ? 1 : -1;
        if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om))
            return false;
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap))
        return false;
    /* Second 60 is a leap second; it lands on the next minute's first. */
    if (h > 23 || mi > 59 || sec > 60 || oh > 23 || om > 59)
        return false;
    int64_t t = days_from_civil(y, mo, d) * MS_PER_DAY +
                ((int64_t)h * 3600 + (int64_t)mi * 60 + sec) * 1000 + frac;
    t -= (int64_t)sign * ((int64_t)oh * 60 + om) * 60000;
    *ms = t;
    return true;
}

json_t *sq_time_json(int64_t ms)
{
    char buf[32];
    return ms ? json_string(drv_store_format_time(ms, buf, sizeof(buf))) : json_null();
}

/* -- pagination -------------------------------------------------------------------- */

drv_err sq_page_limit(const drv_page *pg, uint32_t *limit)
{
    uint32_t n = pg ? pg->limit : 0;
    if (n > PAGE_MAX)
        return DRV_INVAL;
    *limit = n ? n : PAGE_DEFAULT;
    return DRV_OK;
}

char *sq_cursor_encode(const char *key)
{
    size_t n = strlen(key), cap = n / 3 * 4 + 5; /* >= (4n + 2) / 3 + 1 */
    char *out = drv_malloc(cap);
    if (out)
        drv_b64url_encode(key, n, out, cap);
    return out;
}

drv_err sq_cursor_decode(const char *cursor, char *out, size_t cap)
{
    size_t len;
    /* Strict base64url of 1..cap - 1 bytes with no NUL among them. */
    if (cap == 0 || !drv_b64url_decode(cursor, strlen(cursor), (uint8_t *)out, cap - 1, &len) ||
        len == 0 || memchr(out, '\0', len))
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

char *sq_cursor_encode_pos(int64_t ts, int64_t id)
{
    char key[48];
    snprintf(key, sizeof(key), "%lld:%lld", (long long)ts, (long long)id);
    return sq_cursor_encode(key);
}

drv_err sq_cursor_decode_pos(const char *cursor, int64_t *ts, int64_t *id)
{
    char key[48];
    if (sq_cursor_decode(cursor, key, sizeof(key)) != DRV_OK)
        return DRV_INVAL;
    const char *colon = strchr(key, ':');
    if (!colon || !parse_i64(key, colon, ts) || !parse_i64(colon + 1, key + strlen(key), id))
        return DRV_INVAL;
    return DRV_OK;
}

drv_err sq_list_answer(json_t *items, const char *next_cursor, json_t **out)
{
    json_t *o = json_object();
    if (!o) {
        json_decref(items);
        return DRV_NOMEM;
    }
    if (!sq_set(o, "items", items) ||
        !sq_set(o, "next_cursor", next_cursor ? json_string(next_cursor) : json_null())) {
        json_decref(o);
        return DRV_NOMEM;
    }
    *out = o;
    return DRV_OK;
}

drv_err sq_collect(sq_store *s, sqlite3_stmt *stmt, uint32_t limit, int key_col, int id_col,
                   sq_row_fn fn, json_t **out)
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
        e = sq_step(s, stmt, "list");
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
        e = fn(s, stmt, &item);
        if (e != DRV_OK)
            goto out_reset;
        if (json_array_append_new(items, item) != 0) {
            e = DRV_NOMEM;
            goto out_reset;
        }
        if (n + 1 == limit) {
            cursor = id_col < 0 ? sq_cursor_encode(sq_col_text(stmt, key_col))
                                : sq_cursor_encode_pos(sqlite3_column_int64(stmt, key_col),
                                                       sqlite3_column_int64(stmt, id_col));
            if (!cursor) {
                e = DRV_NOMEM;
                goto out_reset;
            }
        }
    }
    sq_reset(stmt);
    e = sq_list_answer(items, more ? cursor : NULL, out);
    items = NULL;
out_reset:
    sq_reset(stmt);
    json_decref(items);
    drv_free(cursor);
    return e;
}

/* -- JSON ---------------------------------------------------------------------------- */

bool sq_set(json_t *obj, const char *key, json_t *value)
{
    /* json_object_set_new releases value on failure and rejects NULL. */
    return json_object_set_new(obj, key, value) == 0;
}

bool sq_join_scopes(json_t *arr, char *out, size_t cap)
{
    size_t o = 0, i;
    json_t *v;
    out[0] = '\0';
    if (!arr || json_is_null(arr))
        return true;
    if (!json_is_array(arr))
        return false;
    json_array_foreach(arr, i, v)
    {
        const char *w = json_string_value(v);
        size_t n = w ? strlen(w) : 0;
        if (n == 0 || strchr(w, ' ') || o + n + (o > 0) >= cap)
            return false;
        if (o > 0)
            out[o++] = ' ';
        memcpy(out + o, w, n + 1);
        o += n;
    }
    return true;
}

json_t *sq_split_scopes(const char *s)
{
    json_t *arr = json_array();
    while (arr && *s) {
        const char *sp = strchr(s, ' ');
        size_t n = sp ? (size_t)(sp - s) : strlen(s);
        if (json_array_append_new(arr, json_stringn(s, n)) != 0) {
            json_decref(arr);
            return NULL;
        }
        s += n + (sp != NULL);
    }
    return arr;
}

drv_err sq_json_dump(const json_t *j, char **out)
{
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    size_t n = json_dumpb(j, NULL, 0, flags);
    if (n == 0)
        return DRV_INVAL;
    if (n > DRV_STORE_DOC_MAX)
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

drv_err sq_json_col(sq_store *s, sqlite3_stmt *stmt, int col, json_t **out)
{
    *out = NULL;
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
        return DRV_OK;
    const char *text = (const char *)sqlite3_column_text(stmt, col);
    if (!text)
        return DRV_NOMEM;
    json_error_t jerr;
    *out = json_loadb(text, (size_t)sqlite3_column_bytes(stmt, col), JSON_DECODE_ANY, &jerr);
    if (!*out) {
        drv_error("store: stored JSON does not parse", "error", jerr.text, "path", s->path);
        return DRV_CORRUPT;
    }
    return DRV_OK;
}

/* -- open, migrate, close ------------------------------------------------------------ */

static void sq_close(drv_store *st)
{
    noted_end(sq_of(st), false);
    drv_free(sq_of(st)->noted);
    sq_store *s = sq_of(st);
    for (int i = 0; i < SQ_COUNT; i++)
        sqlite3_finalize(s->stmt[i]);
    if (sqlite3_close(s->db) != SQLITE_OK)
        drv_error("store: close failed", "error", sqlite3_errmsg(s->db), "path", s->path);
    drv_free(s->path);
    drv_free(s);
}

static drv_err sq_ping(drv_store *st)
{
    sq_store *s = sq_of(st);
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_unscoped(s, SQ_PING, &stmt);
    if (e != DRV_OK)
        return e;
    e = sq_step(s, stmt, "ping");
    sq_reset(stmt);
    return e == DRV_NOTFOUND ? DRV_IO : e;
}

/* Run a pragma and, when want is not NULL, check its one-row answer. */
static drv_err pragma(sq_store *s, const char *sql, const char *want)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return sq_fail(s, rc, sql);
    rc = sqlite3_step(stmt);
    drv_err e = DRV_OK;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        e = sq_fail(s, rc, sql);
    } else if (want && (rc != SQLITE_ROW || sqlite3_stricmp(sq_col_text(stmt, 0), want) != 0)) {
        drv_error("store: pragma not in effect", "pragma", sql, "got",
                  rc == SQLITE_ROW ? sq_col_text(stmt, 0) : "", "path", s->path);
        e = DRV_CONFIG;
    }
    sqlite3_finalize(stmt);
    return e;
}

static drv_err schema_version(sq_store *s, int64_t *v)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = sq_unscoped(s, SQ_SCHEMA_VERSION, &stmt);
    if (e != DRV_OK)
        return e;
    e = sq_step(s, stmt, "schema version");
    if (e == DRV_OK)
        *v = sqlite3_column_int64(stmt, 0);
    sq_reset(stmt);
    return e;
}

static drv_err too_new(sq_store *s, int64_t v)
{
    char db[24], bin[24];
    snprintf(db, sizeof(db), "%lld", (long long)v);
    snprintf(bin, sizeof(bin), "%d", sq_migration_count);
    drv_error("store: database schema is newer than this binary; upgrade drover", "db_version", db,
              "binary_version", bin, "path", s->path);
    return DRV_CONFIG;
}

/* Bring the schema to the newest version, one transaction per migration.
 * The version is read inside each transaction, so two processes opening one
 * file at once cannot apply a migration twice. */
static drv_err migrate(sq_store *s)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sq_schema_bootstrap, NULL, NULL, &msg) != SQLITE_OK) {
        drv_error("store: cannot create schema_migrations", "error", msg ? msg : "", "path",
                  s->path);
        sqlite3_free(msg);
        return DRV_IO;
    }
    for (;;) {
        int64_t v = 0;
        drv_err e = sq_begin(s);
        if (e == DRV_OK)
            e = schema_version(s, &v);
        if (e != DRV_OK) {
            sq_rollback(s);
            return e;
        }
        if (v >= sq_migration_count) {
            sq_rollback(s);
            return v > sq_migration_count ? too_new(s, v) : DRV_OK;
        }
        if (sqlite3_exec(s->db, sq_migrations[v], NULL, NULL, &msg) != SQLITE_OK) {
            char ver[24];
            snprintf(ver, sizeof(ver), "%lld", (long long)v + 1);
            drv_error("store: migration failed", "version", ver, "error", msg ? msg : "", "path",
                      s->path);
            sqlite3_free(msg);
            sq_rollback(s);
            return DRV_IO;
        }
        sqlite3_stmt *stmt = NULL;
        e = sq_unscoped(s, SQ_SCHEMA_RECORD, &stmt);
        if (e == DRV_OK) {
            sqlite3_bind_int64(stmt, 1, v + 1);
            sqlite3_bind_int64(stmt, 2, drv_store_now_ms());
            e = sq_run(s, stmt, "record migration");
        }
        if (e == DRV_OK)
            e = sq_commit(s);
        if (e != DRV_OK) {
            sq_rollback(s);
            return e;
        }
        char ver[24];
        snprintf(ver, sizeof(ver), "%lld", (long long)v + 1);
        drv_info("store: schema migrated", "version", ver, "path", s->path);
    }
}

/* A reader opens an existing database at exactly the binary's schema. */
static drv_err check_schema(sq_store *s)
{
    int64_t v = 0;
    if (sqlite3_table_column_metadata(s->db, "main", "schema_migrations", "version", NULL, NULL,
                                      NULL, NULL, NULL) != SQLITE_OK) {
        drv_error("store: not a drover registry (no schema_migrations)", "path", s->path);
        return DRV_CONFIG;
    }
    drv_err e = schema_version(s, &v);
    if (e != DRV_OK)
        return e;
    if (v > sq_migration_count)
        return too_new(s, v);
    if (v < sq_migration_count) {
        drv_error("store: database schema is older than this binary; open it for writing first",
                  "path", s->path);
        return DRV_CONFIG;
    }
    return DRV_OK;
}

static const drv_store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .ping = sq_ping,
    .platform_tenant_create = sq_tenant_create,
    .platform_tenant_get = sq_tenant_get,
    .platform_tenant_list = sq_tenant_list,
    .platform_tenant_update = sq_tenant_update,
    .platform_tenant_delete = sq_tenant_delete,
    .token_create = sq_token_create,
    .token_list = sq_token_list,
    .token_revoke = sq_token_revoke,
    .lookup_token = sq_lookup_token,
    .platform_token_count = sq_platform_token_count,
    .platform_token_list = sq_platform_token_list,
    .platform_token_revoke = sq_platform_token_revoke,
    .doc_create = sq_doc_create,
    .doc_get = sq_doc_get,
    .doc_replace = sq_doc_replace,
    .doc_delete = sq_doc_delete,
    .doc_list = sq_doc_list,
    .doc_count = sq_doc_count,
    .doc_create_many = sq_doc_create_many,
    .credential_add = sq_credential_add,
    .credential_list = sq_credential_list,
    .credential_revoke = sq_credential_revoke,
    .credential_revoke_all = sq_credential_revoke_all,
    .lookup_credentials = sq_lookup_credentials,
    .lookup_fingerprint = sq_lookup_fingerprint,
    .event_append = sq_event_append,
    .event_append_batch = sq_event_append_batch,
    .event_list = sq_event_list,
    .event_since = sq_event_since,
    .event_last_id = sq_event_last_id,
    .audit_append = sq_audit_append,
    .audit_list = sq_audit_list,
    .platform_audit_list = sq_platform_audit_list,
    .oauth_client_create = sq_oauth_client_create,
    .oauth_client_list = sq_oauth_client_list,
    .oauth_client_revoke = sq_oauth_client_revoke,
    .lookup_oauth_client = sq_lookup_oauth_client,
    .platform_signing_key_add = sq_signing_key_add,
    .platform_signing_key_list = sq_signing_key_list,
    .platform_signing_key_public = sq_signing_key_public,
    .platform_signing_key_active = sq_signing_key_active,
    .ca_create = sq_ca_create,
    .ca_list = sq_ca_list,
    .ca_get = sq_ca_get,
    .ca_revoke = sq_ca_revoke,
    .lookup_cas = sq_lookup_cas,
    .device_provision_x509 = sq_device_provision_x509,
};

static drv_err open_store(const char *path, bool reader, drv_store **out)
{
    *out = NULL;
    if (!path || !*path)
        return DRV_INVAL;
    sq_store *s = drv_calloc(1, sizeof(*s));
    if (!s)
        return DRV_NOMEM;
    s->base.ops = &sqlite_ops;
    s->reader = reader;
    s->path = drv_strdup(path);
    if (!s->path) {
        drv_free(s);
        return DRV_NOMEM;
    }
    /* NOMUTEX: a handle serves one thread at a time (store.h). */
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (reader ? 0 : SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    drv_err e;
    if (rc != SQLITE_OK) {
        /* Not through sq_fail: a missing file is worth an error line here. */
        drv_error("store: cannot open database", "error", sqlite3_errstr(rc), "path", path);
        e = map_rc(rc);
        goto out_close;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    /* Refuse "double-quoted strings" as literals and writes to the schema
     * through SQL tricks. */
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DQS_DML, 0, NULL);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DQS_DDL, 0, NULL);
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);

    if (reader) {
        /* query_only rather than SQLITE_OPEN_READONLY: a read-only WAL
         * connection cannot create the -shm file when no writer is open. */
        e = pragma(s, "PRAGMA query_only = ON", NULL);
        if (e == DRV_OK)
            e = check_schema(s);
    } else {
        e = pragma(s, "PRAGMA journal_mode = WAL", "wal");
        if (e == DRV_OK)
            e = pragma(s, "PRAGMA synchronous = FULL", NULL);
        if (e == DRV_OK)
            e = pragma(s, "PRAGMA foreign_keys = ON", NULL);
        if (e == DRV_OK)
            e = pragma(s, "PRAGMA foreign_keys", "1");
        if (e == DRV_OK)
            e = migrate(s);
    }
    if (e != DRV_OK)
        goto out_close;
    *out = &s->base;
    return DRV_OK;

out_close:
    sq_close(&s->base);
    return e;
}

drv_err drv_store_open_sqlite(const char *path, drv_store **out)
{
    return open_store(path, false, out);
}

drv_err drv_store_open_reader(const char *path, drv_store **out)
{
    return open_store(path, true, out);
}

void drv_credential_clear(drv_credential *c)
{
    if (!c)
        return;
    drv_free(c->secret_hash);
    drv_free(c->public_key_pem);
    memset(c, 0, sizeof(*c));
}
