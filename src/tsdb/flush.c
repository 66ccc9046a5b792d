/*
 * flush.c — moving samples from memory to block files, and keeping those
 * files in shape: the flush, compaction, purge, retention, the loading of
 * block files at open, and the background thread that runs them.
 *
 * Flush (ADR-0013):
 *   1. under commit_mu and db->mu: every live head becomes its series'
 *      frozen head; the log rotates to a new segment (the old ones hold
 *      exactly the frozen samples and what came before);
 *   2. unlocked: the frozen heads are sorted, split by tenant and time
 *      partition, encoded and written, one new file per (tenant, partition);
 *   3. under db->mu: the files are opened and put in their partitions, the
 *      frozen heads freed;
 *   4. the old log segments are removed.
 * A crash before 4 replays the old segments: the samples are then in a
 * file and in the head at once, which reads deduplicate (same millisecond)
 * and the next compaction folds away.
 *
 * File names "<first seq>-<last seq>.blk" (16 hex digits each): a flush
 * writes seq-seq; compaction merges every file of a partition into one named
 * for the range it covers, so at load a file whose range lies inside
 * another's is a leftover of a compaction that did not finish removing its
 * inputs, and is removed.  A newer sequence wins on equal timestamps.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "platform/clock.h"
#include "tsdb/tsdb_int.h"

/* A partition is compacted once it has this many files, or 2 once it is cold. */
#define COMPACT_FILES 4u

static int64_t wall_ms(void)
{
    return (int64_t)drv_wall_ms();
}

static char *seg_file_path(const ts_tenant *t, int64_t start, uint64_t lo, uint64_t hi)
{
    size_t cap = strlen(t->dir) + 64;
    char *p = drv_malloc(cap);
    if (p)
        snprintf(p, cap, "%s/%" PRId64 "/%016" PRIx64 "-%016" PRIx64 ".blk", t->dir, start, lo, hi);
    return p;
}

static ts_partition *partition_get(ts_db *db, ts_tenant *t, int64_t start)
{
    ts_partition **pp = &t->parts;
    while (*pp && (*pp)->start < start)
        pp = &(*pp)->next;
    if (*pp && (*pp)->start == start)
        return *pp;
    ts_partition *p = drv_calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->start = start;
    p->end = start + (int64_t)db->cfg.partition_hours * 3600000;
    p->next = *pp;
    *pp = p;
    db->stats.partitions++;
    return p;
}

/* Put a segment in its tenant's partition, ordered by seq (db->mu held). */
static void partition_add(ts_tenant *t, ts_partition *p, ts_segment *seg)
{
    t->bytes += seg->map.len;
    ts_segment **pp = &p->segs;
    while (*pp && (*pp)->seq < seg->seq)
        pp = &(*pp)->next;
    seg->next = *pp;
    *pp = seg;
    p->nsegs++;
}

/* Latest value of each series from a file's last blocks, when newer than
 * what the engine knows (at open, db->mu held). */
static void learn_latest(ts_db *db, const ts_segment *seg)
{
    static _Thread_local int64_t ts[TS_BLOCK_SAMPLES];
    static _Thread_local uint64_t v[TS_BLOCK_SAMPLES];
    static _Thread_local drv_span strs[TS_BLOCK_SAMPLES];
    for (uint32_t i = 0; i < seg->nseries; i++) {
        const ts_seg_series *ss = &seg->series[i];
        ts_series *s = ss->id < db->series_cap ? db->series_by_id[ss->id] : NULL;
        const ts_block_ref *r = &ss->blocks[ss->nblocks - 1];
        if (!s || r->max_ts < s->last_ts)
            continue;
        uint8_t type;
        uint32_t n;
        if (ts_block_decode(seg, r, ts, v, strs, &type, &n) != DRV_OK)
            continue;
        drv_value val = {.type = (drv_value_type)type};
        if (type == DRV_VALUE_DOUBLE)
            memcpy(&val.d, &v[n - 1], 8);
        else if (type == DRV_VALUE_INT)
            val.i = (int64_t)v[n - 1];
        else if (type == DRV_VALUE_BOOL)
            val.b = v[n - 1] != 0;
        else
            val.s = strs[v[n - 1]];
        /* ts_head_add sets `last`; take the point back out of the head. */
        uint32_t had = s->head.n;
        if (ts_head_add(db, s, ts[n - 1], &val) == DRV_OK && s->head.n == had + 1) {
            s->head.n--;
            db->head_samples--;
            s->dev->tenant->head_samples--;
            if (type == DRV_VALUE_STRING)
                drv_free((void *)(uintptr_t)s->head.p[had].v);
        }
    }
}

