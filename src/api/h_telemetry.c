/*
 * h_telemetry.c — telemetry queries: raw samples of a series with cursor
 * pagination, time-bucket aggregates of one series or of many (a device, a
 * group, the whole tenant), the latest value of each key, key discovery.
 *
 * Answers are written straight into the response body (a small JSON writer
 * below) rather than through jansson: a query can return tens of thousands
 * of samples, and doubles are written with the shortest text that reads
 * back to the same value (drv_format_double), which jansson does not do.
 *
 * Times in and out are milliseconds since the epoch; inputs may also be RFC
 * 3339.  `from` is inclusive, `to` exclusive; the default range is the last
 * 24 hours.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "api/api_int.h"
#include "core/alloc.h"
#include "core/jsonw.h"
#include "core/num.h"
#include "core/timefmt.h"
#include "platform/clock.h"

#define DEFAULT_RANGE_MS (24 * 3600 * 1000LL)
#define DEFAULT_LIMIT 1000u
#define MAX_LIMIT 10000u
#define MAX_SERIES_PER_QUERY 100000u

static const char *type_name(drv_value_type t)
{
    switch (t) {
    case DRV_VALUE_DOUBLE:
        return "double";
    case DRV_VALUE_INT:
        return "integer";
    case DRV_VALUE_BOOL:
        return "boolean";
    case DRV_VALUE_STRING:
        return "string";
    }
    return "unknown";
}

static void jw_begin(api_ctx *x, drv_jw *w)
{
    x->resp->status = 200;
    x->resp->content_type = "application/json";
    w->b = &x->resp->body;
    w->failed = false;
}

static void jw_end(api_ctx *x, drv_jw *w)
{
    if (w->failed) {
        drv_buf_free(&x->resp->body);
        api_problem(x, 413, "answer-too-large",
                    "the answer is too large; narrow the range or lower the limit");
    }
}

/* -- parameters ------------------------------------------------------------------------- */

static drv_ts_store *telemetry(api_ctx *x)
{
    drv_ts_store *ts = x->api->cfg.telemetry;
    if (!ts)
        api_problem(x, 503, "telemetry-disabled", "telemetry is not enabled on this server");
    return ts;
}

/* ?from= and ?to= (ms or RFC 3339), defaulting to the last 24 hours. */
bool api_time_range(api_ctx *x, int64_t *from, int64_t *to)
{
    char buf[64];
    int64_t now = (int64_t)drv_wall_ms();
    *to = now + 1;
    if (api_query(x, "to", buf, sizeof(buf)) && !drv_parse_time_ms(buf, strlen(buf), to)) {
        api_problem(x, 400, "bad-parameter", "to: not a time (ms since the epoch or RFC 3339)");
        return false;
    }
    *from = *to - DEFAULT_RANGE_MS;
    if (api_query(x, "from", buf, sizeof(buf)) && !drv_parse_time_ms(buf, strlen(buf), from)) {
        api_problem(x, 400, "bad-parameter", "from: not a time (ms since the epoch or RFC 3339)");
        return false;
    }
    if (api_failed(x))
        return false;
    if (*from < -DRV_TS_TIME_MAX || *to > DRV_TS_TIME_MAX) {
        api_problem(x, 400, "bad-parameter", "from and to: within ±2^53 ms of 1970");
        return false;
    }
    if (*from >= *to) {
        api_problem(x, 400, "bad-parameter", "from must be before to");
        return false;
    }
    return true;
}

