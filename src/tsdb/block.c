/*
 * block.c — block files: one immutable file per flush (or compaction) of a
 * tenant's time partition (ADR-0013).
 *
 *   header   8 bytes magic "DRVTSDB\1", u32 version (1), u32 0
 *   blocks   each: u32 len | u32 crc32c(payload) | payload, where payload =
 *            u8 kind (1: raw samples) | u8 value type | uvarint series id |
 *            uvarint count | timestamp stream | value stream   (codec.h)
 *   index    u32 len | u32 crc32c(payload) | payload, where payload =
 *            str tenant | uvarint series count | per series (ascending id):
 *              uvarint id | u8 type | str device | str key | uvarint blocks |
 *              per block: uvarint offset | svarint min ts | uvarint max-min |
 *              uvarint count
 *   trailer  u64 index offset | 8 bytes magic "DRVTEND\1"
 * (str = uvarint length + bytes; integers little endian.)
 *
 * A file is written whole to "<name>.tmp", fsynced, renamed, and its
 * directory fsynced: a crash leaves either the whole file or a .tmp that the
 * next open removes.  Readers map the file; the index is checked when the
 * file is opened and every block's checksum when the block is read, so a
 * damaged block is an error (counted, logged) and never served.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/crc32c.h"
#include "core/log.h"
#include "tsdb/codec.h"
#include "tsdb/tsdb_int.h"

static const uint8_t MAGIC[8] = {'D', 'R', 'V', 'T', 'S', 'D', 'B', 1};
static const uint8_t END_MAGIC[8] = {'D', 'R', 'V', 'T', 'E', 'N', 'D', 1};
#define HEADER_LEN 16u
#define TRAILER_LEN 16u
#define BLOCK_RAW 1
#define BLOCK_ROLLUP 2 /* then u8 width index instead of the value type */

const int64_t ts_rollup_width[TS_ROLLUPS] = {60000, 3600000};

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_le64(const uint8_t *p)
{
    return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32;
}

static drv_err put_str(drv_buf *b, const char *s, size_t n)
{
    drv_err e = tsc_put_uvarint(b, n);
    return e == DRV_OK ? drv_buf_append(b, s, n) : e;
}

/* -- writing -------------------------------------------------------------------------- */

void ts_segw_init(ts_seg_writer *w)
{
    memset(w, 0, sizeof(*w));
    drv_buf_init(&w->buf, UINT32_MAX);
    drv_buf_init(&w->index, UINT32_MAX);
    uint8_t h[HEADER_LEN] = {0};
    memcpy(h, MAGIC, 8);
    put_le32(h + 8, 1);
    w->err = drv_buf_append(&w->buf, h, sizeof(h));
}

void ts_segw_free(ts_seg_writer *w)
{
    drv_buf_free(&w->buf);
    drv_buf_free(&w->index);
}

