/*
 * store_sqlite.c — the SQLite backend of the registry store (store.h): opening
 * a handle, schema migrations, the one scoped entry point to the statement
 * cache, transactions with the event hook, and the helpers the op files
 * share (validation, times, scopes).  The generic SQLite plumbing under
 * them is src/sqlite/sq.h.
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
#include <time.h>

#include "core/alloc.h"
#include "core/ident.h"
#include "core/log.h"

#define MS_PER_DAY 86400000LL

/* -- statements ---------------------------------------------------------------- */

drv_err sq_scoped(sq_store *s, const drv_scope *sc, sq_query q, sqlite3_stmt **out)
{
    if (!sc || !sc->tenant || !sq_valid_tenant_id(sc->tenant))
        return DRV_INVAL;
    return drv_sq_scoped(&s->sq, sc->tenant, (int)q, out);
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
    ev->id = sqlite3_last_insert_rowid(s->sq.db);
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

/* -- transactions ---------------------------------------------------------------- */

drv_err sq_begin(sq_store *s)
{
    if (s->reader)
        return DRV_UNSUPPORTED;
    return drv_sq_begin(&s->sq);
}

void sq_rollback(sq_store *s)
{
    noted_end(s, false);
    drv_sq_rollback(&s->sq);
}

drv_err sq_commit(sq_store *s)
{
    drv_err e = drv_sq_commit(&s->sq);
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

/* -- validation ------------------------------------------------------------------ */

bool sq_valid_id(const char *id)
{
    return drv_id_valid(id);
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
                                        DRV_KIND_GROUP, DRV_KIND_TEMPLATE};
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

/* -- scopes ------------------------------------------------------------------------ */

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

/* -- open, migrate, close ------------------------------------------------------------ */

static void sq_close(drv_store *st)
{
    sq_store *s = sq_of(st);
    noted_end(s, false);
    drv_free(s->noted);
    drv_sq_close(&s->sq);
    drv_free(s);
}

static drv_err sq_ping(drv_store *st)
{
    sq_store *s = sq_of(st);
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(&s->sq, SQ_PING, &stmt);
    if (e != DRV_OK)
        return e;
    e = drv_sq_step(&s->sq, stmt, "ping");
    drv_sq_reset(stmt);
    return e == DRV_NOTFOUND ? DRV_IO : e;
}

static drv_err schema_version(drv_sq *c, int64_t *v)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(c, SQ_SCHEMA_VERSION, &stmt);
    return e == DRV_OK ? drv_sq_step_int(c, stmt, "schema version", v) : e;
}

/* A row of schema_migrations per version applied. */
static drv_err schema_record(drv_sq *c, int64_t v)
{
    sqlite3_stmt *stmt = NULL;
    drv_err e = drv_sq_unscoped(c, SQ_SCHEMA_RECORD, &stmt);
    if (e != DRV_OK)
        return e;
    sqlite3_bind_int64(stmt, 1, v);
    sqlite3_bind_int64(stmt, 2, drv_store_now_ms());
    return drv_sq_run(c, stmt, "record migration");
}

/* Bring the schema to the newest version (drv_sq_migrate), after making the
 * table that records it. */
static drv_err migrate(sq_store *s)
{
    char *msg = NULL;
    if (sqlite3_exec(s->sq.db, sq_schema_bootstrap, NULL, NULL, &msg) != SQLITE_OK) {
        drv_error("store: cannot create schema_migrations", "error", msg ? msg : "", "path",
                  s->sq.path);
        sqlite3_free(msg);
        return DRV_IO;
    }
    const drv_sq_schema sc = {.steps = sq_migrations,
                              .count = sq_migration_count,
                              .version = schema_version,
                              .record = schema_record};
    return drv_sq_migrate(&s->sq, &sc);
}

/* A reader opens an existing database at exactly the binary's schema. */
static drv_err check_schema(sq_store *s)
{
    int64_t v = 0;
    if (sqlite3_table_column_metadata(s->sq.db, "main", "schema_migrations", "version", NULL, NULL,
                                      NULL, NULL, NULL) != SQLITE_OK) {
        drv_error("store: not a drover registry (no schema_migrations)", "path", s->sq.path);
        return DRV_CONFIG;
    }
    drv_err e = schema_version(&s->sq, &v);
    if (e != DRV_OK)
        return e;
    if (v > sq_migration_count)
        return drv_sq_too_new(&s->sq, v, sq_migration_count);
    if (v < sq_migration_count) {
        drv_error("store: database schema is older than this binary; open it for writing first",
                  "path", s->sq.path);
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
    .ca_crl_set = sq_ca_crl_set,
    .ca_registration_code = sq_ca_registration_code,
    .lookup_cas = sq_lookup_cas,
    .device_provision_x509 = sq_device_provision_x509,
};

/* A writer: WAL with synchronous=FULL and foreign keys enforced. */
static const drv_sq_pragma writer_pragmas[] = {
    {"PRAGMA journal_mode = WAL", "wal"},
    {"PRAGMA synchronous = FULL", NULL},
    {"PRAGMA foreign_keys = ON", NULL},
    {"PRAGMA foreign_keys", "1"},
};

/* query_only rather than SQLITE_OPEN_READONLY: a read-only WAL connection
 * cannot create the -shm file when no writer is open. */
static const drv_sq_pragma reader_pragmas[] = {
    {"PRAGMA query_only = ON", NULL},
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
    s->sq = (drv_sq){.who = "store",
                     .tenant_col = SQ_TENANT_COL,
                     .defs = sq_queries,
                     .stmt = s->stmt,
                     .ndefs = SQ_COUNT,
                     .cantopen_notfound = true};
    s->sq.path = drv_strdup(path);
    if (!s->sq.path) {
        drv_free(s);
        return DRV_NOMEM;
    }
    drv_err e;
    if (reader) /* it never creates the file: it opens what a writer made */
        e = drv_sq_open(&s->sq, false, reader_pragmas,
                        sizeof(reader_pragmas) / sizeof(reader_pragmas[0]));
    else
        e = drv_sq_open(&s->sq, true, writer_pragmas,
                        sizeof(writer_pragmas) / sizeof(writer_pragmas[0]));
    if (e == DRV_OK)
        e = reader ? check_schema(s) : migrate(s);
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
