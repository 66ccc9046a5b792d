/*
 * wal.c — the engine's write-ahead log (ADR-0014).
 *
 * Segments wal/<seq>.wal hold records, each
 *     u32 len | u32 crc32c(type ‖ payload) | u8 type | payload     (little endian)
 * with len = 1 + payload length.  Types:
 *     SERIES  uvarint id, u8 value type, then tenant, device, key (uvarint
 *             length + bytes each): a series is born;
 *     SAMPLES repeated until the record ends: uvarint series id, u8 value
 *             type, svarint time delta (from the previous sample of the
 *             record; the first from 0), value (DOUBLE: 8 bytes; INT:
 *             svarint; BOOL: 1 byte; STRING: uvarint length + bytes);
 *     DROP    tenant, device, uvarint n: every series of the device with an
 *             id below n was purged.
 *
 * Appends frame records into db->pending (memory, under db->mu).  A commit
 * swaps pending out and writes it with one write(2), then fdatasync(2) in
 * `sync` durability; commit_mu orders commits, so a committer that finds
 * pending empty knows an earlier committer already made its records durable
 * (group commit).  A failed write is cut back off the file, so no garbage
 * sits between good records; if even that fails the log stops taking
 * appends until the process restarts.
 *
 * Replay (at open) reads every segment in order; a record whose length or
 * checksum is wrong ends that segment: the rest is cut off and reported
 * (the torn tail of a write that kill -9 interrupted).  A flush (flush.c)
 * rotates to a new segment, writes the frozen heads into blocks, then
 * removes the segments before the rotation.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/crc32c.h"
#include "core/log.h"
#include "platform/clock.h"
#include "tsdb/codec.h"
#include "tsdb/tsdb_int.h"

#define REC_HEADER 9u /* len, crc, type */
#define MAX_RECORD (256u << 20)

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Frame type ‖ payload[0..n) into db->pending. */
static drv_err frame(ts_db *db, uint8_t type, const uint8_t *payload, size_t n)
{
    if (n + 1 > MAX_RECORD)
        return DRV_TOOBIG;
    drv_err e;
    uint8_t *p = drv_buf_reserve(&db->pending, REC_HEADER + n, &e);
    if (!p)
        return e;
    put_le32(p, (uint32_t)(n + 1));
    p[8] = type;
    memcpy(p + 9, payload, n);
    put_le32(p + 4, drv_crc32c(p + 8, n + 1));
    db->pending.len += (uint32_t)(REC_HEADER + n);
    return DRV_OK;
}

static drv_err put_str(drv_buf *b, const char *s, size_t n)
{
    drv_err e = tsc_put_uvarint(b, n);
    return e == DRV_OK ? drv_buf_append(b, s, n) : e;
}

drv_err ts_wal_log_series(ts_db *db, const ts_series *s)
{
    uint8_t tmp[3 * DRV_TS_MAX_ID + 64];
    drv_buf b = {.data = tmp, .size = sizeof(tmp), .cap = sizeof(tmp)};
    const char *tenant = s->keybuf;
    size_t tlen = strlen(tenant);
    const char *device = tenant + tlen + 1;
    size_t dlen = strlen(device);
    drv_err e = tsc_put_uvarint(&b, s->id);
    if (e == DRV_OK)
        e = drv_buf_append(&b, &s->type, 1);
    if (e == DRV_OK)
        e = put_str(&b, tenant, tlen);
    if (e == DRV_OK)
        e = put_str(&b, device, dlen);
    if (e == DRV_OK)
        e = put_str(&b, s->key, s->key_len);
    /* b never grows past tmp (its cap), so nothing to free. */
    return e == DRV_OK ? frame(db, TS_REC_SERIES, b.data, b.len) : e;
}

drv_err ts_wal_log_drop(ts_db *db, const char *tenant, const char *device)
{
    uint8_t tmp[2 * DRV_TS_MAX_ID + 32];
    drv_buf b = {.data = tmp, .size = sizeof(tmp), .cap = sizeof(tmp)};
    drv_err e = put_str(&b, tenant, strlen(tenant));
    if (e == DRV_OK)
        e = put_str(&b, device, strlen(device));
    /* Only the series that exist now: ids from here on are the device's new ones. */
    if (e == DRV_OK)
        e = tsc_put_uvarint(&b, db->next_series_id);
    return e == DRV_OK ? frame(db, TS_REC_DROP, b.data, b.len) : e;
}

