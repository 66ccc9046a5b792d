/*
 * query.c — reading a series: raw scans, time-bucket aggregates, and the
 * series listing with latest values.
 *
 * A series' samples in [from, to) may sit in several places at once: block
 * files of each partition the range crosses (late data and flushes can give
 * one partition several files), the head being flushed, and the live head.
 * Each place becomes a cursor that yields samples in time order; the scan
 * merges the cursors by time, and where two hold the same millisecond the
 * newest place wins (the later write).  Block files are referenced under the
 * engine's lock and decoded outside it, block by block (TS_BLOCK_SAMPLES at
 * a time), so a long range never needs memory in proportion to its length;
 * the heads' points in range are copied under the lock.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "platform/clock.h"
#include "tsdb/tsdb_int.h"

#define RANK_FROZEN (UINT64_MAX - 1)
#define RANK_LIVE UINT64_MAX

/* One place a series' samples come from. */
typedef struct cursor {
    uint64_t rank;           /* newer places have higher ranks */
    ts_segment *seg;         /* block file source (a reference), or NULL */
    const ts_seg_series *ss; /* its entry for the series */
    uint32_t next_block;     /* next block of ss to decode */
    int64_t from, to;        /* the range */
    int64_t ts[TS_BLOCK_SAMPLES];
    uint64_t v[TS_BLOCK_SAMPLES];
    drv_span strs[TS_BLOCK_SAMPLES];
    uint8_t type;  /* of the current buffer */
    uint32_t i, n; /* position in the buffer */
    /* head source: points copied under the lock (strings copied to arena) */
    ts_point *hp;
    uint32_t hn;
    char *arena;
    bool done;
    bool corrupt; /* a block failed its checksum (skipped) */
} cursor;

typedef struct query {
    ts_db *db;
    cursor **cur;
    uint32_t ncur, cap;
    uint8_t series_type;
} query;

/* Fill the cursor's buffer; false at the end. */
static bool cursor_fill(cursor *c)
{
    if (c->done)
        return false;
    if (!c->seg) {
        /* head points come in one go */
        if (c->n || c->hn == 0) {
            c->done = true;
            return false;
        }
        return true;
    }
    while (c->next_block < c->ss->nblocks) {
        const ts_block_ref *r = &c->ss->blocks[c->next_block++];
        if (r->max_ts < c->from)
            continue;
        if (r->min_ts >= c->to)
            break;
        uint32_t n;
        if (ts_block_decode(c->seg, r, c->ts, c->v, c->strs, &c->type, &n) != DRV_OK) {
            c->corrupt = true;
            continue;
        }
        /* first sample ≥ from */
        uint32_t lo = 0, hi = n;
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (c->ts[mid] < c->from)
                lo = mid + 1;
            else
                hi = mid;
        }
        uint32_t end = n;
        while (end > lo && c->ts[end - 1] >= c->to)
            end--;
        if (lo == end)
            continue;
        c->i = lo;
        c->n = end;
        return true;
    }
    c->done = true;
    return false;
}

static int64_t cursor_ts(const cursor *c)
{
    return c->seg ? c->ts[c->i] : c->hp[c->i].ts;
}

/* The sample at the cursor, as a drv_sample value. */
static void cursor_value(const cursor *c, drv_value *out)
{
    uint8_t t = c->type; /* of the decoded block, or of the head copied */
    uint64_t v = c->seg ? c->v[c->i] : c->hp[c->i].v;
    out->type = (drv_value_type)t;
    switch (t) {
    case DRV_VALUE_DOUBLE:
        memcpy(&out->d, &v, 8);
        break;
    case DRV_VALUE_INT:
        out->i = (int64_t)v;
        break;
    case DRV_VALUE_BOOL:
        out->b = v != 0;
        break;
    default:
        if (c->seg) {
            out->s = c->strs[v];
        } else {
            /* head strings: arena offset in the high 32 bits, length in the low */
            out->s.p = c->arena + (v >> 32);
            out->s.n = (size_t)(v & 0xFFFFFFFFu);
        }
    }
}