/* Encode one block of p[0..n) (n ≤ TS_BLOCK_SAMPLES) at the end of w->buf. */
static drv_err write_block(ts_seg_writer *w, uint32_t id, uint8_t type, const ts_point *p,
                           uint32_t n)
{
    int64_t ts[TS_BLOCK_SAMPLES];
    union {
        double d[TS_BLOCK_SAMPLES];
        int64_t i[TS_BLOCK_SAMPLES];
        uint8_t b[TS_BLOCK_SAMPLES];
        drv_span s[TS_BLOCK_SAMPLES];
    } v;
    for (uint32_t k = 0; k < n; k++) {
        ts[k] = p[k].ts;
        switch (type) {
        case DRV_VALUE_DOUBLE:
            memcpy(&v.d[k], &p[k].v, 8);
            break;
        case DRV_VALUE_INT:
            v.i[k] = (int64_t)p[k].v;
            break;
        case DRV_VALUE_BOOL:
            v.b[k] = (uint8_t)(p[k].v != 0);
            break;
        default: {
            const ts_str *str = (const ts_str *)(uintptr_t)p[k].v;
            v.s[k] = (drv_span){str->data, str->len};
        }
        }
    }
    drv_buf *b = &w->buf;
    size_t start = b->len;
    uint8_t frame[8] = {0};
    uint8_t head[2] = {BLOCK_RAW, type};
    drv_err e = drv_buf_append(b, frame, 8);
    if (e == DRV_OK)
        e = drv_buf_append(b, head, 2);
    if (e == DRV_OK)
        e = tsc_put_uvarint(b, id);
    if (e == DRV_OK)
        e = tsc_put_uvarint(b, n);
    if (e == DRV_OK)
        e = tsc_encode_ts(b, ts, n);
    if (e == DRV_OK) {
        switch (type) {
        case DRV_VALUE_DOUBLE:
            e = tsc_encode_f64(b, v.d, n);
            break;
        case DRV_VALUE_INT:
            e = tsc_encode_i64(b, v.i, n);
            break;
        case DRV_VALUE_BOOL:
            e = tsc_encode_bool(b, v.b, n);
            break;
        default:
            e = tsc_encode_str(b, v.s, n);
        }
    }
    if (e != DRV_OK)
        return e;
    uint32_t plen = (uint32_t)(b->len - start - 8);
    put_le32(b->data + start, plen);
    put_le32(b->data + start + 4, drv_crc32c(b->data + start + 8, plen));
    /* The index entry of this block. */
    e = tsc_put_uvarint(&w->index, start);
    if (e == DRV_OK)
        e = tsc_put_svarint(&w->index, ts[0]);
    if (e == DRV_OK)
        e = tsc_put_uvarint(&w->index, (uint64_t)ts[n - 1] - (uint64_t)ts[0]);
    if (e == DRV_OK)
        e = tsc_put_uvarint(&w->index, n);
    return e;
}

static double point_number(uint8_t type, uint64_t v)
{
    double d;
    if (type == DRV_VALUE_DOUBLE)
        memcpy(&d, &v, 8);
    else if (type == DRV_VALUE_INT)
        d = (double)(int64_t)v;
    else
        d = v ? 1 : 0;
    return d;
}

/* Encode rollups r[0..n) of one width as one block, and index it. */
static drv_err write_rollup_block(ts_seg_writer *w, uint32_t id, int wi, const ts_rollup *r,
                                  uint32_t n)
{
    int64_t a[TS_BLOCK_SAMPLES];
    double d[TS_BLOCK_SAMPLES];
    drv_buf *b = &w->buf;
    size_t start = b->len;
    uint8_t frame[8] = {0};
    uint8_t head[2] = {BLOCK_ROLLUP, (uint8_t)wi};
    drv_err e = drv_buf_append(b, frame, 8);
    if (e == DRV_OK)
        e = drv_buf_append(b, head, 2);
    if (e == DRV_OK)
        e = tsc_put_uvarint(b, id);
    if (e == DRV_OK)
        e = tsc_put_uvarint(b, n);
#define COL_I64(expr)                    \
    do {                                 \
        for (uint32_t k = 0; k < n; k++) \
            a[k] = (expr);               \
        if (e == DRV_OK)                 \
            e = tsc_encode_i64(b, a, n); \
    } while (0)
#define COL_F64(field)                   \
    do {                                 \
        for (uint32_t k = 0; k < n; k++) \
            d[k] = r[k].field;           \
        if (e == DRV_OK)                 \
            e = tsc_encode_f64(b, d, n); \
    } while (0)
    for (uint32_t k = 0; k < n; k++)
        a[k] = r[k].start;
    if (e == DRV_OK)
        e = tsc_encode_ts(b, a, n);
    COL_I64((int64_t)r[k].count);
    COL_I64(r[k].first_ts - r[k].start);
    COL_I64(r[k].last_ts - r[k].start);
    COL_F64(sum);
    COL_F64(min);
    COL_F64(max);
    COL_F64(first);
    COL_F64(last);
#undef COL_I64
#undef COL_F64
    if (e != DRV_OK)
        return e;
    uint32_t plen = (uint32_t)(b->len - start - 8);
    put_le32(b->data + start, plen);
    put_le32(b->data + start + 4, drv_crc32c(b->data + start + 8, plen));
    e = tsc_put_uvarint(&w->index, start);
    if (e == DRV_OK)
        e = tsc_put_svarint(&w->index, r[0].start);
    if (e == DRV_OK)
        e = tsc_put_uvarint(&w->index, (uint64_t)r[n - 1].start - (uint64_t)r[0].start);
    if (e == DRV_OK)
        e = tsc_put_uvarint(&w->index, n);
    return e;
}