void ts_wal_samples_begin(ts_wal_rec *rec)
{
    rec->buf.off = rec->buf.len = 0;
    rec->prev_ts = 0;
}

drv_err ts_wal_samples_add(ts_wal_rec *rec, uint32_t series_id, int64_t ts, const drv_value *v)
{
    drv_buf *b = &rec->buf;
    uint8_t type = (uint8_t)v->type;
    drv_err e = tsc_put_uvarint(b, series_id);
    if (e == DRV_OK)
        e = drv_buf_append(b, &type, 1);
    if (e == DRV_OK)
        e = tsc_put_svarint(b, (int64_t)((uint64_t)ts - (uint64_t)rec->prev_ts));
    if (e != DRV_OK)
        return e;
    rec->prev_ts = ts;
    switch (v->type) {
    case DRV_VALUE_DOUBLE: {
        uint8_t d[8];
        uint64_t u;
        memcpy(&u, &v->d, 8);
        for (int i = 0; i < 8; i++)
            d[i] = (uint8_t)(u >> (8 * i));
        return drv_buf_append(b, d, 8);
    }
    case DRV_VALUE_INT:
        return tsc_put_svarint(b, v->i);
    case DRV_VALUE_BOOL: {
        uint8_t x = v->b ? 1 : 0;
        return drv_buf_append(b, &x, 1);
    }
    case DRV_VALUE_STRING:
        return put_str(b, v->s.p, v->s.n);
    }
    return DRV_INVAL;
}

drv_err ts_wal_samples_end(ts_db *db, ts_wal_rec *rec)
{
    return frame(db, TS_REC_SAMPLES, rec->buf.data, rec->buf.len);
}

/* -- commit ------------------------------------------------------------------------- */

/* The log cannot be trusted to hold what was written: refuse appends and
 * commits until restart (fail-stop; a later commit must never report
 * records durable that a failed write or sync dropped).  mu_held: the
 * caller holds db->mu. */
static void log_failed(ts_db *db, drv_err e, bool mu_held)
{
    drv_error("tsdb: the telemetry log cannot be written; refusing telemetry until restart",
              "error", drv_strerror(e));
    if (!mu_held)
        pthread_mutex_lock(&db->mu);
    db->wal_failed = true;
    if (!mu_held)
        pthread_mutex_unlock(&db->mu);
}

/* Write db->writing to the current segment; commit_mu held. */
static drv_err write_batch(ts_db *db, bool mu_held)
{
    if (db->wal_failed) {
        db->writing.off = db->writing.len = 0; /* never acknowledged, never written */
        return DRV_IO;
    }
    if (db->writing.len == 0)
        return DRV_OK;
    drv_err e = drv_file_write_all(db->wal_fd, db->writing.data, db->writing.len);
    if (e == DRV_OK) {
        db->wal_size += db->writing.len;
        db->stats.wal_bytes += db->writing.len;
        db->wal_dirty = true;
    } else {
        drv_file_truncate(db->wal_fd, db->wal_size); /* best effort: replay cuts a torn tail */
        log_failed(db, e, mu_held);
    }
    db->writing.off = db->writing.len = 0;
    if (db->writing.size > (16u << 20))
        drv_buf_free(&db->writing);
    return e;
}

static drv_err sync_log(ts_db *db, bool mu_held)
{
    if (db->wal_failed)
        return DRV_IO;
    if (!db->wal_dirty)
        return DRV_OK;
    drv_err e = drv_file_sync(db->wal_fd);
    if (e == DRV_OK) {
        db->wal_dirty = false;
        db->stats.syncs++;
    } else {
        /* After a failed fdatasync the kernel may have dropped the pages: a retry
         * that succeeds proves nothing. */
        log_failed(db, e, mu_held);
    }
    return e;
}

/* Swap db->pending into db->writing; commit_mu held, takes db->mu. */
static void take_pending(ts_db *db)
{
    pthread_mutex_lock(&db->mu);
    drv_buf t = db->writing;
    db->writing = db->pending;
    db->pending = t;
    db->stats.commits++;
    pthread_mutex_unlock(&db->mu);
}