/* -- flush ------------------------------------------------------------------------------ */

/* One output file being built: a tenant's partition. */
typedef struct out_file {
    ts_tenant *t;
    int64_t start;
    ts_seg_writer w;
} out_file;

typedef struct out_set {
    out_file *f;
    uint32_t n, cap;
} out_set;

static out_file *out_get(out_set *o, ts_tenant *t, int64_t start)
{
    for (uint32_t i = o->n; i-- > 0;) /* the latest is the likeliest */
        if (o->f[i].t == t && o->f[i].start == start)
            return &o->f[i];
    if (o->n == o->cap) {
        uint32_t cap = o->cap ? o->cap * 2 : 8;
        out_file *a = drv_realloc(o->f, cap * sizeof(*a));
        if (!a)
            return NULL;
        o->f = a;
        o->cap = cap;
    }
    out_file *f = &o->f[o->n++];
    f->t = t;
    f->start = start;
    ts_segw_init(&f->w);
    return f;
}

/* Write out_set files and install them (seq range lo..hi each). */
static drv_err install(ts_db *db, out_set *o, uint64_t lo_seq, uint64_t hi_seq)
{
    drv_err e = DRV_OK;
    for (uint32_t i = 0; i < o->n && e == DRV_OK; i++) {
        out_file *f = &o->f[i];
        if (f->w.nseries == 0)
            continue;
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s/%" PRId64, f->t->dir, f->start);
        e = drv_mkdir_p(dir);
        /* New directories must survive a power cut before the log goes. */
        char troot[4200];
        snprintf(troot, sizeof(troot), "%s/t", db->dir);
        if (e == DRV_OK)
            e = drv_dir_sync(f->t->dir);
        if (e == DRV_OK)
            e = drv_dir_sync(troot);
        char *path = e == DRV_OK ? seg_file_path(f->t, f->start, lo_seq, hi_seq) : NULL;
        if (e == DRV_OK && !path)
            e = DRV_NOMEM;
        if (e == DRV_OK)
            e = ts_segw_finish(&f->w, f->t->id, path);
        if (e == DRV_OK) {
            pthread_mutex_lock(&db->mu);
            ts_segment *seg;
            e = ts_seg_open(db, path, f->t->id, hi_seq, &seg);
            ts_partition *p = e == DRV_OK ? partition_get(db, f->t, f->start) : NULL;
            if (e == DRV_OK && !p) {
                ts_seg_unref(seg);
                e = DRV_NOMEM;
            }
            if (e == DRV_OK) {
                partition_add(f->t, p, seg);
                db->stats.blocks_written += seg->nseries;
                db->stats.block_bytes += seg->map.len;
            }
            pthread_mutex_unlock(&db->mu);
        }
        drv_free(path);
    }
    return e;
}

static void out_free(out_set *o)
{
    for (uint32_t i = 0; i < o->n; i++)
        ts_segw_free(&o->f[i].w);
    drv_free(o->f);
}

static drv_err compact_partition(ts_db *db, ts_tenant *t, ts_partition *p);
static bool compact_due(ts_db *db, bool everything, bool purges_only);

