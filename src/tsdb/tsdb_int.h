/*
 * tsdb_int.h — the embedded engine's private structures, shared by its files:
 *   tsdb.c   open/close, the series index, append/commit, the ops table
 *   wal.c    the write-ahead log: record framing, segments, replay
 *   block.c  block files: writing a partition segment, opening and reading one
 *   query.c  scan and aggregate: merging blocks and head
 *   flush.c  the background thread: head → blocks, log cut, compaction, retention
 *
 * Locking: db->mu guards the index (tenants, devices, series), every head,
 * the partitions' segment lists and the log's pending buffer.  db->commit_mu
 * orders log writes (group commit) and is taken before db->mu, never after.
 * Segments are immutable and reference-counted: a query takes references
 * under db->mu and decodes outside it.
 *
 * On disk (cfg->dir):
 *   wal/<seq 16 hex>.wal          log segments (ADR-0014)
 *   t/<tenant>/<start ms>/<seq 16 hex>.blk   block files of a tenant's partition
 *                                            (ADR-0013)
 */
#ifndef DRV_TSDB_INT_H
#define DRV_TSDB_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/hmap.h"
#include "platform/fs.h"
#include "tsdb/tsdb.h"

/* Samples per block at most: small enough that a short range decodes little. */
#define TS_BLOCK_SAMPLES 1024u

/* A sample in a head: the value's bits as the series' kind stores them
 * (DOUBLE: IEEE bits; INT: the integer; BOOL: 0/1; STRING: a ts_str *). */
typedef struct ts_point {
    int64_t ts;
    uint64_t v;
} ts_point;

/* A string value held by a head (one allocation per string sample). */
typedef struct ts_str {
    uint32_t len;
    char data[];
} ts_str;

/* The samples of a series not yet in blocks. */
typedef struct ts_head {
    ts_point *p;
    uint32_t n, cap;
    uint8_t type;      /* DRV_VALUE_* of every point here */
    bool sorted;       /* points are in non-decreasing ts order */
    uint64_t first_ms; /* monotonic ms when the first point arrived (age-based flush) */
} ts_head;

struct ts_device;

typedef struct ts_series {
    drv_hnode node;        /* in db->series_map, key "tenant\0device\0key" (keybuf) */
    uint32_t id;           /* stable id, in the log and the block files */
    uint8_t type;          /* current kind (DRV_VALUE_*) */
    bool dropped;          /* its device was purged: invisible, freed at the next flush */
    bool logged;           /* its SERIES record is in the log (or it came from disk) */
    struct ts_device *dev; /* owner */
    ts_head head;          /* live samples */
    ts_head frozen;        /* samples being written to blocks by a flush (read-only) */
    int64_t last_ts;       /* newest sample's time (INT64_MIN: none) */
    uint64_t last_v;       /* its value, as in a head (STRING: owned ts_str *) */
    uint8_t last_type;     /* kind of last_v */
    const char *key;       /* into keybuf */
    uint32_t key_len;
    uint32_t keybuf_len; /* bytes of keybuf used */
    char keybuf[];       /* tenant \0 device \0 key \0 */
} ts_series;

typedef struct ts_tenant ts_tenant;

typedef struct ts_device {
    drv_hnode node; /* in db->device_map, key "tenant\0device" */
    ts_tenant *tenant;
    uint32_t retention_days; /* its own (its profile's), 0: none; set by the sweep */
    bool retention_known;    /* the sweep asked (new devices are asked within a second) */
    ts_series **keys;        /* its series, sorted by key */
    uint32_t nkeys, cap;
    const char *id; /* into buf */
    char buf[];     /* tenant \0 device \0 */
} ts_device;

/* One block's entry in a segment's index. */
typedef struct ts_block_ref {
    uint64_t off; /* offset of the block's frame in the file */
    int64_t min_ts, max_ts;
    uint32_t count;
} ts_block_ref;

/* Rollup widths: 1 minute and 1 hour (ADR-0013). */
#define TS_ROLLUPS 2
extern const int64_t ts_rollup_width[TS_ROLLUPS];

/* A series' entry in a segment's index. */
typedef struct ts_seg_series {
    uint32_t id;
    uint8_t type;
    uint32_t nblocks;
    ts_block_ref *blocks; /* ascending by time */
    /* Rollup blocks per width (count = buckets; min/max_ts = first/last bucket
     * start); none for STRING series. */
    uint32_t nroll[TS_ROLLUPS];
    ts_block_ref *roll[TS_ROLLUPS];
} ts_seg_series;

/* One rollup bucket: the figures of a series' samples in [start, start + width). */
typedef struct ts_rollup {
    int64_t start;
    uint64_t count;
    double sum, min, max;
    double first, last; /* values (BOOL as 0/1) */
    int64_t first_ts, last_ts;
} ts_rollup;