drv_err ts_wal_commit(ts_db *db, bool sync)
{
    pthread_mutex_lock(&db->commit_mu);
    take_pending(db);
    drv_err e = db->wal_fd >= 0 ? write_batch(db, false) : DRV_IO;
    /* batch durability: the engine's thread syncs on its timer, but it may be
     * busy (a long compaction); a committer that finds the last sync older
     * than the interval does it, so the loss window holds under traffic. */
    uint64_t now = drv_mono_ms();
    if (!sync && now - db->last_sync_ms >= db->cfg.sync_interval_ms)
        sync = true;
    if (e == DRV_OK && sync)
        e = sync_log(db, false);
    if (e == DRV_OK && sync)
        db->last_sync_ms = now;
    pthread_mutex_unlock(&db->commit_mu);
    return e;
}

/* -- segments -------------------------------------------------------------------------- */

static char *seg_path(const ts_db *db, uint64_t seq)
{
    size_t cap = strlen(db->dir) + 32;
    char *p = drv_malloc(cap);
    if (p)
        snprintf(p, cap, "%s/wal/%016" PRIx64 ".wal", db->dir, seq);
    return p;
}

static drv_err open_segment(ts_db *db, uint64_t seq)
{
    char *path = seg_path(db, seq);
    if (!path)
        return DRV_NOMEM;
    int fd;
    drv_err e = drv_file_create(path, &fd);
    drv_free(path);
    if (e != DRV_OK)
        return e;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/wal", db->dir);
    e = drv_dir_sync(dir); /* the new name survives a crash */
    if (e != DRV_OK) {
        drv_file_close(fd);
        return e;
    }
    db->wal_fd = fd;
    db->wal_seq = seq;
    db->wal_size = 0;
    db->wal_dirty = false;
    return DRV_OK;
}

drv_err ts_wal_rotate_prepare(ts_db *db, int *new_fd)
{
    /* commit_mu held, db->mu not: creating the file and syncing its directory
     * block nobody's appends. */
    char *path = seg_path(db, db->wal_seq + 1);
    if (!path)
        return DRV_NOMEM;
    drv_err e = drv_file_create(path, new_fd);
    drv_free(path);
    if (e != DRV_OK)
        return e;
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/wal", db->dir);
    e = drv_dir_sync(dir);
    if (e != DRV_OK)
        drv_file_close(*new_fd);
    return e;
}

void ts_wal_rotate(ts_db *db, int new_fd, uint64_t *prev_seq, int *old_fd)
{
    /* commit_mu and db->mu held: what is pending belongs to the old segment
     * (written by ts_wal_rotate_finish); appends from now on to the new one. */
    drv_buf t = db->writing;
    db->writing = db->pending;
    db->pending = t;
    *prev_seq = db->wal_seq;
    *old_fd = db->wal_fd;
    db->wal_fd = new_fd;
    db->wal_seq++;
    db->wal_size = 0;
    db->wal_dirty = false;
}

drv_err ts_wal_rotate_finish(ts_db *db, int old_fd)
{
    /* commit_mu held, db->mu not: appends go on during this write and sync;
     * committers wait for commit_mu, so none reports these records durable
     * before they are. */
    drv_err e = DRV_OK;
    if (db->wal_failed)
        e = DRV_IO;
    if (e == DRV_OK && db->writing.len)
        e = drv_file_write_all(old_fd, db->writing.data, db->writing.len);
    if (e == DRV_OK)
        db->stats.wal_bytes += db->writing.len;
    if (e == DRV_OK)
        e = drv_file_sync(old_fd);
    db->writing.off = db->writing.len = 0;
    if (e != DRV_OK && !db->wal_failed)
        log_failed(db, e, false);
    drv_file_close(old_fd);
    return e;
}

typedef struct seg_list {
    uint64_t *seqs;
    uint32_t n, cap;
    bool oom;
} seg_list;

static bool collect_seg(void *ud, const char *name, bool is_dir)
{
    seg_list *l = ud;
    char *end;
    if (is_dir || strlen(name) != 20 || strcmp(name + 16, ".wal") != 0)
        return true;
    uint64_t seq = strtoull(name, &end, 16);
    if (end != name + 16)
        return true;
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 16;
        uint64_t *a = drv_realloc(l->seqs, cap * sizeof(*a));
        if (!a) {
            l->oom = true;
            return false;
        }
        l->seqs = a;
        l->cap = cap;
    }
    l->seqs[l->n++] = seq;
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static drv_err list_segments(const ts_db *db, seg_list *l)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/wal", db->dir);
    memset(l, 0, sizeof(*l));
    drv_err e = drv_dir_each(dir, collect_seg, l);
    if (e == DRV_NOTFOUND)
        e = DRV_OK;
    if (l->oom)
        e = DRV_NOMEM;
    if (l->n > 1)
        qsort(l->seqs, l->n, sizeof(*l->seqs), cmp_u64);
    return e;
}

