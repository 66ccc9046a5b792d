/*
 * tsdb.c — the embedded engine's front: opening and closing, the series index
 * (tenant → device → key), the in-memory heads, append and commit, and the
 * drv_ts_store ops table.  See tsdb.h for the contract and tsdb_int.h for
 * the structures and the locking rule.
 *
 * Append runs on the caller's thread (a broker worker for MQTT telemetry,
 * the API thread for HTTP ingest and imports): one lock, one device lookup
 * per call, a binary search per sample for its key, and the samples are
 * added to the heads and encoded into one log record.  Nothing is written to
 * disk until commit, which the caller runs once per batch (a broker turn, an
 * HTTP request) — that is the group commit of ADR-0014.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "platform/clock.h"
#include "tsdb/tsdb_int.h"

/* -- the index ------------------------------------------------------------------ */

int64_t ts_partition_start(const ts_db *db, int64_t ts)
{
    int64_t w = (int64_t)db->cfg.partition_hours * 3600000;
    int64_t q = ts / w;
    if (ts % w != 0 && ts < 0)
        q--;
    return q * w;
}

int64_t ts_cutoff(const ts_device *d, int64_t now_ms)
{
    uint32_t days = d->tenant->retention_days;
    if (d->retention_days && (!days || d->retention_days < days))
        days = d->retention_days;
    return days ? now_ms - (int64_t)days * 86400000 : INT64_MIN;
}

/* A directory name for a tenant id: the id itself when it is plainly safe,
 * else "x-" and its hex. */
static char *tenant_dir(const ts_db *db, const char *id, size_t n)
{
    bool safe = n > 0 && id[0] != '.' && id[0] != 'x';
    for (size_t i = 0; safe && i < n; i++) {
        char c = id[i];
        safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_' || c == '.';
    }
    size_t cap = strlen(db->dir) + 4 + 2 + 2 * n + 1;
    char *p = drv_malloc(cap);
    if (!p)
        return NULL;
    size_t o = (size_t)snprintf(p, cap, "%s/t/", db->dir);
    if (safe) {
        memcpy(p + o, id, n);
        p[o + n] = '\0';
    } else {
        static const char hex[] = "0123456789abcdef";
        p[o++] = 'x';
        p[o++] = '-';
        for (size_t i = 0; i < n; i++) {
            p[o++] = hex[(uint8_t)id[i] >> 4];
            p[o++] = hex[(uint8_t)id[i] & 15];
        }
        p[o] = '\0';
    }
    return p;
}

ts_tenant *ts_tenant_get(ts_db *db, const char *tenant, size_t tlen, bool create)
{
    uint64_t h = drv_hash_bytes(tenant, tlen, 0);
    drv_hnode *n = drv_hmap_get(&db->tenant_map, h, tenant, (uint32_t)tlen);
    if (n || !create)
        return (ts_tenant *)n;
    ts_tenant *t = drv_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->id = drv_strndup(tenant, tlen);
    t->dir = tenant_dir(db, tenant, tlen);
    if (!t->id || !t->dir)
        goto fail;
    t->node.hash = h;
    t->node.key = t->id;
    t->node.klen = (uint32_t)tlen;
    if (drv_hmap_put(&db->tenant_map, &t->node) != DRV_OK)
        goto fail;
    return t;
fail:
    drv_free(t->id);
    drv_free(t->dir);
    drv_free(t);
    return NULL;
}

static ts_device *device_get(ts_db *db, const char *tenant, size_t tlen, const char *device,
                             size_t dlen, bool create)
{
    char key[2 * DRV_TS_MAX_ID + 2];
    if (tlen > DRV_TS_MAX_ID || dlen > DRV_TS_MAX_ID)
        return NULL;
    memcpy(key, tenant, tlen);
    key[tlen] = '\0';
    memcpy(key + tlen + 1, device, dlen);
    size_t klen = tlen + 1 + dlen;
    uint64_t h = drv_hash_bytes(key, klen, 1);
    drv_hnode *n = drv_hmap_get(&db->device_map, h, key, (uint32_t)klen);
    if (n || !create)
        return (ts_device *)n;
    ts_tenant *t = ts_tenant_get(db, tenant, tlen, true);
    if (!t)
        return NULL;
    ts_device *d = drv_calloc(1, sizeof(*d) + klen + 1);
    if (!d)
        return NULL;
    memcpy(d->buf, key, klen);
    d->buf[klen] = '\0';
    d->id = d->buf + tlen + 1;
    d->tenant = t;
    if (t->ndevs == t->devs_cap) {
        uint32_t cap = t->devs_cap ? t->devs_cap * 2 : 16;
        ts_device **a = drv_realloc(t->devs, cap * sizeof(*a));
        if (!a) {
            drv_free(d);
            return NULL;
        }
        t->devs = a;
        t->devs_cap = cap;
    }
    d->node.hash = h;
    d->node.key = d->buf;
    d->node.klen = (uint32_t)klen;
    if (drv_hmap_put(&db->device_map, &d->node) != DRV_OK) {
        drv_free(d);
        return NULL;
    }
    t->devs[t->ndevs++] = d;
    db->devices_unasked = true; /* its retention, asked by the engine's thread */
    return d;
}