drv_err ts_flush(ts_db *db)
{
    pthread_mutex_lock(&db->commit_mu);
    int new_fd;
    drv_err pe = ts_wal_rotate_prepare(db, &new_fd);
    if (pe != DRV_OK) {
        pthread_mutex_unlock(&db->commit_mu);
        return pe;
    }
    pthread_mutex_lock(&db->mu);
    /* 1. freeze every head, rotate the log */
    ts_series **list = NULL;
    uint32_t n = 0;
    if (db->nseries)
        list = drv_malloc(db->series_cap * sizeof(*list));
    if (db->nseries && !list) {
        pthread_mutex_unlock(&db->mu);
        pthread_mutex_unlock(&db->commit_mu);
        drv_file_close(new_fd); /* an empty segment: harmless, removed with the next flush */
        return DRV_NOMEM;
    }
    for (uint32_t i = 0; i < db->series_cap; i++) {
        ts_series *s = db->series_by_id[i];
        if (!s || (s->head.n == 0 && s->frozen.n == 0))
            continue;
        if (s->frozen.n == 0) {
            s->frozen = s->head;
            memset(&s->head, 0, sizeof(s->head));
        } else if (s->head.n) {
            /* A failed flush left its frozen head: the live one joins it. */
            ts_head *f = &s->frozen;
            if (f->n + s->head.n > f->cap) {
                ts_point *np = drv_realloc(f->p, (f->n + s->head.n) * sizeof(*np));
                if (!np)
                    continue; /* stays live; flushed next time */
                f->p = np;
                f->cap = f->n + s->head.n;
            }
            if (f->type != s->head.type && s->head.type == DRV_VALUE_DOUBLE) {
                for (uint32_t k = 0; k < f->n; k++) {
                    double d = (double)(int64_t)f->p[k].v;
                    memcpy(&f->p[k].v, &d, 8);
                }
                f->type = DRV_VALUE_DOUBLE;
            }
            memcpy(f->p + f->n, s->head.p, s->head.n * sizeof(*f->p));
            f->n += s->head.n;
            f->sorted = false;
            drv_free(s->head.p);
            memset(&s->head, 0, sizeof(s->head));
        }
        list[n++] = s;
    }
    /* Sorted here, under the lock: queries read frozen heads while step 2 runs,
     * and sorting frees the strings of duplicate times. */
    for (uint32_t i = 0; i < n; i++)
        ts_head_sort(&list[i]->frozen);
    /* Every series declares itself again in the new log segment before its
     * next sample there: the old segments (with the SERIES records) go at the
     * end of this flush, and the series may have no block file to name it. */
    for (uint32_t i = 0; i < db->series_cap; i++)
        if (db->series_by_id[i])
            db->series_by_id[i]->logged = false;
    db->head_samples = 0;
    db->head_first_ms = 0;
    size_t tb;
    for (drv_hnode *hn = drv_hmap_first(&db->tenant_map, &tb); hn;
         hn = drv_hmap_next(&db->tenant_map, hn, &tb))
        ((ts_tenant *)hn)->head_samples = 0;
    uint64_t prev_seq = 0;
    int old_fd;
    ts_wal_rotate(db, new_fd, &prev_seq, &old_fd);
    uint64_t seq = db->next_seg_seq++;
    pthread_mutex_unlock(&db->mu);
    drv_err e = ts_wal_rotate_finish(db, old_fd);
    pthread_mutex_unlock(&db->commit_mu);
    if (e != DRV_OK) {
        drv_free(list);
        return e;
    }

    /* 2. encode, by tenant and partition */
    out_set o = {0};
    for (uint32_t i = 0; i < n && e == DRV_OK; i++) {
        ts_series *s = list[i];
        if (s->dropped || !s->dev)
            continue;
        ts_head *f = &s->frozen;
        if (!f->sorted) {
            e = DRV_NOMEM; /* the sort in step 1 could not allocate */
            break;
        }
        uint32_t k = 0;
        while (k < f->n && e == DRV_OK) {
            int64_t start = ts_partition_start(db, f->p[k].ts);
            int64_t end = start + (int64_t)db->cfg.partition_hours * 3600000;
            uint32_t j = k;
            while (j < f->n && f->p[j].ts < end)
                j++;
            out_file *of = out_get(&o, s->dev->tenant, start);
            e = of ? ts_segw_add(&of->w, s, f->type, f->p + k, j - k) : DRV_NOMEM;
            k = j;
        }
    }
    /* 3. install, free the frozen heads */
    if (e == DRV_OK)
        e = install(db, &o, seq, seq);
    out_free(&o);
    pthread_mutex_lock(&db->mu);
    if (e == DRV_OK) {
        for (uint32_t i = 0; i < n; i++)
            ts_head_free(&list[i]->frozen);
        db->stats.flushes++;
    }
    pthread_mutex_unlock(&db->mu);
    drv_free(list);
    if (e != DRV_OK) {
        drv_warn("tsdb: flush failed; the samples stay in memory and in the log", "error",
                 drv_strerror(e));
        return e;
    }
    /* 4. the log before the rotation is in files now — once purged devices
     * are out of the files too: the log's DROP records must outlive their data. */
    if (!compact_due(db, false, true)) {
        drv_warn("tsdb: a purge's compaction failed; the log is kept until it succeeds");
        return DRV_OK;
    }
    ts_wal_remove_upto(db, prev_seq);
    return DRV_OK;
}

/* -- compaction ------------------------------------------------------------------------- */

/* The file's [lo, hi] sequence range from its name. */
static bool parse_seg_name(const char *name, uint64_t *lo, uint64_t *hi)
{
    if (strlen(name) != 37 || name[16] != '-' || strcmp(name + 33, ".blk") != 0)
        return false;
    char *end;
    *lo = strtoull(name, &end, 16);
    if (end != name + 16)
        return false;
    *hi = strtoull(name + 17, &end, 16);
    return end == name + 33 && *lo <= *hi;
}