/* Decimal places of x: the smallest d ≤ 9 with x == round(x·10^d)/10^d
 * (NAN_DECIMALS when there is none: a binary fraction, NaN, infinity). */
#define NAN_DECIMALS 99
static const double pow10_tab[10] = {1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};

static int decimals_of(double x)
{
    for (int d = 0; d < 10; d++) {
        double r = x * pow10_tab[d];
        if (!(fabs(r) < 9007199254740992.0))
            return NAN_DECIMALS;
        if ((double)llround(r) / pow10_tab[d] == x)
            return d;
    }
    return NAN_DECIMALS;
}

/* A sum of values with at most d decimals has at most d decimals too: take
 * the floating-point error of the additions off, so sums stay exact decimals
 * (and compress like the values, ADR-0015). */
static double exact_sum(double sum, int d)
{
    if (d == NAN_DECIMALS)
        return sum;
    double r = sum * pow10_tab[d];
    return fabs(r) < 9007199254740992.0 ? (double)llround(r) / pow10_tab[d] : sum;
}

/* A rollup level is written only where it saves reading: at least this many
 * samples per bucket on average (10 s data gets hourly rollups, not
 * minutely ones: six samples a minute are as quick to read as a rollup). */
#define ROLLUP_MIN_DENSITY 10u

/* The rollups of width index wi over p[0..n) (sorted, one kind): their block
 * count in the index, then the blocks.  STRING series have none, nor a
 * series too sparse for the width. */
static drv_err write_rollups(ts_seg_writer *w, uint32_t id, uint8_t type, int wi, const ts_point *p,
                             uint32_t n)
{
    if (type == DRV_VALUE_STRING)
        return tsc_put_uvarint(&w->index, 0);
    int64_t width = ts_rollup_width[wi];
    /* Count the buckets first: the index wants the block count before the blocks. */
    uint32_t buckets = 0;
    int64_t cur = 0;
    for (uint32_t i = 0; i < n; i++) {
        int64_t q = p[i].ts / width - (p[i].ts % width < 0);
        if (i == 0 || q != cur)
            buckets++;
        cur = q;
    }
    if (n < (uint64_t)buckets * ROLLUP_MIN_DENSITY)
        return tsc_put_uvarint(&w->index, 0);
    uint32_t nblocks = (buckets + TS_BLOCK_SAMPLES - 1) / TS_BLOCK_SAMPLES;
    drv_err e = tsc_put_uvarint(&w->index, nblocks);
    ts_rollup *r = drv_malloc(TS_BLOCK_SAMPLES * sizeof(*r));
    if (!r)
        return DRV_NOMEM;
    uint32_t k = 0;
    int dec = 0; /* the most decimals of a value in the current bucket */
    for (uint32_t i = 0; i < n && e == DRV_OK; i++) {
        int64_t start = (p[i].ts / width - (p[i].ts % width < 0)) * width;
        double x = point_number(type, p[i].v);
        if (k == 0 || r[k - 1].start != start) {
            if (k)
                r[k - 1].sum = exact_sum(r[k - 1].sum, dec);
            if (k == TS_BLOCK_SAMPLES) {
                e = write_rollup_block(w, id, wi, r, k);
                k = 0;
            }
            r[k++] = (ts_rollup){
                .start = start, .sum = 0, .min = x, .max = x, .first = x, .first_ts = p[i].ts};
            dec = 0;
        }
        if (type == DRV_VALUE_DOUBLE && dec != NAN_DECIMALS) {
            int d = decimals_of(x);
            if (d > dec)
                dec = d;
        }
        ts_rollup *b = &r[k - 1];
        b->count++;
        b->sum += x;
        if (x < b->min)
            b->min = x;
        if (x > b->max)
            b->max = x;
        b->last = x;
        b->last_ts = p[i].ts;
    }
    if (k)
        r[k - 1].sum = exact_sum(r[k - 1].sum, dec);
    if (e == DRV_OK && k)
        e = write_rollup_block(w, id, wi, r, k);
    drv_free(r);
    return e;
}