/* ?bucket= as ms or with a unit (500ms, 10s, 5m, 1h, 1d); absent: 0 (one bucket). */
static bool bucket_param(api_ctx *x, int64_t *bucket_ms)
{
    char buf[32];
    *bucket_ms = 0;
    if (!api_query(x, "bucket", buf, sizeof(buf)))
        return !api_failed(x);
    size_t n = strlen(buf), d = 0;
    while (d < n && buf[d] >= '0' && buf[d] <= '9')
        d++;
    int64_t v;
    int64_t unit = 0;
    const char *u = buf + d;
    if (strcmp(u, "") == 0 || strcmp(u, "ms") == 0)
        unit = 1;
    else if (strcmp(u, "s") == 0)
        unit = 1000;
    else if (strcmp(u, "m") == 0)
        unit = 60000;
    else if (strcmp(u, "h") == 0)
        unit = 3600000;
    else if (strcmp(u, "d") == 0)
        unit = 86400000;
    if (d == 0 || d > 12 || !unit || !drv_parse_i64(buf, d, &v) || v <= 0 ||
        v > DRV_TS_TIME_MAX / unit) {
        api_problem(x, 400, "bad-parameter",
                    "bucket: a positive duration such as 60000, 30s, 5m, 1h or 1d");
        return false;
    }
    *bucket_ms = v * unit;
    return true;
}

/* The aggregate functions asked for (?fn=avg,max ...), as a bit set. */
enum {
    FN_AVG = 1,
    FN_MIN = 2,
    FN_MAX = 4,
    FN_SUM = 8,
    FN_COUNT = 16,
    FN_FIRST = 32,
    FN_LAST = 64
};
static const char *const fn_names[] = {"avg", "min", "max", "sum", "count", "first", "last"};

static bool fn_param(api_ctx *x, unsigned *fns)
{
    char buf[128];
    *fns = 0;
    if (!api_query(x, "fn", buf, sizeof(buf))) {
        if (api_failed(x))
            return false;
        *fns = FN_AVG | FN_MIN | FN_MAX | FN_COUNT;
        return true;
    }
    for (char *tok = buf; *tok;) {
        char *end = strchr(tok, ',');
        size_t len = end ? (size_t)(end - tok) : strlen(tok);
        unsigned bit = 0;
        for (unsigned i = 0; i < 7; i++)
            if (strlen(fn_names[i]) == len && strncmp(tok, fn_names[i], len) == 0)
                bit = 1u << i;
        if (len == 4 && strncmp(tok, "mean", 4) == 0)
            bit = FN_AVG;
        if (!bit) {
            api_problem(x, 400, "bad-parameter",
                        "fn: a comma-separated list of avg, min, max, sum, count, first, last");
            return false;
        }
        *fns |= bit;
        tok += len + (end ? 1 : 0);
    }
    if (!*fns) {
        api_problem(x, 400, "bad-parameter", "fn: at least one function");
        return false;
    }
    return true;
}

static bool key_param(api_ctx *x, char *key, size_t cap, bool required)
{
    if (api_query(x, "key", key, cap) && key[0])
        return true;
    if (api_failed(x))
        return false;
    if (required) {
        api_problem(x, 400, "bad-parameter", "key: required (see .../telemetry/keys)");
        return false;
    }
    key[0] = '\0';
    return true;
}

/* The {device} of the path is one of the tenant's devices (decommissioned
 * ones included: their telemetry is kept); 404 otherwise, like any other
 * route naming a device that is not there. */
static bool device_known(api_ctx *x, const char *device)
{
    json_t *doc = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->doc_get(st, &x->scope, DRV_KIND_DEVICE, device, &doc);
    json_decref(doc);
    if (e != DRV_OK)
        api_store_error(x, e, "device");
    return e == DRV_OK;
}

/* Store errors of a query. */
static void query_error(api_ctx *x, drv_err e, const char *what)
{
    if (e == DRV_NOTFOUND)
        api_problem(x, 404, "no-data", "%s", what);
    else if (e == DRV_NOMEM)
        api_problem(x, 503, NULL, "out of memory; try a narrower query");
    else
        api_problem(x, 500, NULL, "the telemetry store failed: %s", drv_strerror(e));
}

/* -- raw samples ------------------------------------------------------------------------- */