static int key_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

/* Index in d->keys of `key`, or of where it would go (*found false). */
static uint32_t device_find_key(const ts_device *d, const char *key, size_t klen, bool *found)
{
    uint32_t lo = 0, hi = d->nkeys;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        const ts_series *s = d->keys[mid];
        int c = key_cmp(s->key, s->key_len, key, klen);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* Make a series and put it in the index under id (not logged). */
static ts_series *series_new(ts_db *db, ts_device *d, uint32_t pos, uint32_t id, uint8_t type,
                             const char *key, size_t klen, drv_err *err)
{
    size_t tlen = strlen(d->buf), dlen = strlen(d->id);
    size_t kb = tlen + 1 + dlen + 1 + klen + 1;
    *err = DRV_NOMEM;
    if (id >= db->series_cap) {
        uint32_t cap = db->series_cap ? db->series_cap : 1024;
        while (cap <= id)
            cap *= 2;
        ts_series **a = drv_realloc(db->series_by_id, cap * sizeof(*a));
        if (!a)
            return NULL;
        memset(a + db->series_cap, 0, (cap - db->series_cap) * sizeof(*a));
        db->series_by_id = a;
        db->series_cap = cap;
    }
    if (d->nkeys == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 8;
        ts_series **a = drv_realloc(d->keys, cap * sizeof(*a));
        if (!a)
            return NULL;
        d->keys = a;
        d->cap = cap;
    }
    ts_series *s = drv_calloc(1, sizeof(*s) + kb);
    if (!s)
        return NULL;
    memcpy(s->keybuf, d->buf, tlen + 1 + dlen + 1);
    memcpy(s->keybuf + tlen + 1 + dlen + 1, key, klen);
    s->keybuf[kb - 1] = '\0';
    s->keybuf_len = (uint32_t)kb;
    s->key = s->keybuf + tlen + 1 + dlen + 1;
    s->key_len = (uint32_t)klen;
    s->id = id;
    s->type = type;
    s->dev = d;
    s->last_ts = INT64_MIN;
    s->node.hash = drv_hash_bytes(s->keybuf, kb - 1, 2);
    s->node.key = s->keybuf;
    s->node.klen = (uint32_t)(kb - 1);
    if (drv_hmap_put(&db->series_map, &s->node) != DRV_OK) {
        drv_free(s);
        return NULL;
    }
    memmove(d->keys + pos + 1, d->keys + pos, (d->nkeys - pos) * sizeof(*d->keys));
    d->keys[pos] = s;
    d->nkeys++;
    db->series_by_id[id] = s;
    db->nseries++;
    if (id >= db->next_series_id)
        db->next_series_id = id + 1;
    *err = DRV_OK;
    return s;
}

static ts_series *device_series(ts_db *db, ts_device *d, const char *key, size_t klen, uint8_t type,
                                bool create, drv_err *err);

/* Take a dropped series out of its device and the key map; it stays in
 * series_by_id (flagged) until the flush that rewrites its blocks frees it. */
static void unlink_dropped(ts_db *db, ts_device *d, uint32_t pos)
{
    ts_series *s = d->keys[pos];
    drv_hmap_del(&db->series_map, &s->node);
    memmove(d->keys + pos, d->keys + pos + 1, (d->nkeys - pos - 1) * sizeof(*d->keys));
    d->nkeys--;
}

ts_series *ts_series_get(ts_db *db, const char *tenant, size_t tlen, const char *device,
                         size_t dlen, const char *key, size_t klen, uint8_t type, bool create,
                         drv_err *err)
{
    *err = DRV_NOTFOUND;
    ts_device *d = device_get(db, tenant, tlen, device, dlen, create);
    if (!d) {
        if (create)
            *err = tlen > DRV_TS_MAX_ID || dlen > DRV_TS_MAX_ID ? DRV_INVAL : DRV_NOMEM;
        return NULL;
    }
    return device_series(db, d, key, klen, type, create, err);
}

/* The series `key` of device d (see ts_series_get); db->mu held. */
static ts_series *device_series(ts_db *db, ts_device *d, const char *key, size_t klen, uint8_t type,
                                bool create, drv_err *err)
{
    *err = DRV_NOTFOUND;
    bool found;
    uint32_t pos = device_find_key(d, key, klen, &found);
    if (found) {
        ts_series *s = d->keys[pos];
        if (!s->dropped) {
            /* A series whose SERIES record could not be logged gets it now. */
            *err = s->logged ? DRV_OK : ts_wal_log_series(db, s);
            s->logged = *err == DRV_OK;
            return *err == DRV_OK ? s : NULL;
        }
        if (!create)
            return NULL;
        unlink_dropped(db, d, pos); /* a purged device's key in use again: a new series */
    }
    if (!create)
        return NULL;
    if (db->cfg.max_series && db->nseries >= db->cfg.max_series) {
        *err = DRV_LIMIT;
        return NULL;
    }
    ts_series *s = series_new(db, d, pos, db->next_series_id, type, key, klen, err);
    if (!s)
        return NULL;
    *err = ts_wal_log_series(db, s);
    s->logged = *err == DRV_OK; /* else it stays unlogged, and takes no samples until it is */
    return s->logged ? s : NULL;
}

drv_err ts_series_load(ts_db *db, uint32_t id, uint8_t type, const char *tenant, size_t tlen,
                       const char *device, size_t dlen, const char *key, size_t klen)
{
    if (id >= (1u << 30) || type < DRV_VALUE_DOUBLE || type > DRV_VALUE_STRING || klen == 0 ||
        klen > DRV_SAMPLE_MAX_KEY)
        return DRV_CORRUPT;
    if (id < db->series_cap && db->series_by_id[id]) {
        ts_series *s = db->series_by_id[id];
        /* Seen in another file or earlier in the log: it must be the same series. */
        size_t have = s->keybuf_len - 1;
        if (have != tlen + dlen + klen + 2 || memcmp(s->keybuf, tenant, tlen) != 0 ||
            memcmp(s->keybuf + tlen + 1, device, dlen) != 0 || memcmp(s->key, key, klen) != 0)
            return DRV_CORRUPT;
        if (type == DRV_VALUE_DOUBLE && s->type == DRV_VALUE_INT)
            s->type = DRV_VALUE_DOUBLE; /* promoted later on */
        return DRV_OK;
    }
    ts_device *d = device_get(db, tenant, tlen, device, dlen, true);
    if (!d)
        return DRV_NOMEM;
    bool found;
    uint32_t pos = device_find_key(d, key, klen, &found);
    if (found && !d->keys[pos]->dropped && d->keys[pos]->id > id)
        return DRV_OK; /* an older id of a key used again after a purge: stays unreachable */
    if (found && !d->keys[pos]->dropped) {
        /* The newer id wins: the older one is a purged series whose files the
         * compaction had not yet rewritten when the process stopped. */
        d->keys[pos]->dropped = true;
        db->purge_scan = true;
    }
    if (found)
        unlink_dropped(db, d, pos);
    drv_err e;
    ts_series *s = series_new(db, d, pos, id, type, key, klen, &e);
    if (s)
        s->logged = true;
    return e;
}

/* -- heads ---------------------------------------------------------------------- */

static void str_free_if(uint8_t type, uint64_t v)
{
    if (type == DRV_VALUE_STRING)
        drv_free((void *)(uintptr_t)v);
}

void ts_head_free(ts_head *h)
{
    if (h->type == DRV_VALUE_STRING)
        for (uint32_t i = 0; i < h->n; i++)
            drv_free((void *)(uintptr_t)h->p[i].v);
    drv_free(h->p);
    memset(h, 0, sizeof(*h));
}

static void merge_runs(ts_point *a, ts_point *tmp, uint32_t lo, uint32_t mid, uint32_t hi)
{
    uint32_t i = lo, j = mid, k = lo;
    while (i < mid && j < hi)
        tmp[k++] = a[j].ts < a[i].ts ? a[j++] : a[i++]; /* stable: left first on ties */
    while (i < mid)
        tmp[k++] = a[i++];
    while (j < hi)
        tmp[k++] = a[j++];
    memcpy(a + lo, tmp + lo, (hi - lo) * sizeof(*a));
}

void ts_head_sort(ts_head *h)
{
    if (h->sorted || h->n < 2) {
        h->sorted = true;
    } else {
        ts_point *tmp = drv_malloc(h->n * sizeof(*tmp));
        if (!tmp)
            return; /* stays unsorted: callers check h->sorted */
        for (uint32_t w = 1; w < h->n; w *= 2)
            for (uint32_t lo = 0; lo + w < h->n; lo += 2 * w)
                merge_runs(h->p, tmp, lo, lo + w, lo + 2 * w < h->n ? lo + 2 * w : h->n);
        drv_free(tmp);
        h->sorted = true;
    }
    /* Equal times: the later write (last in a stable order) wins. */
    uint32_t o = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (o > 0 && h->p[o - 1].ts == h->p[i].ts) {
            str_free_if(h->type, h->p[o - 1].v);
            h->p[o - 1] = h->p[i];
        } else {
            h->p[o++] = h->p[i];
        }
    }
    h->n = o;
}