drv_err ts_segw_add(ts_seg_writer *w, const ts_series *s, uint8_t type, const ts_point *p,
                    uint32_t n)
{
    if (w->err != DRV_OK || n == 0)
        return w->err;
    const char *device = s->keybuf + strlen(s->keybuf) + 1;
    uint32_t nblocks = (n + TS_BLOCK_SAMPLES - 1) / TS_BLOCK_SAMPLES;
    drv_err e = tsc_put_uvarint(&w->index, s->id);
    if (e == DRV_OK)
        e = drv_buf_append(&w->index, &type, 1);
    if (e == DRV_OK)
        e = put_str(&w->index, device, strlen(device));
    if (e == DRV_OK)
        e = put_str(&w->index, s->key, s->key_len);
    if (e == DRV_OK)
        e = tsc_put_uvarint(&w->index, nblocks);
    /* Even blocks: 1500 samples become 750 + 750, not 1024 + 476. */
    uint32_t per = (n + nblocks - 1) / nblocks;
    for (uint32_t off = 0; e == DRV_OK && off < n; off += per)
        e = write_block(w, s->id, type, p + off, n - off < per ? n - off : per);
    for (int r = 0; r < TS_ROLLUPS && e == DRV_OK; r++)
        e = write_rollups(w, s->id, type, r, p, n);
    w->nseries++;
    w->err = e;
    return e;
}

drv_err ts_segw_finish(ts_seg_writer *w, const char *tenant, const char *path)
{
    if (w->err != DRV_OK)
        return w->err;
    drv_buf idx;
    drv_buf_init(&idx, UINT32_MAX);
    drv_err e = put_str(&idx, tenant, strlen(tenant));
    if (e == DRV_OK)
        e = tsc_put_uvarint(&idx, w->nseries);
    if (e == DRV_OK)
        e = drv_buf_append(&idx, w->index.data, w->index.len);
    uint64_t index_off = w->buf.len;
    uint8_t frame[8];
    if (e == DRV_OK) {
        put_le32(frame, idx.len);
        put_le32(frame + 4, drv_crc32c(idx.data, idx.len));
        e = drv_buf_append(&w->buf, frame, 8);
    }
    if (e == DRV_OK)
        e = drv_buf_append(&w->buf, idx.data, idx.len);
    drv_buf_free(&idx);
    uint8_t trailer[TRAILER_LEN];
    put_le32(trailer, (uint32_t)index_off);
    put_le32(trailer + 4, (uint32_t)(index_off >> 32));
    memcpy(trailer + 8, END_MAGIC, 8);
    if (e == DRV_OK)
        e = drv_buf_append(&w->buf, trailer, sizeof(trailer));
    if (e != DRV_OK)
        return e;
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return DRV_TOOBIG;
    int fd;
    e = drv_file_create(tmp, &fd);
    if (e != DRV_OK)
        return e;
    e = drv_file_write_all(fd, w->buf.data, w->buf.len);
    if (e == DRV_OK)
        e = drv_file_sync(fd);
    drv_file_close(fd);
    if (e == DRV_OK)
        e = drv_file_replace(tmp, path); /* rename + fsync of the directory */
    if (e != DRV_OK)
        drv_file_remove(tmp);
    return e;
}

/* -- reading --------------------------------------------------------------------------- */

static void seg_free(ts_segment *seg)
{
    for (uint32_t i = 0; i < seg->nseries; i++) {
        drv_free(seg->series[i].blocks);
        for (int w = 0; w < TS_ROLLUPS; w++)
            drv_free(seg->series[i].roll[w]);
    }
    drv_free(seg->series);
    drv_file_map_close(&seg->map);
    drv_free(seg->path);
    drv_free(seg);
}