typedef struct samples_ctx {
    drv_jw *w;
    uint32_t n;
    int64_t last_ts;
} samples_ctx;

static bool on_sample(void *ud, const drv_sample *s)
{
    samples_ctx *c = ud;
    drv_jw_lit(c->w, c->n++ ? ",{\"ts\":" : "{\"ts\":");
    drv_jw_i64(c->w, s->ts_ms);
    drv_jw_lit(c->w, ",\"value\":");
    drv_jw_value(c->w, &s->v);
    drv_jw_lit(c->w, "}");
    c->last_ts = s->ts_ms;
    return !c->w->failed;
}

void api_telemetry_samples(api_ctx *x)
{
    drv_ts_store *ts = telemetry(x);
    char key[DRV_SAMPLE_MAX_KEY + 1], buf[32];
    int64_t from, to;
    if (!ts || !key_param(x, key, sizeof(key), true) || !api_time_range(x, &from, &to) ||
        !device_known(x, api_param(x, 1)))
        return;
    uint32_t limit = DEFAULT_LIMIT;
    if (api_query(x, "limit", buf, sizeof(buf))) {
        int64_t v;
        if (!drv_parse_i64(buf, strlen(buf), &v) || v < 1 || v > MAX_LIMIT) {
            api_problem(x, 400, "bad-parameter", "limit: 1 to %u", MAX_LIMIT);
            return;
        }
        limit = (uint32_t)v;
    }
    /* The cursor is the time to go on from (the last answer's last time + 1). */
    if (api_query(x, "cursor", buf, sizeof(buf))) {
        int64_t c;
        if (!drv_parse_i64(buf, strlen(buf), &c) || c < from || c > to) {
            api_problem(x, 400, "bad-cursor", "cursor: not one this query gave");
            return;
        }
        from = c;
    }
    if (api_failed(x))
        return;
    const char *device = api_param(x, 1);
    drv_jw w;
    jw_begin(x, &w);
    drv_jw_lit(&w, "{\"device\":");
    drv_jw_cstr(&w, device);
    drv_jw_lit(&w, ",\"key\":");
    drv_jw_cstr(&w, key);
    drv_jw_lit(&w, ",\"items\":[");
    samples_ctx c = {.w = &w};
    /* One more than asked: whether there is a next page. */
    drv_err e = ts->ops->scan(ts->st, x->tenant, device, key, from, to, limit, on_sample, &c);
    if (e != DRV_OK) {
        drv_buf_free(&x->resp->body);
        query_error(x, e, "no such series (device and key)");
        return;
    }
    drv_jw_lit(&w, "]");
    if (c.n == limit && c.last_ts + 1 < to) {
        drv_jw_lit(&w, ",\"next_cursor\":\"");
        drv_jw_i64(&w, c.last_ts + 1);
        drv_jw_lit(&w, "\"");
    }
    drv_jw_lit(&w, "}");
    jw_end(x, &w);
}

/* -- aggregates -------------------------------------------------------------------------- */

static void jw_bucket_fields(drv_jw *w, const drv_ts_bucket *b, unsigned fns)
{
    bool numeric = b->first.type != DRV_VALUE_STRING;
    for (unsigned i = 0; i < 7; i++) {
        unsigned bit = 1u << i;
        if (!(fns & bit))
            continue;
        drv_jw_lit(w, ",\"");
        drv_jw_lit(w, fn_names[i]);
        drv_jw_lit(w, "\":");
        switch (bit) {
        case FN_AVG:
            numeric ? drv_jw_f64(w, b->sum / (double)b->count) : drv_jw_lit(w, "null");
            break;
        case FN_MIN:
            numeric ? drv_jw_f64(w, b->min) : drv_jw_lit(w, "null");
            break;
        case FN_MAX:
            numeric ? drv_jw_f64(w, b->max) : drv_jw_lit(w, "null");
            break;
        case FN_SUM:
            numeric ? drv_jw_f64(w, b->sum) : drv_jw_lit(w, "null");
            break;
        case FN_COUNT:
            drv_jw_i64(w, (int64_t)b->count);
            break;
        case FN_FIRST:
            drv_jw_value(w, &b->first);
            break;
        case FN_LAST:
            drv_jw_value(w, &b->last);
            break;
        }
    }
}