/* Advance; false when the cursor has nothing more. */
static bool cursor_next(cursor *c)
{
    if (++c->i < c->n)
        return true;
    c->n = 0;
    return cursor_fill(c);
}

static void query_free(query *q)
{
    if (q->ncur) {
        pthread_mutex_lock(&q->db->mu);
        for (uint32_t i = 0; i < q->ncur; i++)
            ts_seg_unref(q->cur[i]->seg);
        pthread_mutex_unlock(&q->db->mu);
    }
    for (uint32_t i = 0; i < q->ncur; i++) {
        drv_free(q->cur[i]->hp);
        drv_free(q->cur[i]->arena);
        drv_free(q->cur[i]);
    }
    drv_free(q->cur);
}

static cursor *add_cursor(query *q, uint64_t rank, int64_t from, int64_t to)
{
    if (q->ncur == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 4;
        cursor **a = drv_realloc(q->cur, cap * sizeof(*a));
        if (!a)
            return NULL;
        q->cur = a;
        q->cap = cap;
    }
    cursor *c = drv_malloc(sizeof(*c));
    if (!c)
        return NULL;
    memset(c, 0, offsetof(cursor, ts));
    c->hp = NULL;
    c->hn = 0;
    c->arena = NULL;
    c->done = c->corrupt = false;
    c->rank = rank;
    c->from = from;
    c->to = to;
    c->i = c->n = 0;
    q->cur[q->ncur++] = c;
    return c;
}

/* Copy a head's points in [from, to) into a cursor (db->mu held). */
static drv_err add_head(query *q, const ts_head *h, uint64_t rank, int64_t from, int64_t to)
{
    if (h->n == 0)
        return DRV_OK;
    uint32_t cnt = 0;
    size_t strbytes = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->p[i].ts >= from && h->p[i].ts < to) {
            cnt++;
            if (h->type == DRV_VALUE_STRING)
                strbytes += ((const ts_str *)(uintptr_t)h->p[i].v)->len;
        }
    }
    if (cnt == 0)
        return DRV_OK;
    cursor *c = add_cursor(q, rank, from, to);
    if (!c)
        return DRV_NOMEM;
    c->hp = drv_malloc(cnt * sizeof(*c->hp));
    if (strbytes || h->type == DRV_VALUE_STRING)
        c->arena = drv_malloc(strbytes + 1);
    if (!c->hp || (h->type == DRV_VALUE_STRING && !c->arena))
        return DRV_NOMEM;
    c->type = h->type;
    size_t ao = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        ts_point p = h->p[i];
        if (p.ts < from || p.ts >= to)
            continue;
        if (h->type == DRV_VALUE_STRING) {
            const ts_str *s = (const ts_str *)(uintptr_t)p.v;
            memcpy(c->arena + ao, s->data, s->len);
            p.v = (uint64_t)ao << 32 | s->len;
            ao += s->len;
        }
        c->hp[c->hn++] = p;
    }
    /* Sorted by time, the later of equal times last (stable), then deduplicated. */
    ts_head tmp = {
        .p = c->hp, .n = c->hn, .cap = c->hn, .type = DRV_VALUE_INT, .sorted = h->sorted};
    ts_head_sort(&tmp);
    if (!tmp.sorted)
        return DRV_NOMEM;
    c->hn = tmp.n;
    c->i = 0;
    c->n = c->hn;
    return DRV_OK;
}