static bool is_numeric(uint8_t t)
{
    return t == DRV_VALUE_DOUBLE || t == DRV_VALUE_INT;
}

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

/* An INT series becomes DOUBLE: convert what its live head and `last` hold. */
static void promote_to_double(ts_series *s)
{
    for (uint32_t i = 0; i < s->head.n && s->head.type == DRV_VALUE_INT; i++)
        s->head.p[i].v = dbits((double)(int64_t)s->head.p[i].v);
    if (s->head.type == DRV_VALUE_INT)
        s->head.type = DRV_VALUE_DOUBLE;
    if (s->last_type == DRV_VALUE_INT) {
        s->last_v = dbits((double)(int64_t)s->last_v);
        s->last_type = DRV_VALUE_DOUBLE;
    }
    s->type = DRV_VALUE_DOUBLE;
}

drv_err ts_head_add(ts_db *db, ts_series *s, int64_t ts, const drv_value *v)
{
    uint64_t bits;
    uint8_t vt = (uint8_t)v->type;
    if (is_numeric(s->type) && is_numeric(vt)) {
        if (s->type == DRV_VALUE_INT && vt == DRV_VALUE_DOUBLE) {
            double d = v->d;
            if (d >= -9.2e18 && d <= 9.2e18 && d == (double)(int64_t)d && !(d == 0 && signbit(d)))
                vt = DRV_VALUE_INT, bits = (uint64_t)(int64_t)d;
            else
                promote_to_double(s), bits = dbits(d);
        } else if (s->type == DRV_VALUE_DOUBLE && vt == DRV_VALUE_INT) {
            bits = dbits((double)v->i);
        } else {
            bits = vt == DRV_VALUE_INT ? (uint64_t)v->i : dbits(v->d);
        }
    } else if (s->type != vt) {
        return DRV_CONFLICT;
    } else if (vt == DRV_VALUE_BOOL) {
        bits = v->b ? 1 : 0;
    } else {
        if (v->s.n > DRV_SAMPLE_MAX_STRING)
            return DRV_TOOBIG;
        ts_str *str = drv_malloc(sizeof(*str) + v->s.n);
        if (!str)
            return DRV_NOMEM;
        str->len = (uint32_t)v->s.n;
        memcpy(str->data, v->s.p, v->s.n);
        bits = (uint64_t)(uintptr_t)str;
    }
    ts_head *h = &s->head;
    if (h->n == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : 16;
        ts_point *p = drv_realloc(h->p, cap * sizeof(*p));
        if (!p) {
            str_free_if(s->type, bits);
            return DRV_NOMEM;
        }
        h->p = p;
        h->cap = cap;
    }
    if (h->n == 0) {
        h->type = s->type;
        h->sorted = true;
        h->first_ms = drv_mono_ms();
        if (!db->head_first_ms)
            db->head_first_ms = h->first_ms;
    } else if (ts < h->p[h->n - 1].ts) {
        h->sorted = false;
    }
    h->p[h->n++] = (ts_point){ts, bits};
    db->head_samples++;
    s->dev->tenant->head_samples++;
    if (ts >= s->last_ts) {
        if (s->last_type == DRV_VALUE_STRING) {
            drv_free((void *)(uintptr_t)s->last_v);
            s->last_v = 0;
        }
        s->last_ts = ts;
        s->last_type = s->type;
        s->last_v = bits;
        if (s->type == DRV_VALUE_STRING) {
            /* `last` keeps its own copy: the head's goes away at the flush. */
            const ts_str *src = (const ts_str *)(uintptr_t)bits;
            ts_str *copy = drv_malloc(sizeof(*copy) + src->len);
            if (copy) {
                copy->len = src->len;
                memcpy(copy->data, src->data, src->len);
            }
            s->last_v = (uint64_t)(uintptr_t)copy;
            if (!copy)
                s->last_ts = INT64_MIN;
        }
    }
    return DRV_OK;
}