/* An immutable block file of one tenant's partition. */
typedef struct ts_segment {
    uint32_t refs; /* db->mu; the partition holds one */
    uint64_t seq;  /* write order: newer segments win on equal timestamps */
    char *path;
    drv_file_map map;
    int64_t min_ts, max_ts; /* over all its samples */
    uint64_t samples;
    uint32_t nseries;
    ts_seg_series *series;   /* sorted by id */
    struct ts_segment *next; /* in its partition, ascending seq */
} ts_segment;

typedef struct ts_partition {
    int64_t start, end; /* [start, end) in ms */
    ts_segment *segs;   /* ascending seq */
    uint32_t nsegs;
    struct ts_partition *next; /* in its tenant, ascending start */
} ts_partition;

struct ts_tenant {
    drv_hnode node; /* in db->tenant_map */
    char *id;
    char *dir;               /* <dir>/t/<safe id> */
    uint32_t retention_days; /* 0: forever */
    uint64_t max_bytes;      /* storage quota (0: none) */
    uint64_t bytes;          /* bytes of its block files */
    uint64_t head_samples;   /* its samples in live heads */
    ts_partition *parts;
    struct ts_device **devs; /* its devices, in creation order */
    uint32_t ndevs, devs_cap;
};

/* A SAMPLES record being built by an append (outside db->pending, so a
 * failed append leaves nothing half-logged). */
typedef struct ts_wal_rec {
    drv_buf buf;     /* the payload so far */
    int64_t prev_ts; /* times are stored as deltas from the previous sample's */
} ts_wal_rec;
typedef struct ts_db {
    drv_tsdb_config cfg;
    char *dir;
    pthread_mutex_t mu;
    pthread_mutex_t commit_mu;
    pthread_mutex_t flush_mu; /* one flush, compaction or sweep at a time (before commit_mu) */
    pthread_cond_t cond;      /* wakes the background thread */
    pthread_t thread;
    bool thread_started, stopping;

    drv_hmap tenant_map, device_map, series_map;
    ts_series **series_by_id; /* index = id; NULL for ids not in use */
    uint32_t series_cap, next_series_id, nseries;
    uint64_t head_samples;  /* points in every live head */
    uint64_t head_first_ms; /* monotonic ms of the oldest live point (0: empty) */
    uint64_t next_seg_seq;
    bool devices_unasked; /* a device appeared whose own retention is not known yet */
    /* Files may hold purged or expired series: compaction must look at every
     * series of every file (set by purges, retention changes, an hourly tick;
     * cleared by a look that found nothing). */
    bool purge_scan;

    /* The log (wal.c). */
    drv_buf pending;       /* records appended, not written (db->mu) */
    drv_buf writing;       /* the batch being written (commit_mu) */
    ts_wal_rec rec;        /* the SAMPLES record an append builds (db->mu) */
    int wal_fd;            /* current segment (commit_mu) */
    uint64_t wal_size;     /* bytes of it known good (commit_mu) */
    uint64_t wal_seq;      /* its number */
    bool wal_dirty;        /* written since the last sync (commit_mu) */
    uint64_t last_sync_ms; /* monotonic time of the last commit that synced (commit_mu) */
    bool wal_failed;       /* a write failed: refuse appends until a flush */

    drv_tsdb_stats stats;
} ts_db;

/* -- tsdb.c ------------------------------------------------------------------ */

/* The series (tenant, device, key), created if `create` (and logged), with
 * type; NULL when absent and not created, or on failure (*err).  db->mu held. */
ts_series *ts_series_get(ts_db *db, const char *tenant, size_t tlen, const char *device,
                         size_t dlen, const char *key, size_t klen, uint8_t type, bool create,
                         drv_err *err);
/* Register a series read from a block file or the log under a known id. db->mu held. */
drv_err ts_series_load(ts_db *db, uint32_t id, uint8_t type, const char *tenant, size_t tlen,
                       const char *device, size_t dlen, const char *key, size_t klen);
ts_tenant *ts_tenant_get(ts_db *db, const char *tenant, size_t tlen, bool create);
/* Add one point to a series' head (and `last`), converting kinds; no logging.
 * DRV_CONFLICT: kind mismatch.  db->mu held. */
drv_err ts_head_add(ts_db *db, ts_series *s, int64_t ts, const drv_value *v);
void ts_head_free(ts_head *h);
/* Sort a head by time, keeping the last of equal times (stable). */
void ts_head_sort(ts_head *h);
int64_t ts_partition_start(const ts_db *db, int64_t ts);
/* Samples of the device older than this are expired (INT64_MIN: none):
 * the shorter of its own and its tenant's retention.  db->mu held. */
int64_t ts_cutoff(const ts_device *d, int64_t now_ms);

/* -- wal.c ------------------------------------------------------------------- */

#define TS_REC_SERIES 1
#define TS_REC_SAMPLES 2
#define TS_REC_DROP 3