/* Gather the cursors of series (tenant, device, key) over [from, to). */
static drv_err query_open(query *q, ts_db *db, const char *tenant, const char *device,
                          const char *key, int64_t from, int64_t to)
{
    memset(q, 0, sizeof(*q));
    q->db = db;
    drv_err e = DRV_OK;
    pthread_mutex_lock(&db->mu);
    ts_series *s = ts_series_get(db, tenant, strlen(tenant), device, strlen(device), key,
                                 strlen(key), 0, false, &e);
    if (!s) {
        e = DRV_NOTFOUND;
        goto out;
    }
    q->series_type = s->type;
    ts_tenant *t = s->dev->tenant;
    /* Expired samples (a retention that compaction has not applied yet) are not served. */
    int64_t cutoff = ts_cutoff(s->dev, (int64_t)drv_wall_ms());
    if (from < cutoff)
        from = cutoff;
    if (from >= to)
        goto out;
    for (ts_partition *p = t->parts; p && e == DRV_OK; p = p->next) {
        if (p->end <= from || p->start >= to)
            continue;
        for (ts_segment *sg = p->segs; sg; sg = sg->next) {
            const ts_seg_series *ss = ts_seg_find(sg, s->id);
            if (!ss || sg->max_ts < from || sg->min_ts >= to)
                continue;
            cursor *c = add_cursor(q, sg->seq, from, to);
            if (!c) {
                e = DRV_NOMEM;
                break;
            }
            sg->refs++;
            c->seg = sg;
            c->ss = ss;
        }
    }
    if (e == DRV_OK)
        e = add_head(q, &s->frozen, RANK_FROZEN, from, to);
    if (e == DRV_OK)
        e = add_head(q, &s->head, RANK_LIVE, from, to);
out:
    pthread_mutex_unlock(&db->mu);
    for (uint32_t i = 0; e == DRV_OK && i < q->ncur; i++)
        if (q->cur[i]->seg)
            cursor_fill(q->cur[i]);
    return e;
}

/* The next sample in merged order; false at the end. */
static bool query_next(query *q, int64_t *ts, drv_value *v)
{
    cursor *best = NULL;
    for (uint32_t i = 0; i < q->ncur; i++) {
        cursor *c = q->cur[i];
        if (c->done || c->i >= c->n)
            continue;
        if (!best || cursor_ts(c) < cursor_ts(best) ||
            (cursor_ts(c) == cursor_ts(best) && c->rank > best->rank))
            best = c;
    }
    if (!best)
        return false;
    *ts = cursor_ts(best);
    cursor_value(best, v);
    return true;
}

/* Step past time ts in every cursor (after the caller used the sample). */
static void query_advance(query *q, int64_t ts)
{
    for (uint32_t i = 0; i < q->ncur; i++) {
        cursor *c = q->cur[i];
        while (!c->done && c->i < c->n && cursor_ts(c) == ts)
            if (!cursor_next(c))
                break;
    }
}

static void report_corrupt(query *q)
{
    uint64_t bad = 0;
    for (uint32_t i = 0; i < q->ncur; i++)
        if (q->cur[i]->corrupt) {
            bad++;
            drv_error("tsdb: a block failed its checksum and was skipped", "file",
                      q->cur[i]->seg->path);
        }
    if (bad) {
        pthread_mutex_lock(&q->db->mu);
        q->db->stats.corrupt_blocks += bad;
        pthread_mutex_unlock(&q->db->mu);
    }
}

/* Ranges are clamped to the times the store can hold (no overflow below). */
static void clamp_range(int64_t *from, int64_t *to)
{
    if (*from < -DRV_TS_TIME_MAX)
        *from = -DRV_TS_TIME_MAX;
    if (*to > DRV_TS_TIME_MAX + 1)
        *to = DRV_TS_TIME_MAX + 1;
}

drv_err ts_scan(void *st, const char *tenant, const char *device, const char *key, int64_t from,
                int64_t to, uint32_t limit, drv_ts_sample_fn fn, void *ud)
{
    clamp_range(&from, &to);
    query q;
    drv_err e = query_open(&q, st, tenant, device, key, from, to);
    if (e == DRV_OK) {
        drv_sample s = {.key = {key, strlen(key)}};
        uint32_t n = 0;
        while ((limit == 0 || n < limit) && query_next(&q, &s.ts_ms, &s.v)) {
            n++;
            if (!fn(ud, &s))
                break;
            query_advance(&q, s.ts_ms);
        }
        report_corrupt(&q);
    }
    query_free(&q);
    return e;
}