/* -- append and commit ------------------------------------------------------------ */

static int64_t now_ms(void)
{
    return (int64_t)drv_wall_ms();
}

static bool key_ok(drv_span k)
{
    if (k.n == 0 || k.n > DRV_SAMPLE_MAX_KEY)
        return false;
    for (size_t i = 0; i < k.n; i++)
        if ((uint8_t)k.p[i] < 0x20 || k.p[i] == 0x7f)
            return false;
    return true;
}

static drv_err ts_append(void *st, const char *tenant, const char *device, const drv_sample *s,
                         uint32_t n, drv_ts_append_result *res)
{
    ts_db *db = st;
    memset(res, 0, sizeof(*res));
    size_t tlen = strlen(tenant), dlen = strlen(device);
    if (tlen == 0 || dlen == 0 || tlen > DRV_TS_MAX_ID || dlen > DRV_TS_MAX_ID)
        return DRV_INVAL;
    int64_t now = now_ms();
    drv_err e = DRV_OK;
    pthread_mutex_lock(&db->mu);
    if (db->wal_failed) {
        e = DRV_IO;
        goto out;
    }
    ts_tenant *t = ts_tenant_get(db, tenant, tlen, false);
    ts_device *dev = t ? device_get(db, tenant, tlen, device, dlen, false) : NULL;
    int64_t oldest = INT64_MIN;
    if (dev)
        oldest = ts_cutoff(dev, now);
    else if (t && t->retention_days)
        oldest = now - (int64_t)t->retention_days * 86400000;
    if (t && t->max_bytes && t->bytes + t->head_samples * 2 >= t->max_bytes) {
        e = DRV_LIMIT; /* the tenant's storage quota: nothing more until it has room */
        db->stats.samples_refused += n;
        goto out;
    }
    ts_wal_rec *rec = &db->rec; /* db->mu held: one builder at a time */
    ts_wal_samples_begin(rec);
    uint32_t logged = 0;
    for (uint32_t i = 0; i < n; i++) {
        const drv_sample *x = &s[i];
        const char *why = NULL;
        if (!key_ok(x->key))
            why = "key is empty, too long or has control characters";
        else if (x->ts_ms > now + db->cfg.max_future_ms || x->ts_ms < -DRV_TS_TIME_MAX)
            why = x->ts_ms < 0 ? "timestamp out of range" : "timestamp too far in the future";
        else if (x->ts_ms < oldest)
            why = "timestamp older than the retention of the device's tenant or profile";
        else if (x->v.type == DRV_VALUE_STRING && x->v.s.n > DRV_SAMPLE_MAX_STRING)
            why = "string value too long";
        ts_series *se = NULL;
        if (!why) {
            drv_err ge;
            /* One device lookup per call, not per sample (created with the first). */
            if (!dev && !(dev = device_get(db, tenant, tlen, device, dlen, true))) {
                e = DRV_NOMEM;
                goto out_rec;
            }
            se = device_series(db, dev, x->key.p, x->key.n, (uint8_t)x->v.type, true, &ge);
            if (!se && ge == DRV_LIMIT) {
                why = "too many series";
            } else if (!se) {
                e = ge; /* out of memory: the caller acknowledges none of it */
                goto out_rec;
            }
        }
        if (se) {
            drv_err he = ts_head_add(db, se, x->ts_ms, &x->v);
            if (he == DRV_CONFLICT)
                why = se->type == DRV_VALUE_STRING ? "key holds strings; value is not one"
                      : se->type == DRV_VALUE_BOOL ? "key holds booleans; value is not one"
                                                   : "key holds numbers; value is not one";
            else if (he != DRV_OK) {
                e = he;
                goto out_rec;
            } else if (ts_wal_samples_add(rec, se->id, x->ts_ms, &x->v) != DRV_OK) {
                e = DRV_NOMEM;
                goto out_rec;
            } else {
                logged++;
            }
        }
        if (why) {
            if (!res->why) {
                res->why = why;
                res->why_index = i;
            }
            res->refused++;
        } else {
            res->stored++;
        }
    }
    e = logged ? ts_wal_samples_end(db, rec) : DRV_OK;
out_rec:
    if (rec->buf.size > (1u << 20))
        drv_buf_free(&rec->buf); /* a huge batch: don't keep its buffer */
    db->stats.samples_appended += res->stored;
    db->stats.samples_refused += res->refused;
    db->stats.head_samples = db->head_samples;
    if (db->head_samples >= db->cfg.head_max_samples)
        pthread_cond_signal(&db->cond);
out:
    pthread_mutex_unlock(&db->mu);
    return e;
}