/*
 * Merge every file of a partition into one, dropping purged series and
 * duplicate times (the newest file wins).  The inputs are referenced under
 * the lock and read without it; appends and flushes go on meanwhile (a
 * flush adds files with higher sequence numbers, which stay).
 */
static drv_err compact_partition(ts_db *db, ts_tenant *t, ts_partition *p)
{
    pthread_mutex_lock(&db->mu);
    uint32_t nin = p->nsegs;
    ts_segment **in = drv_malloc((nin ? nin : 1) * sizeof(*in));
    if (!in) {
        pthread_mutex_unlock(&db->mu);
        return DRV_NOMEM;
    }
    uint32_t k = 0;
    for (ts_segment *sg = p->segs; sg; sg = sg->next) {
        sg->refs++;
        in[k++] = sg;
    }
    /* every series id the inputs hold, with whether it is still live */
    uint32_t max_id = 0;
    for (uint32_t i = 0; i < nin; i++)
        for (uint32_t j = 0; j < in[i]->nseries; j++)
            if (in[i]->series[j].id > max_id)
                max_id = in[i]->series[j].id;
    pthread_mutex_unlock(&db->mu);

    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint32_t i = 0; i < nin; i++) {
        uint64_t a, b;
        const char *base = strrchr(in[i]->path, '/');
        if (base && parse_seg_name(base + 1, &a, &b)) {
            if (a < lo)
                lo = a;
            if (b > hi)
                hi = b;
        }
    }
    drv_err e = DRV_OK;
    out_set o = {0};
    out_file *of = out_get(&o, t, p->start);
    if (!of)
        e = DRV_NOMEM;
    ts_point *pts = NULL;
    uint32_t cap = 0;
    int64_t ts[TS_BLOCK_SAMPLES];
    uint64_t v[TS_BLOCK_SAMPLES];
    static _Thread_local drv_span strs[TS_BLOCK_SAMPLES];
    for (uint32_t id = 0; id <= max_id && e == DRV_OK; id++) {
        pthread_mutex_lock(&db->mu);
        ts_series *s = id < db->series_cap ? db->series_by_id[id] : NULL;
        bool live = s && !s->dropped && s->dev;
        int64_t cut = live ? ts_cutoff(s->dev, wall_ms()) : INT64_MIN;
        pthread_mutex_unlock(&db->mu);
        if (!live)
            continue;
        /* The kind to write: DOUBLE if any input holds the series as DOUBLE
         * (an INT series promoted on the way), else the inputs' kind. */
        uint8_t type = 0;
        for (uint32_t i = 0; i < nin; i++) {
            const ts_seg_series *ss = ts_seg_find(in[i], id);
            if (ss && (!type || ss->type == DRV_VALUE_DOUBLE))
                type = ss->type;
        }
        /* Points of every input in file order; the stable sort below keeps
         * that order on equal times, so the newest file's point is last. */
        uint32_t np = 0;
        ts_str **owned = NULL;
        uint32_t nowned = 0;
        for (uint32_t i = 0; i < nin && e == DRV_OK; i++) {
            const ts_seg_series *ss = ts_seg_find(in[i], id);
            for (uint32_t b = 0; ss && b < ss->nblocks && e == DRV_OK; b++) {
                uint8_t bt;
                uint32_t bn;
                if (ts_block_decode(in[i], &ss->blocks[b], ts, v, strs, &bt, &bn) != DRV_OK ||
                    (bt != type && !(bt == DRV_VALUE_INT && type == DRV_VALUE_DOUBLE))) {
                    drv_error("tsdb: compaction skipped a corrupt block", "file", in[i]->path);
                    pthread_mutex_lock(&db->mu);
                    db->stats.corrupt_blocks++;
                    pthread_mutex_unlock(&db->mu);
                    continue;
                }
                if (np + bn > cap) {
                    uint32_t nc = cap ? cap * 2 : 4096;
                    while (nc < np + bn)
                        nc *= 2;
                    ts_point *na = drv_realloc(pts, nc * sizeof(*na));
                    if (!na) {
                        e = DRV_NOMEM;
                        break;
                    }
                    pts = na;
                    cap = nc;
                }
                if (bt == DRV_VALUE_STRING) {
                    ts_str **ow = drv_realloc(owned, (nowned + bn) * sizeof(*ow));
                    if (!ow) {
                        e = DRV_NOMEM;
                        break;
                    }
                    owned = ow;
                }
                for (uint32_t x = 0; x < bn && e == DRV_OK; x++) {
                    if (ts[x] < cut)
                        continue; /* expired: the device's (or tenant's) retention */
                    uint64_t val = v[x];
                    if (bt == DRV_VALUE_STRING) {
                        ts_str *str = drv_malloc(sizeof(*str) + strs[val].n);
                        if (!str) {
                            e = DRV_NOMEM;
                            break;
                        }
                        owned[nowned++] = str;
                        str->len = (uint32_t)strs[val].n;
                        memcpy(str->data, strs[val].p, strs[val].n);
                        val = (uint64_t)(uintptr_t)str;
                    } else if (bt == DRV_VALUE_INT && type == DRV_VALUE_DOUBLE) {
                        double d = (double)(int64_t)val;
                        memcpy(&val, &d, 8);
                    }
                    pts[np++] = (ts_point){ts[x], val};
                }
            }
        }
        if (e == DRV_OK && np) {
            ts_head h = {.p = pts, .n = np, .cap = cap, .type = DRV_VALUE_INT, .sorted = false};
            ts_head_sort(&h); /* stable: later inputs (newer) win on equal times */
            if (!h.sorted)
                e = DRV_NOMEM;
            else
                e = ts_segw_add(&of->w, s, type, h.p, h.n);
        }
        for (uint32_t i = 0; i < nowned; i++)
            drv_free(owned[i]);
        drv_free(owned);
    }
    drv_free(pts);
    if (e == DRV_OK && of && of->w.nseries) {
        char dir[4200];
        snprintf(dir, sizeof(dir), "%s/%" PRId64, t->dir, p->start);
        char *path = seg_file_path(t, p->start, lo, hi);
        e = path ? ts_segw_finish(&of->w, t->id, path) : DRV_NOMEM;
        if (e == DRV_OK) {
            pthread_mutex_lock(&db->mu);
            ts_segment *seg;
            e = ts_seg_open(db, path, t->id, hi, &seg);
            if (e == DRV_OK) {
                /* out with the inputs, in with the merged file */
                for (uint32_t i = 0; i < nin; i++) {
                    ts_segment **pp = &p->segs;
                    while (*pp && *pp != in[i])
                        pp = &(*pp)->next;
                    if (*pp) {
                        *pp = in[i]->next;
                        p->nsegs--;
                        t->bytes -= in[i]->map.len;
                        ts_seg_unref(in[i]); /* the partition's reference */
                    }
                }
                partition_add(t, p, seg);
            }
            pthread_mutex_unlock(&db->mu);
        }
        drv_free(path);
    } else if (e == DRV_OK) {
        pthread_mutex_lock(&db->mu);
        for (uint32_t i = 0; i < nin; i++) {
            ts_segment **pp = &p->segs;
            while (*pp && *pp != in[i])
                pp = &(*pp)->next;
            if (*pp) {
                *pp = in[i]->next;
                p->nsegs--;
                t->bytes -= in[i]->map.len;
                ts_seg_unref(in[i]);
            }
        }
        pthread_mutex_unlock(&db->mu);
    }
    bool wrote = of && of->w.nseries;
    out_free(&o);
    if (e == DRV_OK) {
        /* the inputs' files are no longer needed (their mappings stay valid) */
        for (uint32_t i = 0; i < nin; i++) {
            const char *base = strrchr(in[i]->path, '/');
            uint64_t a, b;
            if (base && parse_seg_name(base + 1, &a, &b) && (!wrote || !(a == lo && b == hi)))
                drv_file_remove(in[i]->path);
        }
    }
    pthread_mutex_lock(&db->mu);
    for (uint32_t i = 0; i < nin; i++)
        ts_seg_unref(in[i]);
    pthread_mutex_unlock(&db->mu);
    drv_free(in);
    return e;
}