void ts_seg_unref(ts_segment *seg)
{
    if (seg && --seg->refs == 0)
        seg_free(seg);
}

static bool get_str(const uint8_t *p, size_t n, size_t *pos, const char **s, size_t *len)
{
    uint64_t l;
    if (!tsc_get_uvarint(p, n, pos, &l) || l > n - *pos)
        return false;
    *s = (const char *)p + *pos;
    *len = (size_t)l;
    *pos += (size_t)l;
    return true;
}

/* Parse and check the index; registers the series with the engine. */
static drv_err parse_index(ts_db *db, ts_segment *seg, const char *tenant, const uint8_t *p,
                           size_t n, uint64_t index_off)
{
    size_t pos = 0;
    const char *t;
    size_t tl;
    uint64_t count;
    if (!get_str(p, n, &pos, &t, &tl) || tl != strlen(tenant) || memcmp(t, tenant, tl) != 0 ||
        !tsc_get_uvarint(p, n, &pos, &count) || count > n)
        return DRV_CORRUPT;
    seg->series = drv_calloc(count ? count : 1, sizeof(*seg->series));
    if (!seg->series)
        return DRV_NOMEM;
    seg->min_ts = INT64_MAX;
    seg->max_ts = INT64_MIN;
    uint32_t prev_id = 0;
    for (uint64_t i = 0; i < count; i++) {
        ts_seg_series *ss = &seg->series[i];
        uint64_t id, nb;
        const char *dev, *key;
        size_t dl, kl;
        if (!tsc_get_uvarint(p, n, &pos, &id) || pos >= n || id > UINT32_MAX ||
            (i > 0 && id <= prev_id))
            return DRV_CORRUPT;
        ss->id = prev_id = (uint32_t)id;
        ss->type = p[pos++];
        if (!get_str(p, n, &pos, &dev, &dl) || !get_str(p, n, &pos, &key, &kl) ||
            !tsc_get_uvarint(p, n, &pos, &nb) || nb == 0 || nb > n || dl == 0 || dl > DRV_TS_MAX_ID)
            return DRV_CORRUPT;
        drv_err e = ts_series_load(db, ss->id, ss->type, tenant, tl, dev, dl, key, kl);
        if (e != DRV_OK)
            return e;
        ss->blocks = drv_malloc(nb * sizeof(*ss->blocks));
        if (!ss->blocks)
            return DRV_NOMEM;
        seg->nseries = (uint32_t)i + 1;
        ss->nblocks = (uint32_t)nb;
        for (uint64_t b = 0; b < nb; b++) {
            ts_block_ref *r = &ss->blocks[b];
            uint64_t off, span, cnt;
            if (!tsc_get_uvarint(p, n, &pos, &off) || !tsc_get_svarint(p, n, &pos, &r->min_ts) ||
                !tsc_get_uvarint(p, n, &pos, &span) || !tsc_get_uvarint(p, n, &pos, &cnt) ||
                off < HEADER_LEN || off + 8 > index_off || cnt == 0 || cnt > TS_BLOCK_SAMPLES)
                return DRV_CORRUPT;
            r->off = off;
            r->max_ts = (int64_t)((uint64_t)r->min_ts + span);
            if (r->max_ts < r->min_ts)
                return DRV_CORRUPT;
            r->count = (uint32_t)cnt;
            seg->samples += cnt;
            if (r->min_ts < seg->min_ts)
                seg->min_ts = r->min_ts;
            if (r->max_ts > seg->max_ts)
                seg->max_ts = r->max_ts;
        }
        for (int w = 0; w < TS_ROLLUPS; w++) {
            uint64_t nr;
            if (!tsc_get_uvarint(p, n, &pos, &nr) || nr > n)
                return DRV_CORRUPT;
            if (nr == 0)
                continue;
            ss->roll[w] = drv_malloc(nr * sizeof(*ss->roll[w]));
            if (!ss->roll[w])
                return DRV_NOMEM;
            ss->nroll[w] = (uint32_t)nr;
            for (uint64_t b = 0; b < nr; b++) {
                ts_block_ref *r = &ss->roll[w][b];
                uint64_t off, span, cnt;
                if (!tsc_get_uvarint(p, n, &pos, &off) ||
                    !tsc_get_svarint(p, n, &pos, &r->min_ts) ||
                    !tsc_get_uvarint(p, n, &pos, &span) || !tsc_get_uvarint(p, n, &pos, &cnt) ||
                    off < HEADER_LEN || off + 8 > index_off || cnt == 0 || cnt > TS_BLOCK_SAMPLES)
                    return DRV_CORRUPT;
                r->off = off;
                r->max_ts = (int64_t)((uint64_t)r->min_ts + span);
                r->count = (uint32_t)cnt;
                if (r->max_ts < r->min_ts)
                    return DRV_CORRUPT;
            }
        }
    }
    return pos == n ? DRV_OK : DRV_CORRUPT;
}

