/*
 * tsdb.h — telemetry storage: the interface the pipeline and the APIs use,
 * and the embedded time-series engine behind it (ADR-0013, ADR-0014).
 *
 * Callers see a drv_ts_store: a const ops table and its state, so a clustered
 * deployment can keep telemetry elsewhere (PostgreSQL/TimescaleDB) without
 * touching the pipeline or the REST handlers.  The embedded engine
 * (drv_tsdb_open) keeps:
 *   - a write-ahead log (wal.c): every append is a checksummed record; a
 *     commit writes the records appended so far and, in `sync` durability,
 *     fdatasyncs them before returning — so an acknowledgement sent after
 *     drv_ts_commit survives kill -9;
 *   - an in-memory head per series (the samples not yet in a block);
 *   - immutable, compressed, checksummed block files, one set per tenant and
 *     time partition (block.c, codec.c), written by a background thread
 *     when the head grows or ages, after which the log is cut;
 *   - rollups (1 minute, 1 hour) written with the blocks; retention per
 *     tenant that removes whole partitions.
 *
 * Series are identified by (tenant, device, key).  A series has one value
 * kind: numeric (DOUBLE and INT; an INT series becomes DOUBLE when a
 * non-integral value arrives), BOOL or STRING.  A sample of another kind
 * is refused (DRV_CONFLICT, with the key).  Two samples of one series at the
 * same millisecond: the later write wins.
 *
 * Threads: append/commit from any thread (broker workers, the API thread);
 * queries from any thread; all calls are safe concurrently.  Strings handed
 * to callbacks are valid only during the callback.
 */
#ifndef DRV_TSDB_TSDB_H
#define DRV_TSDB_TSDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "core/sample.h"

/* Times the store accepts: |ts| ≤ 2^53 ms (±285,000 years), so that every
 * difference of two times and every bucket computation fits in int64. */
#define DRV_TS_TIME_MAX (INT64_C(1) << 53)

/* Longest tenant and device id the store accepts (the registry's limits). */
#define DRV_TS_MAX_ID 128u

/* One time bucket of an aggregate query over numeric values (BOOL counts as
 * 0/1; STRING series have only count/first/last). */
typedef struct drv_ts_bucket {
    int64_t start_ms; /* bucket start (from + k * bucket_ms) */
    uint64_t count;   /* samples in the bucket (0: no data; other fields unset) */
    double sum, min, max;
    int64_t first_ts, last_ts; /* times of the first and last sample */
    drv_value first, last;     /* their values (STRING: valid during the callback only) */
} drv_ts_bucket;

/* What one series is (keys listing, latest values). */
typedef struct drv_ts_series_info {
    const char *device;
    const char *key;
    drv_value_type type; /* current kind: DOUBLE, INT, BOOL or STRING */
    int64_t last_ts;     /* newest sample's time (INT64_MIN: none kept) */
    drv_value last;      /* its value */
} drv_ts_series_info;

/* Result of an append: how many samples were stored, and the first refusal. */
typedef struct drv_ts_append_result {
    uint32_t stored;
    uint32_t refused;
    const char *why; /* static text for the first refusal, NULL when none */
    uint32_t why_index;
} drv_ts_append_result;

/* What a tenant may keep. */
typedef struct drv_ts_tenant_limits {
    uint32_t retention_days; /* keep samples this long (0: forever) */
    /* Storage quota in bytes (0: none): the tenant's block files plus an
     * estimate of 2 B per sample still in memory.  Beyond it every append of
     * the tenant fails with DRV_LIMIT (nothing stored) until data ages out
     * or the quota is raised. */
    uint64_t max_bytes;
} drv_ts_tenant_limits;

/* Callbacks: return false to stop the walk early (the call then returns DRV_OK). */
typedef bool (*drv_ts_sample_fn)(void *ud, const drv_sample *s);
typedef bool (*drv_ts_bucket_fn)(void *ud, const drv_ts_bucket *b);
typedef bool (*drv_ts_series_fn)(void *ud, const drv_ts_series_info *si);