/* Compact what needs it: partitions with many files, cold ones with two or
 * more, and any holding a purged series (purges_only: just those).  false
 * when a compaction failed. */
static bool compact_due(ts_db *db, bool everything, bool purges_only)
{
    int64_t now = wall_ms();
    for (;;) {
        ts_tenant *pick_t = NULL;
        ts_partition *pick_p = NULL;
        pthread_mutex_lock(&db->mu);
        size_t b;
        for (drv_hnode *hn = drv_hmap_first(&db->tenant_map, &b); hn && !pick_p;
             hn = drv_hmap_next(&db->tenant_map, hn, &b)) {
            ts_tenant *t = (ts_tenant *)hn;
            for (ts_partition *p = t->parts; p; p = p->next) {
                bool cold = p->end < now - 3600000;
                bool purge = false;
                for (ts_segment *sg = db->purge_scan ? p->segs : NULL; sg && !purge; sg = sg->next)
                    for (uint32_t i = 0; i < sg->nseries && !purge; i++) {
                        uint32_t id = sg->series[i].id;
                        ts_series *s = id < db->series_cap ? db->series_by_id[id] : NULL;
                        /* purged, or holding samples a day past the device's
                         * retention (a day of slack: one rewrite a day at most) */
                        int64_t cut = s && s->dev ? ts_cutoff(s->dev, now) : INT64_MIN;
                        purge =
                            !s || s->dropped ||
                            (cut != INT64_MIN && sg->series[i].blocks[0].min_ts < cut - 86400000);
                    }
                bool many = p->nsegs >= COMPACT_FILES || (p->nsegs >= 2 && (cold || everything));
                if (purge || (many && !purges_only)) {
                    pick_t = t;
                    pick_p = p;
                    break;
                }
            }
        }
        if (!pick_p)
            db->purge_scan = false; /* looked everywhere, nothing purged or expired left */
        pthread_mutex_unlock(&db->mu);
        if (!pick_p)
            return true;
        drv_err e = compact_partition(db, pick_t, pick_p);
        if (e != DRV_OK) {
            drv_warn("tsdb: compaction failed", "tenant", pick_t->id, "error", drv_strerror(e));
            return false;
        }
    }
}