static double as_number(const drv_value *v)
{
    switch (v->type) {
    case DRV_VALUE_DOUBLE:
        return v->d;
    case DRV_VALUE_INT:
        return (double)v->i;
    case DRV_VALUE_BOOL:
        return v->b ? 1 : 0;
    default:
        return NAN;
    }
}

static void bucket_add(drv_ts_bucket *b, int64_t ts, const drv_value *v)
{
    double x = as_number(v);
    if (b->count == 0) {
        b->sum = 0;
        b->min = b->max = x;
        b->first_ts = ts;
        b->first = *v;
    }
    b->count++;
    b->sum += x;
    if (x < b->min)
        b->min = x;
    if (x > b->max)
        b->max = x;
    b->last_ts = ts;
    b->last = *v;
}

/* Buckets being filled in time order, from samples or from rollups. */
typedef struct acc {
    int64_t from, bucket_ms;
    drv_ts_bucket b;
    drv_ts_bucket_fn fn;
    void *ud;
    bool stopped;
    /* copies of a pending bucket's string first/last, which outlive the
     * query whose memory they were in */
    char first_s[DRV_SAMPLE_MAX_STRING], last_s[DRV_SAMPLE_MAX_STRING];
} acc;

/* Before the memory of a raw read goes: the pending bucket's strings, copied. */
static void acc_own_strings(acc *a)
{
    if (!a->b.count)
        return;
    drv_value *v[2] = {&a->b.first, &a->b.last};
    char *buf[2] = {a->first_s, a->last_s};
    for (int i = 0; i < 2; i++) {
        if (v[i]->type != DRV_VALUE_STRING || v[i]->s.p == buf[i])
            continue;
        size_t n = v[i]->s.n < DRV_SAMPLE_MAX_STRING ? v[i]->s.n : DRV_SAMPLE_MAX_STRING;
        memmove(buf[i], v[i]->s.p, n);
        v[i]->s = (drv_span){buf[i], n};
    }
}

/* Move to the bucket of time ts, emitting the one before; false once stopped. */
static bool acc_at(acc *a, int64_t ts)
{
    int64_t start =
        a->bucket_ms
            ? a->from + (int64_t)((uint64_t)(ts - a->from) / (uint64_t)a->bucket_ms) * a->bucket_ms
            : a->from;
    if (a->b.count && start != a->b.start_ms) {
        if (!a->fn(a->ud, &a->b)) {
            a->stopped = true;
            return false;
        }
        a->b.count = 0;
    }
    a->b.start_ms = start;
    return true;
}

static void acc_finish(acc *a)
{
    if (!a->stopped && a->b.count)
        a->fn(a->ud, &a->b);
}

/* Aggregate straight from one block-file cursor (no merging needed). */
static void agg_single(acc *a, cursor *c)
{
    do {
        for (; c->i < c->n; c->i++) {
            int64_t ts = c->ts[c->i];
            if (!acc_at(a, ts))
                return;
            drv_ts_bucket *b = &a->b;
            if (c->type == DRV_VALUE_DOUBLE && b->count) {
                /* the common case, without building a drv_value */
                double x;
                memcpy(&x, &c->v[c->i], 8);
                b->count++;
                b->sum += x;
                if (x < b->min)
                    b->min = x;
                if (x > b->max)
                    b->max = x;
                b->last_ts = ts;
                b->last.type = DRV_VALUE_DOUBLE;
                b->last.d = x;
                continue;
            }
            drv_value v;
            cursor_value(c, &v);
            bucket_add(b, ts, &v);
        }
        c->n = 0;
    } while (cursor_fill(c));
}

