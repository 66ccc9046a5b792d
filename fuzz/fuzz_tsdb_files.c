/*
 * fuzz_tsdb_files.c — libFuzzer harness for what the time-series engine reads
 * back from disk (src/tsdb): block files (block.c: header, trailer, index,
 * blocks, rollups) and write-ahead log segments (wal.c replay).
 *
 * Input: a mode byte (bit 0: the rest is a log segment, else a block file),
 * then the file's bytes.  The harness writes them where the engine looks
 * (<dir>/wal/0000000000000001.wal, or <dir>/t/acme/<day>/<seq>-<seq>.blk),
 * opens the engine, lists every series of tenant "acme" and scans and
 * aggregates each one over all time, then closes it.  A corrupt file must be
 * an error the engine reports (a file set aside, a block skipped, a log tail
 * cut) — never a crash, a sanitizer report or a hang.  Seeds: real files
 * written by the engine (fuzz/corpus/fuzz_tsdb_files).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "tsdb/tsdb.h"

#include "fuzz.h"

static char root[128];

typedef struct names {
    char dev[64][DRV_TS_MAX_ID + 1];
    char key[64][DRV_SAMPLE_MAX_KEY + 1];
    int n;
} names;

static bool on_series(void *ud, const drv_ts_series_info *si)
{
    names *nm = ud;
    FUZZ_ASSERT(si->device && si->key && si->key[0]);
    if (nm->n < 64) {
        snprintf(nm->dev[nm->n], sizeof(nm->dev[0]), "%s", si->device);
        snprintf(nm->key[nm->n], sizeof(nm->key[0]), "%s", si->key);
        nm->n++;
    }
    return true;
}

typedef struct scan_state {
    int64_t prev;
    uint32_t n;
} scan_state;

static bool on_sample(void *ud, const drv_sample *s)
{
    scan_state *st = ud;
    FUZZ_ASSERT(st->n == 0 || s->ts_ms > st->prev); /* strictly ascending, no duplicates */
    st->prev = s->ts_ms;
    st->n++;
    return st->n < 100000;
}

static bool on_bucket(void *ud, const drv_ts_bucket *b)
{
    (void)ud;
    FUZZ_ASSERT(b->count > 0 && b->first_ts <= b->last_ts);
    return true;
}

static void write_file(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    FUZZ_ASSERT(f);
    FUZZ_ASSERT(fwrite(p, 1, n, f) == n);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!root[0]) {
        snprintf(root, sizeof(root), "/tmp/fuzz-tsdb-%d", (int)getpid());
        drv_log_set_level(DRV_LOG_ERROR); /* the set-aside and cut messages are expected */
    }
    if (size < 1)
        return 0;
    char cmd[300], path[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s && mkdir -p %s/wal %s/t/acme/1767225600000", root, root,
             root);
    FUZZ_ASSERT(system(cmd) == 0);
    if (data[0] & 1)
        snprintf(path, sizeof(path), "%s/wal/0000000000000001.wal", root);
    else
        snprintf(path, sizeof(path),
                 "%s/t/acme/1767225600000/0000000000000001-0000000000000001.blk", root);
    write_file(path, data + 1, size - 1);

    drv_tsdb_config cfg = {.dir = root,
                           .partition_hours = 24,
                           .head_max_samples = 1000000,
                           .head_max_age_s = 3600,
                           .max_series = 100000,
                           .max_future_ms = 600000};
    drv_ts_store st;
    drv_tsdb_recovery rep;
    drv_err e = drv_tsdb_open(&cfg, &st, &rep);
    if (e != DRV_OK)
        return 0; /* refusing to open is a fine answer to garbage */
    names nm = {0};
    FUZZ_ASSERT(st.ops->series(st.st, "acme", NULL, on_series, &nm) == DRV_OK);
    for (int i = 0; i < nm.n; i++) {
        scan_state ss = {0};
        e = st.ops->scan(st.st, "acme", nm.dev[i], nm.key[i], INT64_MIN / 2, INT64_MAX / 2, 0,
                         on_sample, &ss);
        FUZZ_ASSERT(e == DRV_OK || e == DRV_NOTFOUND || e == DRV_NOMEM);
        e = st.ops->aggregate(st.st, "acme", nm.dev[i], nm.key[i], 1767225600000,
                              1767225600000 + 86400000, 3600000, on_bucket, NULL);
        FUZZ_ASSERT(e == DRV_OK || e == DRV_NOTFOUND || e == DRV_NOMEM);
    }
    st.ops->close(st.st);
    return 0;
}