/* Append a SERIES record to db->pending.  db->mu held. */
drv_err ts_wal_log_series(ts_db *db, const ts_series *s);
/* Append a DROP record (a device purged).  db->mu held. */
drv_err ts_wal_log_drop(ts_db *db, const char *tenant, const char *device);
void ts_wal_samples_begin(ts_wal_rec *rec);
drv_err ts_wal_samples_add(ts_wal_rec *rec, uint32_t series_id, int64_t ts, const drv_value *v);
/* Frame the record into db->pending.  db->mu held. */
drv_err ts_wal_samples_end(ts_db *db, ts_wal_rec *rec);
/* Write db->pending (and sync when `sync`).  Takes commit_mu and db->mu itself. */
drv_err ts_wal_commit(ts_db *db, bool sync);
/* Replay every segment into the heads, cutting a torn tail; open a new segment. */
drv_err ts_wal_open(ts_db *db, drv_tsdb_recovery *rep);
/* Start a new log segment, in three steps so that no file I/O happens under
 * db->mu: prepare creates the next segment (commit_mu held); rotate switches
 * appends to it (commit_mu and db->mu held) and gives back the old segment's
 * fd and number; finish writes what was pending to the old segment, syncs and
 * closes it (commit_mu held, db->mu not). */
drv_err ts_wal_rotate_prepare(ts_db *db, int *new_fd);
void ts_wal_rotate(ts_db *db, int new_fd, uint64_t *prev_seq, int *old_fd);
drv_err ts_wal_rotate_finish(ts_db *db, int old_fd);
/* Remove segments numbered ≤ seq. */
void ts_wal_remove_upto(ts_db *db, uint64_t seq);
void ts_wal_close(ts_db *db);

/* -- block.c ----------------------------------------------------------------- */

/* Build a block file in memory: begin, add runs of one series (sorted,
 * deduplicated, one type), finish writes it to path and fsyncs it. */
typedef struct ts_seg_writer {
    drv_buf buf;   /* the file's bytes */
    drv_buf index; /* the index, built as series are added */
    uint32_t nseries;
    drv_err err;
} ts_seg_writer;

void ts_segw_init(ts_seg_writer *w);
drv_err ts_segw_add(ts_seg_writer *w, const ts_series *s, uint8_t type, const ts_point *p,
                    uint32_t n);
drv_err ts_segw_finish(ts_seg_writer *w, const char *tenant, const char *path);
void ts_segw_free(ts_seg_writer *w);

/* Open a block file: map it, check its header, trailer and index checksum and
 * register its series (ts_series_load, db->mu held).  DRV_CORRUPT when damaged. */
drv_err ts_seg_open(ts_db *db, const char *path, const char *tenant, uint64_t seq,
                    ts_segment **out);
void ts_seg_unref(ts_segment *seg); /* db->mu held; frees at zero */
const ts_seg_series *ts_seg_find(const ts_segment *seg, uint32_t id);
/*
 * Decode one block into ts[]/v[] (TS_BLOCK_SAMPLES entries each); *n gets
 * its count, *type its value type.  STRING values become spans into the
 * mapping, carried as drv_span in strs[] (v[i] is then the index).  Checks the
 * block's checksum: DRV_CORRUPT when it fails.
 */
drv_err ts_block_decode(const ts_segment *seg, const ts_block_ref *ref, int64_t *ts, uint64_t *v,
                        drv_span *strs, uint8_t *type, uint32_t *n);

/* Decode a rollup block into out[0..TS_BLOCK_SAMPLES); checks the checksum. */
drv_err ts_rollup_decode(const ts_segment *seg, const ts_block_ref *ref, int width_index,
                         ts_rollup *out, uint32_t *n);

/* -- query.c ----------------------------------------------------------------- */

extern const drv_ts_store_ops ts_ops_query; /* scan / aggregate / series (filled in tsdb.c) */
drv_err ts_scan(void *st, const char *tenant, const char *device, const char *key, int64_t from,
                int64_t to, uint32_t limit, drv_ts_sample_fn fn, void *ud);
drv_err ts_aggregate(void *st, const char *tenant, const char *device, const char *key,
                     int64_t from, int64_t to, int64_t bucket_ms, drv_ts_bucket_fn fn, void *ud);
drv_err ts_series_list(void *st, const char *tenant, const char *device, drv_ts_series_fn fn,
                       void *ud);

/* -- flush.c ----------------------------------------------------------------- */

/* Write every live head into blocks and cut the log. */
drv_err ts_flush(ts_db *db);
/* The same, then merge every partition with several files into one. */
drv_err ts_flush_and_compact(ts_db *db);
/* Load the block files under dir/t (at open). */
drv_err ts_blocks_load(ts_db *db, drv_tsdb_recovery *rep);
drv_err ts_thread_start(ts_db *db);
void ts_thread_stop(ts_db *db);

#endif