/* Samples of [from, to) from every place they are (the raw path). */
static drv_err acc_raw(acc *a, ts_db *db, const char *tenant, const char *device, const char *key,
                       int64_t from, int64_t to)
{
    query q;
    drv_err e = query_open(&q, db, tenant, device, key, from, to);
    if (e == DRV_OK) {
        int64_t ts;
        drv_value v;
        if (q.ncur == 1 && q.cur[0]->seg && !a->stopped) {
            /* One block file: no merging, straight over the decoded arrays. */
            agg_single(a, q.cur[0]);
        } else {
            while (!a->stopped && query_next(&q, &ts, &v)) {
                if (!acc_at(a, ts))
                    break;
                bucket_add(&a->b, ts, &v);
                query_advance(&q, ts);
            }
        }
        report_corrupt(&q);
    }
    acc_own_strings(a);
    query_free(&q);
    return e;
}

static void rollup_value(uint8_t type, double x, drv_value *v)
{
    v->type = (drv_value_type)type;
    if (type == DRV_VALUE_INT)
        v->i = (int64_t)x;
    else if (type == DRV_VALUE_BOOL)
        v->b = x != 0;
    else
        v->d = x;
}

/* Fold one rollup record into the buckets. */
static void acc_rollup(acc *a, const ts_rollup *r, uint8_t type)
{
    if (!acc_at(a, r->start))
        return;
    drv_ts_bucket *b = &a->b;
    if (b->count == 0) {
        b->sum = 0;
        b->min = r->min;
        b->max = r->max;
        b->first_ts = r->first_ts;
        rollup_value(type, r->first, &b->first);
    }
    b->count += r->count;
    b->sum += r->sum;
    if (r->min < b->min)
        b->min = r->min;
    if (r->max > b->max)
        b->max = r->max;
    b->last_ts = r->last_ts;
    rollup_value(type, r->last, &b->last);
}

/* A partition whose rollups can stand for its raw samples in a query. */
typedef struct roll_part {
    int64_t lo, hi;          /* the part of the query range it covers */
    ts_segment *seg;         /* its one file holding the series (a reference) */
    const ts_seg_series *ss; /* the series in that file */
    int wi;                  /* the rollup width used there */
} roll_part;

/* Does any point of h fall in [lo, hi)? */
static bool head_has(const ts_head *h, int64_t lo, int64_t hi)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (h->p[i].ts >= lo && h->p[i].ts < hi)
            return true;
    return false;
}

/* Long ranges use rollups: 1-minute ones from a day, 1-hour ones from a week. */
static const int64_t rollup_min_range[TS_ROLLUPS] = {86400000LL, 7LL * 86400000};

/* The rollup widths this query may use (bit w: width index w), 0 for none. */
static unsigned usable_rollups(int64_t from, int64_t to, int64_t bucket_ms)
{
    unsigned mask = 0;
    for (int w = 0; w < TS_ROLLUPS; w++) {
        int64_t width = ts_rollup_width[w];
        if (to - from >= rollup_min_range[w] && from % width == 0 && to % width == 0 &&
            bucket_ms % width == 0)
            mask |= 1u << w;
    }
    return mask;
}

/*
 * The rollup path: partitions with one file for the series and no head
 * points in range are read from that file's widest usable rollups (a file
 * has only the levels dense enough to pay, block.c); the rest of the range
 * (head data, several files, no partition yet, no rollups) the raw way.
 */