/* -- retention ----------------------------------------------------------------------------- */

static void remove_partition_files(ts_partition *p, const ts_tenant *t)
{
    for (ts_segment *sg = p->segs; sg; sg = sg->next)
        drv_file_remove(sg->path);
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s/%" PRId64, t->dir, p->start);
    drv_dir_remove(dir);
}

static void retention_sweep(ts_db *db)
{
    int64_t now = wall_ms();
    pthread_mutex_lock(&db->mu);
    size_t b;
    for (drv_hnode *hn = drv_hmap_first(&db->tenant_map, &b); hn;
         hn = drv_hmap_next(&db->tenant_map, hn, &b)) {
        ts_tenant *t = (ts_tenant *)hn;
        if (!t->retention_days)
            continue;
        int64_t oldest = now - (int64_t)t->retention_days * 86400000;
        ts_partition **pp = &t->parts;
        while (*pp) {
            ts_partition *p = *pp;
            if (p->end > oldest) {
                pp = &p->next;
                continue;
            }
            *pp = p->next;
            char start[24];
            snprintf(start, sizeof(start), "%" PRId64, p->start);
            drv_info("tsdb: retention drops a partition", "tenant", t->id, "start_ms", start);
            remove_partition_files(p, t);
            while (p->segs) {
                ts_segment *sg = p->segs;
                p->segs = sg->next;
                t->bytes -= sg->map.len;
                ts_seg_unref(sg);
            }
            drv_free(p);
            db->stats.partitions_dropped++;
        }
    }
    pthread_mutex_unlock(&db->mu);
}

/* -- loading --------------------------------------------------------------------------------- */

typedef struct name_list {
    char **names;
    uint32_t n, cap;
    bool dirs_only, oom;
} name_list;

static bool collect_name(void *ud, const char *name, bool is_dir)
{
    name_list *l = ud;
    if (l->dirs_only != is_dir)
        return true;
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 16;
        char **a = drv_realloc(l->names, cap * sizeof(*a));
        if (!a) {
            l->oom = true;
            return false;
        }
        l->names = a;
        l->cap = cap;
    }
    l->names[l->n] = drv_strdup(name);
    if (!l->names[l->n]) {
        l->oom = true;
        return false;
    }
    l->n++;
    return true;
}

static void names_free(name_list *l)
{
    for (uint32_t i = 0; i < l->n; i++)
        drv_free(l->names[i]);
    drv_free(l->names);
}

static drv_err list_names(const char *dir, bool dirs, name_list *l)
{
    memset(l, 0, sizeof(*l));
    l->dirs_only = dirs;
    drv_err e = drv_dir_each(dir, collect_name, l);
    if (e == DRV_NOTFOUND)
        e = DRV_OK;
    return l->oom ? DRV_NOMEM : e;
}