typedef struct agg_ctx {
    drv_jw *w;
    unsigned fns;
    uint32_t n;
} agg_ctx;

static bool on_bucket(void *ud, const drv_ts_bucket *b)
{
    agg_ctx *c = ud;
    drv_jw_lit(c->w, c->n++ ? ",{\"ts\":" : "{\"ts\":");
    drv_jw_i64(c->w, b->start_ms);
    jw_bucket_fields(c->w, b, c->fns);
    drv_jw_lit(c->w, "}");
    return !c->w->failed;
}

/* Common parameters of both aggregate routes. */
static bool agg_params(api_ctx *x, int64_t *from, int64_t *to, int64_t *bucket, unsigned *fns)
{
    if (!api_time_range(x, from, to) || !bucket_param(x, bucket) || !fn_param(x, fns))
        return false;
    if (*bucket && (*to - *from) / *bucket > 100000) {
        api_problem(x, 400, "bad-parameter", "more than 100000 buckets; use a wider bucket");
        return false;
    }
    return true;
}

static void jw_agg_header(drv_jw *w, int64_t from, int64_t to, int64_t bucket)
{
    drv_jw_lit(w, "\"from\":");
    drv_jw_i64(w, from);
    drv_jw_lit(w, ",\"to\":");
    drv_jw_i64(w, to);
    drv_jw_lit(w, ",\"bucket_ms\":");
    drv_jw_i64(w, bucket);
}

void api_telemetry_aggregate(api_ctx *x)
{
    drv_ts_store *ts = telemetry(x);
    char key[DRV_SAMPLE_MAX_KEY + 1];
    int64_t from, to, bucket;
    unsigned fns;
    if (!ts || !key_param(x, key, sizeof(key), true) || !agg_params(x, &from, &to, &bucket, &fns) ||
        !device_known(x, api_param(x, 1)))
        return;
    const char *device = api_param(x, 1);
    drv_jw w;
    jw_begin(x, &w);
    drv_jw_lit(&w, "{\"device\":");
    drv_jw_cstr(&w, device);
    drv_jw_lit(&w, ",\"key\":");
    drv_jw_cstr(&w, key);
    drv_jw_lit(&w, ",");
    jw_agg_header(&w, from, to, bucket);
    drv_jw_lit(&w, ",\"items\":[");
    agg_ctx c = {.w = &w, .fns = fns};
    drv_err e = ts->ops->aggregate(ts->st, x->tenant, device, key, from, to, bucket, on_bucket, &c);
    if (e != DRV_OK) {
        drv_buf_free(&x->resp->body);
        query_error(x, e, "no such series (device and key)");
        return;
    }
    drv_jw_lit(&w, "]}");
    jw_end(x, &w);
}

/* -- many series ----------------------------------------------------------------------------- */

/* The series a tenant-wide query covers, gathered under the store's lock
 * (copies, so the aggregation runs without it). */
typedef struct series_set {
    char (*dev)[DRV_TS_MAX_ID + 1];
    char (*key)[DRV_SAMPLE_MAX_KEY + 1];
    uint32_t n, cap;
    const char *only_key;   /* ?key= */
    drv_hmap *only_devices; /* ?group= members; NULL: every device */
    bool too_many, oom;
} series_set;

typedef struct dev_node {
    drv_hnode h;
    char id[];
} dev_node;