static drv_err agg_rollups(ts_db *db, acc *a, unsigned usable, const char *tenant,
                           const char *device, const char *key, int64_t from, int64_t to)
{
    roll_part *parts = NULL;
    uint32_t np = 0, cap = 0;
    uint8_t type = DRV_VALUE_DOUBLE;
    drv_err e = DRV_OK;
    pthread_mutex_lock(&db->mu);
    ts_series *s = ts_series_get(db, tenant, strlen(tenant), device, strlen(device), key,
                                 strlen(key), 0, false, &e);
    if (!s) {
        pthread_mutex_unlock(&db->mu);
        return DRV_NOTFOUND;
    }
    type = s->type;
    int64_t cutoff = ts_cutoff(s->dev, (int64_t)drv_wall_ms());
    for (ts_partition *p = s->dev->tenant->parts; p && s->type != DRV_VALUE_STRING; p = p->next) {
        int64_t lo = p->start > from ? p->start : from, hi = p->end < to ? p->end : to;
        if (lo >= hi || lo < cutoff)
            continue; /* expired samples may still be in its rollups: read raw (clamped) */
        ts_segment *only = NULL;
        const ts_seg_series *oss = NULL;
        uint32_t holders = 0;
        for (ts_segment *sg = p->segs; sg; sg = sg->next) {
            const ts_seg_series *ss = ts_seg_find(sg, s->id);
            if (ss) {
                holders++;
                only = sg;
                oss = ss;
            }
        }
        int wi = -1;
        for (int w = TS_ROLLUPS - 1; holders == 1 && w >= 0 && wi < 0; w--)
            if ((usable & (1u << w)) && oss->nroll[w])
                wi = w;
        if (wi < 0 || head_has(&s->head, lo, hi) || head_has(&s->frozen, lo, hi))
            continue;
        if (np == cap) {
            uint32_t nc = cap ? cap * 2 : 8;
            roll_part *na = drv_realloc(parts, nc * sizeof(*na));
            if (!na) {
                e = DRV_NOMEM;
                break;
            }
            parts = na;
            cap = nc;
        }
        only->refs++;
        parts[np++] = (roll_part){lo, hi, only, oss, wi};
    }
    pthread_mutex_unlock(&db->mu);

    ts_rollup *rec = e == DRV_OK ? drv_malloc(TS_BLOCK_SAMPLES * sizeof(*rec)) : NULL;
    if (e == DRV_OK && !rec)
        e = DRV_NOMEM;
    int64_t t = from;
    uint64_t used = 0;
    for (uint32_t i = 0; i < np && e == DRV_OK && !a->stopped; i++) {
        roll_part *rp = &parts[i];
        int wi = rp->wi;
        if (t < rp->lo)
            e = acc_raw(a, db, tenant, device, key, t, rp->lo);
        for (uint32_t b = 0; e == DRV_OK && b < rp->ss->nroll[wi] && !a->stopped; b++) {
            const ts_block_ref *ref = &rp->ss->roll[wi][b];
            if (ref->max_ts < rp->lo || ref->min_ts >= rp->hi)
                continue;
            uint32_t n;
            if (ts_rollup_decode(rp->seg, ref, wi, rec, &n) != DRV_OK) {
                /* A damaged rollup block: these buckets come from the raw blocks. */
                drv_error("tsdb: a rollup block failed its checksum; reading raw samples", "file",
                          rp->seg->path);
                int64_t lo = ref->min_ts > rp->lo ? ref->min_ts : rp->lo;
                int64_t hi = ref->max_ts + ts_rollup_width[wi];
                e = acc_raw(a, db, tenant, device, key, lo, hi < rp->hi ? hi : rp->hi);
                continue;
            }
            for (uint32_t k = 0; k < n && !a->stopped; k++) {
                if (rec[k].start >= rp->lo && rec[k].start < rp->hi) {
                    acc_rollup(a, &rec[k], type);
                    used++;
                }
            }
        }
        t = rp->hi;
    }
    if (e == DRV_OK && t < to && !a->stopped)
        e = acc_raw(a, db, tenant, device, key, t, to);
    drv_free(rec);
    pthread_mutex_lock(&db->mu);
    db->stats.rollups_read += used;
    for (uint32_t i = 0; i < np; i++)
        ts_seg_unref(parts[i].seg);
    pthread_mutex_unlock(&db->mu);
    drv_free(parts);
    return e;
}