void ts_wal_remove_upto(ts_db *db, uint64_t seq)
{
    seg_list l;
    if (list_segments(db, &l) != DRV_OK) {
        drv_free(l.seqs);
        return;
    }
    for (uint32_t i = 0; i < l.n && l.seqs[i] <= seq; i++) {
        char *path = seg_path(db, l.seqs[i]);
        if (path)
            drv_file_remove(path);
        drv_free(path);
    }
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/wal", db->dir);
    drv_dir_sync(dir);
    drv_free(l.seqs);
}

/* -- replay ------------------------------------------------------------------------------ */

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

static drv_err replay_series(ts_db *db, const uint8_t *p, size_t n)
{
    size_t pos = 0;
    uint64_t id;
    const char *t, *d, *k;
    size_t tl, dl, kl;
    if (!tsc_get_uvarint(p, n, &pos, &id) || pos >= n)
        return DRV_CORRUPT;
    uint8_t type = p[pos++];
    if (!get_str(p, n, &pos, &t, &tl) || !get_str(p, n, &pos, &d, &dl) ||
        !get_str(p, n, &pos, &k, &kl) || pos != n || id > UINT32_MAX || tl == 0 || dl == 0 ||
        tl > DRV_TS_MAX_ID || dl > DRV_TS_MAX_ID)
        return DRV_CORRUPT;
    return ts_series_load(db, (uint32_t)id, type, t, tl, d, dl, k, kl);
}

static drv_err replay_samples(ts_db *db, const uint8_t *p, size_t n, uint64_t *count,
                              uint64_t *unknown)
{
    size_t pos = 0;
    int64_t prev = 0;
    while (pos < n) {
        uint64_t id;
        int64_t delta;
        if (!tsc_get_uvarint(p, n, &pos, &id) || pos >= n)
            return DRV_CORRUPT;
        uint8_t type = p[pos++];
        if (!tsc_get_svarint(p, n, &pos, &delta))
            return DRV_CORRUPT;
        int64_t ts = (int64_t)((uint64_t)prev + (uint64_t)delta);
        prev = ts;
        drv_value v = {.type = (drv_value_type)type};
        switch (type) {
        case DRV_VALUE_DOUBLE: {
            if (n - pos < 8)
                return DRV_CORRUPT;
            uint64_t u = 0;
            for (int i = 0; i < 8; i++)
                u |= (uint64_t)p[pos + i] << (8 * i);
            memcpy(&v.d, &u, 8);
            pos += 8;
            break;
        }
        case DRV_VALUE_INT:
            if (!tsc_get_svarint(p, n, &pos, &v.i))
                return DRV_CORRUPT;
            break;
        case DRV_VALUE_BOOL:
            if (pos >= n || p[pos] > 1)
                return DRV_CORRUPT;
            v.b = p[pos++] == 1;
            break;
        case DRV_VALUE_STRING:
            if (!get_str(p, n, &pos, &v.s.p, &v.s.n))
                return DRV_CORRUPT;
            break;
        default:
            return DRV_CORRUPT;
        }
        ts_series *s = id < db->series_cap ? db->series_by_id[id] : NULL;
        if (!s || s->dropped) {
            /* Never declared (a SERIES record the log no longer has: flush
             * re-declares series after every rotation, so only damage does
             * this) or purged: skip the sample, keep the rest of the log. */
            if (!s)
                (*unknown)++;
            continue;
        }
        drv_err e = ts_head_add(db, s, ts, &v);
        if (e == DRV_NOMEM)
            return e;
        /* A kind conflict was refused when it was appended too: never logged. */
        (*count)++;
    }
    return DRV_OK;
}