drv_err ts_seg_open(ts_db *db, const char *path, const char *tenant, uint64_t seq, ts_segment **out)
{
    ts_segment *seg = drv_calloc(1, sizeof(*seg));
    if (!seg)
        return DRV_NOMEM;
    seg->refs = 1;
    seg->seq = seq;
    seg->path = drv_strdup(path);
    drv_err e = seg->path ? drv_file_map_open(path, &seg->map) : DRV_NOMEM;
    if (e != DRV_OK)
        goto fail;
    const uint8_t *m = seg->map.data;
    size_t len = seg->map.len;
    e = DRV_CORRUPT;
    if (len < HEADER_LEN + 8 + TRAILER_LEN || memcmp(m, MAGIC, 8) != 0 ||
        memcmp(m + len - 8, END_MAGIC, 8) != 0)
        goto fail;
    uint64_t index_off = get_le64(m + len - TRAILER_LEN);
    if (index_off < HEADER_LEN || index_off > len - TRAILER_LEN - 8)
        goto fail;
    uint32_t ilen = get_le32(m + index_off), icrc = get_le32(m + index_off + 4);
    if (ilen != len - TRAILER_LEN - 8 - index_off || drv_crc32c(m + index_off + 8, ilen) != icrc)
        goto fail;
    e = parse_index(db, seg, tenant, m + index_off + 8, ilen, index_off);
    if (e != DRV_OK)
        goto fail;
    *out = seg;
    return DRV_OK;
fail:
    seg_free(seg);
    return e;
}