static drv_err ts_commit(void *st)
{
    ts_db *db = st;
    return ts_wal_commit(db, db->cfg.durability == DRV_TSDB_SYNC);
}

/* -- purge and retention ------------------------------------------------------------ */

static drv_err ts_drop_device(void *st, const char *tenant, const char *device)
{
    ts_db *db = st;
    pthread_mutex_lock(&db->mu);
    ts_device *d = device_get(db, tenant, strlen(tenant), device, strlen(device), false);
    drv_err e = DRV_OK;
    if (d) {
        for (uint32_t i = 0; i < d->nkeys; i++) {
            ts_series *s = d->keys[i];
            if (s->dropped)
                continue;
            s->dropped = true;
            db->purge_scan = true;
            db->nseries--; /* live series (the struct stays until restart) */
            db->head_samples -= s->head.n;
            d->tenant->head_samples -= s->head.n;
            ts_head_free(&s->head);
        }
        e = ts_wal_log_drop(db, tenant, device);
    }
    pthread_mutex_unlock(&db->mu);
    if (e == DRV_OK)
        e = ts_commit(db);
    return e;
}

static drv_err ts_set_tenant_limits(void *st, const char *tenant, const drv_ts_tenant_limits *lim)
{
    ts_db *db = st;
    pthread_mutex_lock(&db->mu);
    ts_tenant *t = ts_tenant_get(db, tenant, strlen(tenant), true);
    if (t) {
        if (lim->retention_days != t->retention_days)
            db->purge_scan = true; /* partial partitions may now hold expired samples */
        t->retention_days = lim->retention_days;
        t->max_bytes = lim->max_bytes;
    }
    pthread_mutex_unlock(&db->mu);
    return t ? DRV_OK : DRV_NOMEM;
}