static drv_err replay_drop(ts_db *db, const uint8_t *p, size_t n)
{
    size_t pos = 0;
    const char *t, *d;
    size_t tl, dl;
    uint64_t below;
    if (!get_str(p, n, &pos, &t, &tl) || !get_str(p, n, &pos, &d, &dl) ||
        !tsc_get_uvarint(p, n, &pos, &below) || pos != n)
        return DRV_CORRUPT;
    char tenant[DRV_TS_MAX_ID + 1], device[DRV_TS_MAX_ID + 1];
    if (tl > DRV_TS_MAX_ID || dl > DRV_TS_MAX_ID)
        return DRV_CORRUPT;
    memcpy(tenant, t, tl);
    tenant[tl] = '\0';
    memcpy(device, d, dl);
    device[dl] = '\0';
    for (uint32_t i = 0; i < db->series_cap && i < below; i++) {
        ts_series *s = db->series_by_id[i];
        if (s && !s->dropped && strcmp(s->keybuf, tenant) == 0 &&
            strcmp(s->keybuf + tl + 1, device) == 0) {
            s->dropped = true;
            db->purge_scan = true;
            db->nseries--;
            db->head_samples -= s->head.n;
            if (s->dev)
                s->dev->tenant->head_samples -= s->head.n;
            ts_head_free(&s->head);
        }
    }
    return DRV_OK;
}

/* Replay one segment; a bad record cuts the file there. */
static drv_err replay_segment(ts_db *db, uint64_t seq, drv_tsdb_recovery *rep)
{
    char *path = seg_path(db, seq);
    if (!path)
        return DRV_NOMEM;
    drv_buf data;
    drv_buf_init(&data, UINT32_MAX);
    drv_err e = drv_file_read_all(path, &data);
    if (e != DRV_OK)
        goto out;
    size_t pos = 0;
    uint64_t unknown = 0;
    while (pos < data.len) {
        const uint8_t *r = data.data + pos;
        if (data.len - pos < REC_HEADER)
            break;
        uint32_t len = get_le32(r), crc = get_le32(r + 4);
        if (len == 0 || len > MAX_RECORD || len > data.len - pos - 8 ||
            drv_crc32c(r + 8, len) != crc)
            break;
        const uint8_t *payload = r + 9;
        size_t plen = len - 1;
        drv_err re = DRV_OK;
        if (r[8] == TS_REC_SERIES)
            re = replay_series(db, payload, plen);
        else if (r[8] == TS_REC_SAMPLES)
            re = replay_samples(db, payload, plen, &rep->wal_samples, &unknown);
        else if (r[8] == TS_REC_DROP)
            re = replay_drop(db, payload, plen);
        else
            re = DRV_CORRUPT;
        if (re == DRV_NOMEM) {
            e = re;
            goto out;
        }
        if (re != DRV_OK)
            break; /* checksummed yet not understood: treat as the end */
        rep->wal_records++;
        pos += 8 + len;
    }
    if (pos < data.len) {
        char at[24], cut[24];
        snprintf(at, sizeof(at), "%zu", pos);
        snprintf(cut, sizeof(cut), "%zu", (size_t)(data.len - pos));
        drv_warn("tsdb: cutting a torn or corrupt log tail", "segment", path, "at_byte", at,
                 "bytes_cut", cut);
        rep->wal_bytes_cut += data.len - pos;
        int fd;
        e = drv_file_open_append(path, &fd);
        if (e == DRV_OK) {
            e = drv_file_truncate(fd, pos);
            if (e == DRV_OK)
                e = drv_file_sync(fd);
            drv_file_close(fd);
        }
    }
out:
    drv_buf_free(&data);
    drv_free(path);
    return e;
}

drv_err ts_wal_open(ts_db *db, drv_tsdb_recovery *rep)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/wal", db->dir);
    drv_err e = drv_mkdir_p(dir);
    if (e != DRV_OK)
        return e;
    seg_list l;
    e = list_segments(db, &l);
    uint64_t last = 0;
    for (uint32_t i = 0; e == DRV_OK && i < l.n; i++) {
        e = replay_segment(db, l.seqs[i], rep);
        last = l.seqs[i];
    }
    drv_free(l.seqs);
    if (e != DRV_OK)
        return e;
    /* Appends go to a fresh segment; the replayed ones go at the next flush. */
    return open_segment(db, last + 1);
}

void ts_wal_close(ts_db *db)
{
    if (db->wal_fd >= 0)
        drv_file_close(db->wal_fd);
    db->wal_fd = -1;
}