const ts_seg_series *ts_seg_find(const ts_segment *seg, uint32_t id)
{
    uint32_t lo = 0, hi = seg->nseries;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (seg->series[mid].id == id)
            return &seg->series[mid];
        if (seg->series[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

drv_err ts_block_decode(const ts_segment *seg, const ts_block_ref *ref, int64_t *ts, uint64_t *v,
                        drv_span *strs, uint8_t *type, uint32_t *n)
{
    const uint8_t *m = seg->map.data;
    size_t avail = seg->map.len - ref->off;
    if (avail < 8)
        return DRV_CORRUPT;
    uint32_t plen = get_le32(m + ref->off), crc = get_le32(m + ref->off + 4);
    if (plen > avail - 8 || drv_crc32c(m + ref->off + 8, plen) != crc)
        return DRV_CORRUPT;
    const uint8_t *p = m + ref->off + 8;
    size_t pos = 2;
    uint64_t id, cnt;
    if (plen < 2 || p[0] != BLOCK_RAW || !tsc_get_uvarint(p, plen, &pos, &id) ||
        !tsc_get_uvarint(p, plen, &pos, &cnt) || cnt != ref->count)
        return DRV_CORRUPT;
    uint8_t t = p[1];
    uint32_t k = (uint32_t)cnt;
    size_t used;
    if (tsc_decode_ts(p + pos, plen - pos, k, ts, &used) != DRV_OK)
        return DRV_CORRUPT;
    pos += used;
    drv_err e;
    switch (t) {
    case DRV_VALUE_DOUBLE: {
        double d[TS_BLOCK_SAMPLES];
        e = tsc_decode_f64(p + pos, plen - pos, k, d, &used);
        memcpy(v, d, k * sizeof(*d));
        break;
    }
    case DRV_VALUE_INT:
        e = tsc_decode_i64(p + pos, plen - pos, k, (int64_t *)(void *)v, &used);
        break;
    case DRV_VALUE_BOOL: {
        uint8_t b[TS_BLOCK_SAMPLES];
        e = tsc_decode_bool(p + pos, plen - pos, k, b, &used);
        for (uint32_t i = 0; e == DRV_OK && i < k; i++)
            v[i] = b[i];
        break;
    }
    case DRV_VALUE_STRING:
        e = tsc_decode_str(p + pos, plen - pos, k, strs, &used);
        for (uint32_t i = 0; e == DRV_OK && i < k; i++)
            v[i] = i;
        break;
    default:
        e = DRV_CORRUPT;
    }
    if (e != DRV_OK)
        return DRV_CORRUPT;
    /* The times must be what the index says: sorted, within [min, max]. */
    if (ts[0] != ref->min_ts || ts[k - 1] != ref->max_ts)
        return DRV_CORRUPT;
    for (uint32_t i = 1; i < k; i++)
        if (ts[i] <= ts[i - 1])
            return DRV_CORRUPT;
    *type = t;
    *n = k;
    return DRV_OK;
}

drv_err ts_rollup_decode(const ts_segment *seg, const ts_block_ref *ref, int width_index,
                         ts_rollup *out, uint32_t *n)
{
    const uint8_t *m = seg->map.data;
    size_t avail = seg->map.len - ref->off;
    if (avail < 8)
        return DRV_CORRUPT;
    uint32_t plen = get_le32(m + ref->off), crc = get_le32(m + ref->off + 4);
    if (plen > avail - 8 || drv_crc32c(m + ref->off + 8, plen) != crc)
        return DRV_CORRUPT;
    const uint8_t *p = m + ref->off + 8;
    size_t pos = 2, used;
    uint64_t id, cnt;
    if (plen < 2 || p[0] != BLOCK_ROLLUP || p[1] != width_index ||
        !tsc_get_uvarint(p, plen, &pos, &id) || !tsc_get_uvarint(p, plen, &pos, &cnt) ||
        cnt != ref->count)
        return DRV_CORRUPT;
    uint32_t k = (uint32_t)cnt;
    int64_t a[TS_BLOCK_SAMPLES];
    double d[TS_BLOCK_SAMPLES];
    if (tsc_decode_ts(p + pos, plen - pos, k, a, &used) != DRV_OK)
        return DRV_CORRUPT;
    pos += used;
    for (uint32_t i = 0; i < k; i++)
        out[i].start = a[i];
    for (int c = 0; c < 3; c++) {
        if (tsc_decode_i64(p + pos, plen - pos, k, a, &used) != DRV_OK)
            return DRV_CORRUPT;
        pos += used;
        for (uint32_t i = 0; i < k; i++) {
            if (c == 0)
                out[i].count = (uint64_t)a[i];
            else if (c == 1)
                out[i].first_ts = out[i].start + a[i];
            else
                out[i].last_ts = out[i].start + a[i];
        }
    }
    for (int c = 0; c < 5; c++) {
        if (tsc_decode_f64(p + pos, plen - pos, k, d, &used) != DRV_OK)
            return DRV_CORRUPT;
        pos += used;
        for (uint32_t i = 0; i < k; i++) {
            double *f = c == 0   ? &out[i].sum
                        : c == 1 ? &out[i].min
                        : c == 2 ? &out[i].max
                        : c == 3 ? &out[i].first
                                 : &out[i].last;
            *f = d[i];
        }
    }
    if (out[0].start != ref->min_ts || out[k - 1].start != ref->max_ts)
        return DRV_CORRUPT;
    for (uint32_t i = 0; i < k; i++)
        if (out[i].count == 0 || (i && out[i].start <= out[i - 1].start))
            return DRV_CORRUPT;
    *n = k;
    return DRV_OK;
}