typedef struct drv_ts_store_ops {
    const char *name;
    /*
     * Store samples s[0..n) of one device.  Not yet durable: call commit.
     * Samples that cannot be stored (a kind that does not match the series,
     * a key or string too long, a time outside the retention window) are
     * refused one by one and reported in *res; the others are stored.
     * Errors (DRV_NOMEM, DRV_LIMIT for the tenant's storage quota, DRV_IO)
     * mean nothing of this call was stored.
     */
    drv_err (*append)(void *st, const char *tenant, const char *device, const drv_sample *s,
                      uint32_t n, drv_ts_append_result *res);
    /* Make every append that returned before this call durable (per the
     * store's durability setting).  DRV_IO: the log could not be written;
     * nothing appended since the last successful commit may be acknowledged. */
    drv_err (*commit)(void *st);
    /* Samples of one series with from ≤ ts < to, ascending, at most `limit`
     * (0: no limit).  DRV_NOTFOUND when the series does not exist. */
    drv_err (*scan)(void *st, const char *tenant, const char *device, const char *key, int64_t from,
                    int64_t to, uint32_t limit, drv_ts_sample_fn fn, void *ud);
    /* Buckets of bucket_ms (0: one bucket for the whole range) over
     * from ≤ ts < to; only buckets with data are reported, ascending. */
    drv_err (*aggregate)(void *st, const char *tenant, const char *device, const char *key,
                         int64_t from, int64_t to, int64_t bucket_ms, drv_ts_bucket_fn fn,
                         void *ud);
    /* Every series of the tenant's device (device NULL: of every device of
     * the tenant), sorted by device then key, with its latest value. */
    drv_err (*series)(void *st, const char *tenant, const char *device, drv_ts_series_fn fn,
                      void *ud);
    /* Delete every sample of a device (decommission with purge). */
    drv_err (*drop_device)(void *st, const char *tenant, const char *device);
    /* A tenant's limits (from its registry record; every change, and at start). */
    drv_err (*set_tenant_limits)(void *st, const char *tenant, const drv_ts_tenant_limits *lim);
    void (*close)(void *st);
} drv_ts_store_ops;

typedef struct drv_ts_store {
    const drv_ts_store_ops *ops;
    void *st;
} drv_ts_store;

/* Durability of acknowledged samples (ADR-0014). */
typedef enum drv_tsdb_durability {
    DRV_TSDB_SYNC = 0, /* commit returns after fdatasync: nothing acknowledged is lost */
    DRV_TSDB_BATCH =
        1, /* commit writes; a timer syncs every sync_interval_ms: that is the loss window */
} drv_tsdb_durability;

typedef struct drv_tsdb_config {
    const char *dir;                /* the engine's directory (created) */
    drv_tsdb_durability durability; /* see above */
    uint32_t sync_interval_ms;      /* BATCH: at most this long between syncs */
    uint32_t partition_hours;       /* width of a time partition (1..8760) */
    uint64_t head_max_samples;      /* flush the head into blocks beyond this many samples */
    uint32_t head_max_age_s;        /* ... or when its oldest sample arrived this long ago */
    uint32_t max_series;            /* series beyond this are refused (DRV_LIMIT) */
    int64_t max_future_ms;          /* samples further in the future are refused */
    /* Optional: a device's own retention in days (0: none, the tenant's
     * applies), from its profile.  Called from the engine's thread, at most
     * hourly per device that has data; it may block (a registry lookup).  A
     * device keeps the shorter of its own and its tenant's retention. */
    uint32_t (*device_retention)(void *ud, const char *tenant, const char *device);
    void *device_retention_ud;
} drv_tsdb_config;

/* What opening the engine found and repaired (logged by the caller). */
typedef struct drv_tsdb_recovery {
    uint64_t wal_records;      /* log records replayed */
    uint64_t wal_samples;      /* samples they held */
    uint64_t wal_bytes_cut;    /* bytes of a torn or corrupt log tail removed */
    uint32_t blocks_files;     /* block files opened */
    uint32_t blocks_files_bad; /* block files set aside as corrupt (renamed *.corrupt) */
    uint32_t series;           /* series known */
} drv_tsdb_recovery;

/* Open (or create) the embedded engine at cfg->dir, replaying its log, and
 * start its background thread.  *rep (may be NULL) says what was repaired. */
drv_err drv_tsdb_open(const drv_tsdb_config *cfg, drv_ts_store *out, drv_tsdb_recovery *rep);

/* Counters for /metrics (approximate: read without a lock). */
typedef struct drv_tsdb_stats {
    uint64_t series;
    uint64_t samples_appended, samples_refused;
    uint64_t head_samples;
    uint64_t commits, syncs, wal_bytes;
    uint64_t flushes, blocks_written, block_bytes;
    uint64_t partitions, partitions_dropped;
    uint64_t corrupt_blocks; /* blocks refused at read for a bad checksum */
    uint64_t rollups_read;   /* rollup buckets aggregates used instead of raw samples */
} drv_tsdb_stats;

/* Stats of an embedded engine (false when `store` is not one). */
bool drv_tsdb_get_stats(const drv_ts_store *store, drv_tsdb_stats *out);

/* Embedded engine only: write the whole head into blocks now and cut the log
 * (tests, the benchmark, a clean shutdown does it too).  DRV_UNSUPPORTED otherwise. */
drv_err drv_tsdb_flush(const drv_ts_store *store);

#endif