/* -- open and close -------------------------------------------------------------------- */

static void db_free(ts_db *db)
{
    for (uint32_t i = 0; i < db->series_cap; i++) {
        ts_series *s = db->series_by_id ? db->series_by_id[i] : NULL;
        if (!s)
            continue;
        ts_head_free(&s->head);
        ts_head_free(&s->frozen);
        if (s->last_type == DRV_VALUE_STRING)
            drv_free((void *)(uintptr_t)s->last_v);
        drv_free(s);
    }
    drv_free(db->series_by_id);
    size_t b;
    drv_hnode *n = drv_hmap_first(&db->device_map, &b);
    while (n) {
        drv_hnode *next = drv_hmap_next(&db->device_map, n, &b);
        ts_device *d = (ts_device *)n;
        drv_free(d->keys);
        drv_free(d);
        n = next;
    }
    n = drv_hmap_first(&db->tenant_map, &b);
    while (n) {
        drv_hnode *next = drv_hmap_next(&db->tenant_map, n, &b);
        ts_tenant *t = (ts_tenant *)n;
        while (t->parts) {
            ts_partition *p = t->parts;
            t->parts = p->next;
            while (p->segs) {
                ts_segment *sg = p->segs;
                p->segs = sg->next;
                ts_seg_unref(sg);
            }
            drv_free(p);
        }
        drv_free(t->devs);
        drv_free(t->id);
        drv_free(t->dir);
        drv_free(t);
        n = next;
    }
    drv_hmap_free(&db->device_map);
    drv_hmap_free(&db->tenant_map);
    drv_hmap_free(&db->series_map);
    drv_buf_free(&db->pending);
    drv_buf_free(&db->writing);
    drv_buf_free(&db->rec.buf);
    pthread_mutex_destroy(&db->mu);
    pthread_mutex_destroy(&db->commit_mu);
    pthread_mutex_destroy(&db->flush_mu);
    pthread_cond_destroy(&db->cond);
    drv_free(db->dir);
    drv_free(db);
}