drv_err ts_aggregate(void *st, const char *tenant, const char *device, const char *key,
                     int64_t from, int64_t to, int64_t bucket_ms, drv_ts_bucket_fn fn, void *ud)
{
    clamp_range(&from, &to);
    if (bucket_ms < 0 || bucket_ms > DRV_TS_TIME_MAX || to <= from)
        return DRV_INVAL;
    ts_db *db = st;
    acc *a = drv_malloc(sizeof(*a)); /* 8 KB of string copies: not on the stack */
    if (!a)
        return DRV_NOMEM;
    *a = (acc){.from = from, .bucket_ms = bucket_ms, .fn = fn, .ud = ud};
    unsigned usable = usable_rollups(from, to, bucket_ms);
    drv_err e = usable ? agg_rollups(db, a, usable, tenant, device, key, from, to)
                       : acc_raw(a, db, tenant, device, key, from, to);
    if (e == DRV_OK)
        acc_finish(a);
    drv_free(a);
    return e;
}

/* -- listing ------------------------------------------------------------------------------ */

static int cmp_dev(const void *a, const void *b)
{
    const ts_device *x = *(ts_device *const *)a, *y = *(ts_device *const *)b;
    return strcmp(x->id, y->id);
}

static void last_value(const ts_series *s, drv_value *v)
{
    v->type = (drv_value_type)s->last_type;
    switch (s->last_type) {
    case DRV_VALUE_DOUBLE:
        memcpy(&v->d, &s->last_v, 8);
        break;
    case DRV_VALUE_INT:
        v->i = (int64_t)s->last_v;
        break;
    case DRV_VALUE_BOOL:
        v->b = s->last_v != 0;
        break;
    case DRV_VALUE_STRING: {
        const ts_str *str = (const ts_str *)(uintptr_t)s->last_v;
        v->s = (drv_span){str ? str->data : "", str ? str->len : 0};
        break;
    }
    default:
        v->type = DRV_VALUE_DOUBLE;
        v->d = NAN;
    }
}

/*
 * The listing runs under the engine's lock (it reads the index and the
 * latest values in place): callbacks must be quick and must not call back
 * into the store.  Latest values of series whose samples are all in block
 * files from before a restart are not kept in memory: last_ts is INT64_MIN.
 */
drv_err ts_series_list(void *st, const char *tenant, const char *device, drv_ts_series_fn fn,
                       void *ud)
{
    ts_db *db = st;
    drv_err e = DRV_OK;
    pthread_mutex_lock(&db->mu);
    ts_tenant *t = ts_tenant_get(db, tenant, strlen(tenant), false);
    if (!t)
        goto out;
    ts_device **devs = drv_malloc((t->ndevs ? t->ndevs : 1) * sizeof(*devs));
    if (!devs) {
        e = DRV_NOMEM;
        goto out;
    }
    uint32_t nd = 0;
    for (uint32_t i = 0; i < t->ndevs; i++)
        if (!device || strcmp(t->devs[i]->id, device) == 0)
            devs[nd++] = t->devs[i];
    qsort(devs, nd, sizeof(*devs), cmp_dev);
    bool go = true;
    for (uint32_t i = 0; go && i < nd; i++) {
        for (uint32_t k = 0; go && k < devs[i]->nkeys; k++) {
            const ts_series *s = devs[i]->keys[k];
            if (s->dropped)
                continue;
            drv_ts_series_info si = {.device = devs[i]->id,
                                     .key = s->key,
                                     .type = (drv_value_type)s->type,
                                     .last_ts = s->last_ts};
            last_value(s, &si.last);
            go = fn(ud, &si);
        }
    }
    drv_free(devs);
out:
    pthread_mutex_unlock(&db->mu);
    return e;
}