/* The tenant id a directory name stands for (tsdb.c tenant_dir); false if none. */
static bool tenant_of_dir(const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    if (n > 2 && name[0] == 'x' && name[1] == '-') {
        size_t hex = n - 2;
        if (hex % 2 || hex / 2 >= cap)
            return false;
        for (size_t i = 0; i < hex / 2; i++) {
            unsigned v;
            if (sscanf(name + 2 + 2 * i, "%2x", &v) != 1)
                return false;
            out[i] = (char)v;
        }
        out[hex / 2] = '\0';
        return memchr(out, '\0', hex / 2) == NULL;
    }
    if (n == 0 || n >= cap || name[0] == 'x' || name[0] == '.')
        return false;
    memcpy(out, name, n + 1);
    return true;
}

static drv_err load_partition(ts_db *db, ts_tenant *t, int64_t start, const char *dir,
                              drv_tsdb_recovery *rep)
{
    name_list files;
    drv_err e = list_names(dir, false, &files);
    if (e != DRV_OK) {
        names_free(&files);
        return e;
    }
    char path[4400];
    for (uint32_t i = 0; i < files.n && e == DRV_OK; i++) {
        const char *name = files.names[i];
        uint64_t lo, hi;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
            continue; /* not a name this engine writes */
        size_t nl = strlen(name);
        if (nl > 4 && strcmp(name + nl - 4, ".tmp") == 0) {
            drv_file_remove(path); /* a write that never finished */
            continue;
        }
        if (!parse_seg_name(name, &lo, &hi))
            continue;
        /* inside another file's range: a compaction's leftover input */
        bool covered = false;
        for (uint32_t j = 0; j < files.n && !covered; j++) {
            uint64_t a, b;
            if (j != i && parse_seg_name(files.names[j], &a, &b) && a <= lo && hi <= b &&
                (a != lo || b != hi))
                covered = true;
        }
        if (covered) {
            drv_file_remove(path);
            continue;
        }
        ts_segment *seg;
        drv_err oe = ts_seg_open(db, path, t->id, hi, &seg);
        if (oe == DRV_NOMEM) {
            e = oe;
            break;
        }
        if (oe != DRV_OK) {
            char bad[4420];
            snprintf(bad, sizeof(bad), "%s.corrupt", path);
            drv_error("tsdb: a block file is damaged; set aside", "file", path, "error",
                      drv_strerror(oe));
            drv_file_replace(path, bad);
            rep->blocks_files_bad++;
            continue;
        }
        ts_partition *p = partition_get(db, t, start);
        if (!p) {
            ts_seg_unref(seg);
            e = DRV_NOMEM;
            break;
        }
        partition_add(t, p, seg);
        learn_latest(db, seg);
        rep->blocks_files++;
        if (hi >= db->next_seg_seq)
            db->next_seg_seq = hi + 1;
    }
    names_free(&files);
    return e;
}

drv_err ts_blocks_load(ts_db *db, drv_tsdb_recovery *rep)
{
    char root[4200];
    snprintf(root, sizeof(root), "%s/t", db->dir);
    drv_err e = drv_mkdir_p(root);
    name_list tenants;
    if (e == DRV_OK)
        e = list_names(root, true, &tenants);
    else
        memset(&tenants, 0, sizeof(tenants));
    pthread_mutex_lock(&db->mu);
    for (uint32_t i = 0; i < tenants.n && e == DRV_OK; i++) {
        char id[DRV_TS_MAX_ID + 1];
        if (!tenant_of_dir(tenants.names[i], id, sizeof(id)))
            continue;
        ts_tenant *t = ts_tenant_get(db, id, strlen(id), true);
        if (!t) {
            e = DRV_NOMEM;
            break;
        }
        name_list parts;
        e = list_names(t->dir, true, &parts);
        for (uint32_t k = 0; k < parts.n && e == DRV_OK; k++) {
            char *end;
            long long start = strtoll(parts.names[k], &end, 10);
            if (*end || end == parts.names[k] || ts_partition_start(db, start) != start)
                continue; /* not a partition of this width: left alone */
            char dir[4400];
            snprintf(dir, sizeof(dir), "%s/%s", t->dir, parts.names[k]);
            e = load_partition(db, t, start, dir, rep);
        }
        names_free(&parts);
    }
    pthread_mutex_unlock(&db->mu);
    names_free(&tenants);
    return e;
}

/* Ask for every device's own retention (its profile's) — outside the lock,
 * since the answer may come from a database — and note it. */