static bool collect_series(void *ud, const drv_ts_series_info *si)
{
    series_set *s = ud;
    if (s->only_key && strcmp(si->key, s->only_key) != 0)
        return true;
    if (s->only_devices) {
        size_t dl = strlen(si->device);
        if (!drv_hmap_get(s->only_devices, drv_hash_bytes(si->device, dl, 0), si->device,
                          (uint32_t)dl))
            return true;
    }
    if (s->n == MAX_SERIES_PER_QUERY) {
        s->too_many = true;
        return false;
    }
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 256;
        void *d = drv_realloc(s->dev, cap * sizeof(*s->dev));
        if (d)
            s->dev = d;
        void *k = d ? drv_realloc(s->key, cap * sizeof(*s->key)) : NULL;
        if (!d || !k) {
            s->oom = true;
            return false;
        }
        s->key = k;
        s->cap = cap;
    }
    snprintf(s->dev[s->n], sizeof(s->dev[0]), "%s", si->device);
    snprintf(s->key[s->n], sizeof(s->key[0]), "%s", si->key);
    s->n++;
    return true;
}

static bool add_member(void *ud, const char *id)
{
    drv_hmap *m = ud;
    size_t n = strlen(id);
    uint64_t h = drv_hash_bytes(id, n, 0);
    if (drv_hmap_get(m, h, id, (uint32_t)n))
        return true;
    dev_node *d = drv_malloc(sizeof(*d) + n + 1);
    if (!d)
        return false;
    memcpy(d->id, id, n + 1);
    d->h.hash = h;
    d->h.key = d->id;
    d->h.klen = (uint32_t)n;
    if (drv_hmap_put(m, &d->h) != DRV_OK) {
        drv_free(d);
        return false;
    }
    return true;
}

static void members_free(drv_hmap *m)
{
    size_t b;
    drv_hnode *n = drv_hmap_first(m, &b);
    while (n) {
        drv_hnode *next = drv_hmap_next(m, n, &b);
        drv_free(n);
        n = next;
    }
    drv_hmap_free(m);
}

/* Keep the one bucket of a whole-range aggregate (STRING first/last are used
 * only for the type: avg/min/max/sum come out null for strings). */
static bool keep_bucket(void *ud, const drv_ts_bucket *b)
{
    drv_ts_bucket *keep = ud;
    *keep = *b;
    if (keep->first.type == DRV_VALUE_STRING)
        keep->first.s.p = NULL;
    if (keep->last.type == DRV_VALUE_STRING)
        keep->last.s.p = NULL;
    return true;
}