static void ts_close(void *st)
{
    ts_db *db = st;
    ts_thread_stop(db);
    drv_err e = ts_flush_and_compact(db); /* a clean stop leaves no log to replay */
    if (e != DRV_OK)
        drv_warn("tsdb: final flush failed; the log is kept", "error", drv_strerror(e));
    ts_wal_close(db);
    db_free(db);
}

static const drv_ts_store_ops embedded_ops = {
    .name = "embedded",
    .append = ts_append,
    .commit = ts_commit,
    .scan = ts_scan,
    .aggregate = ts_aggregate,
    .series = ts_series_list,
    .drop_device = ts_drop_device,
    .set_tenant_limits = ts_set_tenant_limits,
    .close = ts_close,
};

drv_err drv_tsdb_open(const drv_tsdb_config *cfg, drv_ts_store *out, drv_tsdb_recovery *rep)
{
    drv_tsdb_recovery scratch;
    if (!rep)
        rep = &scratch;
    memset(rep, 0, sizeof(*rep));
    if (!cfg->dir || cfg->partition_hours == 0 || cfg->partition_hours > 8760)
        return DRV_CONFIG;
    ts_db *db = drv_calloc(1, sizeof(*db));
    if (!db)
        return DRV_NOMEM;
    db->cfg = *cfg;
    if (db->cfg.max_future_ms < 0 || db->cfg.max_future_ms > DRV_TS_TIME_MAX / 4)
        db->cfg.max_future_ms = DRV_TS_TIME_MAX / 4; /* now + it never overflows */
    if (db->cfg.head_max_samples == 0)
        db->cfg.head_max_samples = 4000000;
    if (db->cfg.head_max_age_s == 0)
        db->cfg.head_max_age_s = 3600;
    if (db->cfg.sync_interval_ms == 0)
        db->cfg.sync_interval_ms = 200;
    db->dir = drv_strdup(cfg->dir);
    db->cfg.dir = db->dir;
    db->wal_fd = -1;
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->commit_mu, NULL);
    pthread_mutex_init(&db->flush_mu, NULL);
    pthread_cond_init(&db->cond, NULL);
    drv_hmap_init(&db->tenant_map);
    drv_hmap_init(&db->device_map);
    drv_hmap_init(&db->series_map);
    drv_buf_init(&db->pending, 1u << 30);
    drv_buf_init(&db->writing, 1u << 30);
    drv_buf_init(&db->rec.buf, 256u << 20);
    db->next_seg_seq = 1;
    drv_err e = db->dir ? drv_mkdir_p(db->dir) : DRV_NOMEM;
    db->purge_scan = true; /* the files may hold what a purge or retention left */
    if (e == DRV_OK)
        e = ts_blocks_load(db, rep);
    if (e == DRV_OK)
        e = ts_wal_open(db, rep);
    if (e == DRV_OK)
        e = ts_thread_start(db);
    if (e != DRV_OK) {
        ts_wal_close(db);
        db_free(db);
        return e;
    }
    rep->series = db->nseries;
    db->stats.series = db->nseries;
    db->stats.head_samples = db->head_samples;
    out->ops = &embedded_ops;
    out->st = db;
    return DRV_OK;
}

bool drv_tsdb_get_stats(const drv_ts_store *store, drv_tsdb_stats *out)
{
    if (store->ops != &embedded_ops)
        return false;
    ts_db *db = store->st;
    pthread_mutex_lock(&db->mu);
    *out = db->stats;
    out->series = db->nseries;
    out->head_samples = db->head_samples;
    pthread_mutex_unlock(&db->mu);
    return true;
}

drv_err drv_tsdb_flush(const drv_ts_store *store)
{
    if (store->ops != &embedded_ops)
        return DRV_UNSUPPORTED;
    return ts_flush_and_compact(store->st);
}