static void device_retention_sweep(ts_db *db, bool only_new)
{
    if (!db->cfg.device_retention)
        return;
    pthread_mutex_lock(&db->mu);
    db->devices_unasked = false;
    size_t n = db->device_map.count, k = 0, b;
    ts_device **devs = drv_malloc((n ? n : 1) * sizeof(*devs));
    for (drv_hnode *hn = drv_hmap_first(&db->device_map, &b); devs && hn && k < n;
         hn = drv_hmap_next(&db->device_map, hn, &b)) {
        ts_device *d = (ts_device *)hn; /* devices live as long as the engine */
        if (!only_new || !d->retention_known)
            devs[k++] = d;
    }
    pthread_mutex_unlock(&db->mu);
    bool stop = false;
    for (size_t i = 0; devs && i < k && !stop; i++) {
        if (i && i % 256 == 0 && db->cfg.durability == DRV_TSDB_BATCH)
            ts_wal_commit(db, true); /* a long sweep must not stretch the batch loss window */
        uint32_t days =
            db->cfg.device_retention(db->cfg.device_retention_ud, devs[i]->tenant->id, devs[i]->id);
        pthread_mutex_lock(&db->mu);
        if (days)
            db->purge_scan = true; /* a device keeps less than its tenant */
        devs[i]->retention_days = days;
        devs[i]->retention_known = true;
        stop = db->stopping; /* a shutdown does not wait for a whole sweep */
        pthread_mutex_unlock(&db->mu);
    }
    drv_free(devs);
}

/* -- the background thread ---------------------------------------------------------------- */

static void *thread_main(void *arg)
{
    ts_db *db = arg;
    uint64_t last_sweep = drv_mono_ms();
    uint64_t last_device_sweep = 0; /* every device: 2 s after start, then hourly */
    uint64_t last_purge_tick = drv_mono_ms();
    uint64_t started = drv_mono_ms();
    pthread_mutex_lock(&db->mu);
    while (!db->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint32_t wait_ms = db->cfg.durability == DRV_TSDB_BATCH ? db->cfg.sync_interval_ms : 1000;
        ts.tv_sec += wait_ms / 1000;
        ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&db->cond, &db->mu, &ts);
        if (db->stopping)
            break;
        uint64_t now = drv_mono_ms();
        bool ask_new = db->devices_unasked;
        bool flush = db->head_samples >= db->cfg.head_max_samples ||
                     (db->head_first_ms &&
                      now - db->head_first_ms >= (uint64_t)db->cfg.head_max_age_s * 1000);
        pthread_mutex_unlock(&db->mu);
        if (db->cfg.durability == DRV_TSDB_BATCH)
            ts_wal_commit(db, true);
        pthread_mutex_lock(&db->flush_mu);
        if (flush && ts_flush(db) == DRV_OK)
            compact_due(db, false, false);
        pthread_mutex_unlock(&db->flush_mu);
        if ((last_device_sweep == 0 && now - started >= 2000) ||
            (last_device_sweep && now - last_device_sweep >= 3600000)) {
            last_device_sweep = now;
            device_retention_sweep(db, false);
        } else if (ask_new) {
            device_retention_sweep(db, true);
        }
        if (now - last_sweep >= 60000) {
            last_sweep = now;
            if (now - last_purge_tick >= 3600000) {
                /* retention cutoffs move with the clock: look for expired samples hourly */
                last_purge_tick = now;
                pthread_mutex_lock(&db->mu);
                db->purge_scan = true;
                pthread_mutex_unlock(&db->mu);
            }
            pthread_mutex_lock(&db->flush_mu);
            retention_sweep(db);
            compact_due(db, false, false);
            pthread_mutex_unlock(&db->flush_mu);
        }
        pthread_mutex_lock(&db->mu);
    }
    pthread_mutex_unlock(&db->mu);
    return NULL;
}

drv_err ts_thread_start(ts_db *db)
{
    /* The engine's thread takes no signals: SIGINT/SIGTERM belong to the server's loop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&db->thread, NULL, thread_main, db);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return DRV_NOMEM;
    db->thread_started = true;
    return DRV_OK;
}

void ts_thread_stop(ts_db *db)
{
    if (!db->thread_started)
        return;
    pthread_mutex_lock(&db->mu);
    db->stopping = true;
    pthread_cond_signal(&db->cond);
    pthread_mutex_unlock(&db->mu);
    pthread_join(db->thread, NULL);
    db->thread_started = false;
}

/* Flush, then compact everything that has more than one file (a clean stop). */
drv_err ts_flush_and_compact(ts_db *db)
{
    pthread_mutex_lock(&db->flush_mu);
    drv_err e = ts_flush(db);
    if (e == DRV_OK)
        compact_due(db, true, false);
    pthread_mutex_unlock(&db->flush_mu);
    return e;
}