void api_telemetry_tenant_aggregate(api_ctx *x)
{
    drv_ts_store *ts = telemetry(x);
    char key[DRV_SAMPLE_MAX_KEY + 1], device[DRV_TS_MAX_ID + 1], group[DRV_TS_MAX_ID + 1];
    int64_t from, to, bucket;
    unsigned fns;
    if (!ts || !key_param(x, key, sizeof(key), false) || !agg_params(x, &from, &to, &bucket, &fns))
        return;
    bool by_device = api_query(x, "device", device, sizeof(device));
    bool by_group = api_query(x, "group", group, sizeof(group));
    if (api_failed(x))
        return;
    drv_hmap members;
    drv_hmap_init(&members);
    series_set set = {.only_key = key[0] ? key : NULL};
    if (by_group) {
        drv_err ge = api_group_members(x, group, add_member, &members);
        if (ge != DRV_OK) {
            if (!api_failed(x))
                api_store_error(x, ge, "group");
            members_free(&members);
            return;
        }
        set.only_devices = &members;
    }
    drv_err e = ts->ops->series(ts->st, x->tenant, by_device ? device : NULL, collect_series, &set);
    members_free(&members);
    if (e == DRV_OK && set.oom)
        e = DRV_NOMEM;
    if (e != DRV_OK || set.too_many) {
        if (set.too_many)
            api_problem(x, 400, "too-many-series",
                        "the query covers more than %u series; narrow it with key, device or "
                        "group",
                        MAX_SERIES_PER_QUERY);
        else
            query_error(x, e, "no data");
        goto out;
    }
    drv_jw w;
    jw_begin(x, &w);
    drv_jw_lit(&w, "{");
    jw_agg_header(&w, from, to, bucket);
    drv_jw_lit(&w, ",\"items\":[");
    uint32_t written = 0;
    for (uint32_t i = 0; i < set.n && !w.failed; i++) {
        size_t mark = w.b->len;
        drv_jw_lit(&w, written ? ",{\"device\":" : "{\"device\":");
        drv_jw_cstr(&w, set.dev[i]);
        drv_jw_lit(&w, ",\"key\":");
        drv_jw_cstr(&w, set.key[i]);
        if (bucket) {
            drv_jw_lit(&w, ",\"buckets\":[");
            agg_ctx c = {.w = &w, .fns = fns};
            e = ts->ops->aggregate(ts->st, x->tenant, set.dev[i], set.key[i], from, to, bucket,
                                   on_bucket, &c);
            drv_jw_lit(&w, "]}");
            if (c.n == 0 && e == DRV_OK)
                w.b->len = (uint32_t)mark; /* no data in range: leave the series out */
            else
                written++;
        } else {
            /* One bucket: the series' figures over the whole range. */
            drv_ts_bucket one = {0};
            e = ts->ops->aggregate(ts->st, x->tenant, set.dev[i], set.key[i], from, to, 0,
                                   keep_bucket, &one);
            if (one.count) {
                jw_bucket_fields(&w, &one, fns);
                drv_jw_lit(&w, "}");
                written++;
            } else {
                w.b->len = (uint32_t)mark;
            }
        }
        if (e == DRV_NOTFOUND) /* dropped meanwhile */
            e = DRV_OK;
        if (e != DRV_OK)
            break;
    }
    if (e != DRV_OK) {
        drv_buf_free(&x->resp->body);
        query_error(x, e, "no data");
        goto out;
    }
    drv_jw_lit(&w, "]}");
    jw_end(x, &w);
out:
    drv_free(set.dev);
    drv_free(set.key);
}

/* -- latest values and keys --------------------------------------------------------------- */

typedef struct list_ctx {
    drv_jw *w;
    uint32_t n;
    bool values;
} list_ctx;

static bool on_series(void *ud, const drv_ts_series_info *si)
{
    list_ctx *c = ud;
    drv_jw_lit(c->w, c->n++ ? ",{\"key\":" : "{\"key\":");
    drv_jw_cstr(c->w, si->key);
    drv_jw_lit(c->w, ",\"type\":");
    drv_jw_cstr(c->w, type_name(si->type));
    if (si->last_ts != INT64_MIN) {
        drv_jw_lit(c->w, ",\"ts\":");
        drv_jw_i64(c->w, si->last_ts);
        if (c->values) {
            drv_jw_lit(c->w, ",\"value\":");
            drv_jw_value(c->w, &si->last);
        }
    }
    drv_jw_lit(c->w, "}");
    return !c->w->failed;
}

static void list_device(api_ctx *x, bool values)
{
    drv_ts_store *ts = telemetry(x);
    if (!ts || !device_known(x, api_param(x, 1)))
        return;
    const char *device = api_param(x, 1);
    drv_jw w;
    jw_begin(x, &w);
    drv_jw_lit(&w, "{\"device\":");
    drv_jw_cstr(&w, device);
    drv_jw_lit(&w, ",\"items\":[");
    list_ctx c = {.w = &w, .values = values};
    drv_err e = ts->ops->series(ts->st, x->tenant, device, on_series, &c);
    if (e != DRV_OK) {
        drv_buf_free(&x->resp->body);
        query_error(x, e, "no data");
        return;
    }
    drv_jw_lit(&w, "]}");
    jw_end(x, &w);
}

void api_telemetry_latest(api_ctx *x)
{
    list_device(x, true);
}

void api_telemetry_keys(api_ctx *x)
{
    list_device(x, false);
}
