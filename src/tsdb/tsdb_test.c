/*
 * tsdb_test.c — the embedded engine end to end, on a temporary directory:
 * append/commit/scan/aggregate across head and blocks, kinds and their
 * conflicts, out-of-order and duplicate times, restart (clean and from a
 * crash image: a copy of the directory taken while the engine runs), a torn
 * log tail, a corrupt block, purge, listing.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/test.h"
#include "tsdb/tsdb.h"

static char root[256];

static drv_tsdb_config config(const char *dir)
{
    drv_tsdb_config c = {
        .dir = dir,
        .durability = DRV_TSDB_SYNC,
        .partition_hours = 24,
        .head_max_samples = 1000000,
        .head_max_age_s = 3600,
        .max_series = 100000,
        .max_future_ms = 600000,
    };
    return c;
}

static drv_sample num(const char *key, int64_t ts, double d)
{
    drv_sample s = {.key = {key, strlen(key)}, .ts_ms = ts, .v = {.type = DRV_VALUE_DOUBLE}};
    s.v.d = d;
    return s;
}

static drv_sample inum(const char *key, int64_t ts, int64_t i)
{
    drv_sample s = {.key = {key, strlen(key)}, .ts_ms = ts, .v = {.type = DRV_VALUE_INT}};
    s.v.i = i;
    return s;
}

static drv_sample str(const char *key, int64_t ts, const char *v)
{
    drv_sample s = {.key = {key, strlen(key)}, .ts_ms = ts, .v = {.type = DRV_VALUE_STRING}};
    s.v.s = (drv_span){v, strlen(v)};
    return s;
}

typedef struct collected {
    int64_t ts[20000];
    double v[20000];
    char s[64][32];
    uint32_t n;
} collected;

static bool collect(void *ud, const drv_sample *s)
{
    collected *c = ud;
    if (c->n >= 20000)
        return false;
    c->ts[c->n] = s->ts_ms;
    c->v[c->n] = s->v.type == DRV_VALUE_INT      ? (double)s->v.i
                 : s->v.type == DRV_VALUE_BOOL   ? (double)s->v.b
                 : s->v.type == DRV_VALUE_DOUBLE ? s->v.d
                                                 : -1;
    if (s->v.type == DRV_VALUE_STRING && c->n < 64)
        snprintf(c->s[c->n], sizeof(c->s[0]), "%.*s", (int)s->v.s.n, s->v.s.p);
    c->n++;
    return true;
}

static collected got;

static double collect_v(uint32_t i)
{
    return got.v[i];
}

static int64_t got_ts(uint32_t i)
{
    return got.ts[i];
}

static uint32_t scan(drv_ts_store *st, const char *dev, const char *key, int64_t from, int64_t to)
{
    got.n = 0;
    drv_err e = st->ops->scan(st->st, "acme", dev, key, from, to, 0, collect, &got);
    return e == DRV_OK ? got.n : UINT32_MAX;
}

typedef struct buckets {
    drv_ts_bucket b[400];
    uint32_t n;
} buckets;

static bool take_bucket(void *ud, const drv_ts_bucket *b)
{
    buckets *bs = ud;
    if (bs->n < 400)
        bs->b[bs->n++] = *b;
    return true;
}

static void run(const char *cmd)
{
    int r = system(cmd);
    CHECK_CASE(r == 0, cmd);
}

static const int64_t T0 = 1767225600000; /* 2026-01-01 */

static void test_basic(void)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/basic", root);
    drv_tsdb_config cfg = config(dir);
    drv_ts_store st;
    drv_tsdb_recovery rep;
    CHECK(drv_tsdb_open(&cfg, &st, &rep) == DRV_OK);
    drv_ts_append_result res;
    /* 3000 regular samples, two decimals, plus strings and an int series */
    for (int i = 0; i < 3000; i++) {
        drv_sample s[3] = {num("temp", T0 + i * 10000, 20 + (i % 100) / 10.0),
                           inum("count", T0 + i * 10000, i),
                           str("mode", T0 + i * 10000, i % 2 ? "eco" : "boost")};
        CHECK(st.ops->append(st.st, "acme", "d1", s, 3, &res) == DRV_OK && res.stored == 3);
    }
    CHECK(st.ops->commit(st.st) == DRV_OK);
    CHECK(scan(&st, "d1", "temp", T0, T0 + 3000 * 10000) == 3000);
    CHECK(got.ts[0] == T0 && got.v[0] == 20 && got.ts[2999] == T0 + 2999 * 10000);
    CHECK(scan(&st, "d1", "temp", T0 + 10000, T0 + 30000) == 2);
    CHECK(scan(&st, "d1", "nope", T0, T0 + 1) == UINT32_MAX);
    CHECK(scan(&st, "d2", "temp", T0, T0 + 1) == UINT32_MAX);

    /* a kind conflict refuses that sample only */
    drv_sample bad[2] = {str("temp", T0, "x"), num("temp", T0 + 5, 1.5)};
    CHECK(st.ops->append(st.st, "acme", "d1", bad, 2, &res) == DRV_OK);
    CHECK(res.stored == 1 && res.refused == 1 && res.why_index == 0 && res.why);
    /* int → double promotion */
    drv_sample pr = num("count", T0 + 3000 * 10000, 0.5);
    CHECK(st.ops->append(st.st, "acme", "d1", &pr, 1, &res) == DRV_OK && res.stored == 1);
    /* future refused */
    drv_sample fut = num("temp", (int64_t)time(NULL) * 1000 + 3600000, 1);
    CHECK(st.ops->append(st.st, "acme", "d1", &fut, 1, &res) == DRV_OK && res.refused == 1);

    /* flush: the same answers from blocks */
    CHECK(drv_tsdb_flush(&st) == DRV_OK);
    CHECK(scan(&st, "d1", "temp", T0, T0 + 3000 * 10000) == 3001);
    CHECK(got.ts[1] == T0 + 5 && got.v[1] == 1.5);
    CHECK(scan(&st, "d1", "mode", T0, T0 + 20000) == 2);
    CHECK(strcmp(got.s[0], "boost") == 0 && strcmp(got.s[1], "eco") == 0);
    CHECK(scan(&st, "d1", "count", T0, INT64_MAX) == 3001);
    CHECK(got.v[2999] == 2999 && got.v[3000] == 0.5);

    /* late and duplicate samples after the flush: the later write wins */
    drv_sample late[2] = {num("temp", T0 + 10000, 99.25), num("temp", T0 + 15000, 7)};
    CHECK(st.ops->append(st.st, "acme", "d1", late, 2, &res) == DRV_OK && res.stored == 2);
    CHECK(scan(&st, "d1", "temp", T0 + 10000, T0 + 20001) == 3);
    CHECK(got.v[0] == 99.25 && got.ts[1] == T0 + 15000 && got.v[2] == 20.2);

    /* aggregates: max per 5 min over the first hour */
    buckets bs = {0};
    CHECK(st.ops->aggregate(st.st, "acme", "d1", "temp", T0, T0 + 3600000, 300000, take_bucket,
                            &bs) == DRV_OK);
    CHECK(bs.n == 12);
    CHECK(bs.b[0].count == 32 && bs.b[0].max == 99.25 && bs.b[0].start_ms == T0);
    CHECK(bs.b[1].count == 30 && bs.b[1].start_ms == T0 + 300000);
    bs.n = 0;
    CHECK(st.ops->aggregate(st.st, "acme", "d1", "count", T0, T0 + 100000, 0, take_bucket, &bs) ==
          DRV_OK);
    CHECK(bs.n == 1 && bs.b[0].count == 10 && bs.b[0].sum == 45 && bs.b[0].min == 0 &&
          bs.b[0].max == 9);

    st.ops->close(st.st);
    /* a clean restart: everything from blocks, no log to replay */
    CHECK(drv_tsdb_open(&cfg, &st, &rep) == DRV_OK);
    CHECK(rep.wal_samples == 0 && rep.blocks_files >= 1 && rep.blocks_files_bad == 0);
    CHECK(scan(&st, "d1", "temp", T0, T0 + 3000 * 10000) == 3002);
    CHECK(got.v[1] == 1.5 && got.v[2] == 99.25);
    CHECK(scan(&st, "d1", "mode", T0, T0 + 20000) == 2 && strcmp(got.s[1], "eco") == 0);
    st.ops->close(st.st);
}

typedef struct listing {
    char keys[16][64];
    uint32_t n;
    double last[16];
} listing;

static bool list_fn(void *ud, const drv_ts_series_info *si)
{
    listing *l = ud;
    if (l->n < 16) {
        snprintf(l->keys[l->n], 64, "%s/%s", si->device, si->key);
        l->last[l->n] = si->last.type == DRV_VALUE_DOUBLE ? si->last.d
                        : si->last.type == DRV_VALUE_INT  ? (double)si->last.i
                                                          : -1;
        l->n++;
    }
    return true;
}

static void test_crash_and_repair(void)
{
    char dir[300], crash[300], cmd[2048];
    snprintf(dir, sizeof(dir), "%s/live", root);
    snprintf(crash, sizeof(crash), "%s/crash", root);
    drv_tsdb_config cfg = config(dir);
    drv_ts_store st;
    drv_tsdb_recovery rep;
    CHECK(drv_tsdb_open(&cfg, &st, &rep) == DRV_OK);
    drv_ts_append_result res;
    for (int i = 0; i < 500; i++) {
        drv_sample s[2] = {num("a", T0 + i * 1000, i * 0.5), inum("b", T0 + i * 1000, -i)};
        CHECK(st.ops->append(st.st, "acme", i % 2 ? "d1" : "d2", s, 2, &res) == DRV_OK);
        if (i % 50 == 0)
            CHECK(st.ops->commit(st.st) == DRV_OK);
    }
    CHECK(st.ops->commit(st.st) == DRV_OK);
    CHECK(drv_tsdb_flush(&st) == DRV_OK); /* half in blocks ... */
    for (int i = 500; i < 700; i++) {
        drv_sample s = num("a", T0 + i * 1000, i * 0.5);
        CHECK(st.ops->append(st.st, "acme", "d1", &s, 1, &res) == DRV_OK);
    }
    CHECK(st.ops->commit(st.st) == DRV_OK); /* ... half in the log */
    /* the crash image: the directory as it is now, engine still running */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -a '%s' '%s'", crash, dir, crash);
    run(cmd);
    /* a torn tail: half a record at the end of the newest log segment */
    snprintf(cmd, sizeof(cmd),
             "f=$(ls '%s'/wal/*.wal | sort | tail -1); printf '\\060\\000\\000\\000garbage' >> "
             "\"$f\"",
             crash);
    run(cmd);
    st.ops->close(st.st);

    drv_tsdb_config ccfg = config(crash);
    CHECK(drv_tsdb_open(&ccfg, &st, &rep) == DRV_OK);
    CHECK(rep.wal_bytes_cut == 11);
    CHECK(rep.wal_samples == 200);
    CHECK(scan(&st, "d1", "a", T0, T0 + 700000) == 450);
    CHECK(got.v[449] == 699 * 0.5);
    CHECK(scan(&st, "d2", "b", T0, T0 + 700000) == 250 && got.v[1] == -2);
    listing l = {0};
    CHECK(st.ops->series(st.st, "acme", NULL, list_fn, &l) == DRV_OK);
    CHECK(l.n == 4 && strcmp(l.keys[0], "d1/a") == 0 && strcmp(l.keys[3], "d2/b") == 0);
    CHECK(l.last[0] == 699 * 0.5 && l.last[3] == -498);

    /* purge d2: gone now and after a restart */
    CHECK(st.ops->drop_device(st.st, "acme", "d2") == DRV_OK);
    CHECK(scan(&st, "d2", "b", T0, T0 + 700000) == UINT32_MAX);
    st.ops->close(st.st);
    CHECK(drv_tsdb_open(&ccfg, &st, &rep) == DRV_OK);
    CHECK(scan(&st, "d2", "b", T0, T0 + 700000) == UINT32_MAX);
    CHECK(scan(&st, "d1", "a", T0, T0 + 700000) == 450);
    st.ops->close(st.st);

    /* a corrupt block: its samples are not served, the rest are */
    snprintf(cmd, sizeof(cmd),
             "f=$(ls '%s'/t/acme/*/*.blk | head -1); printf '\\377\\377' | dd of=\"$f\" bs=1 "
             "seek=40 conv=notrunc status=none",
             crash);
    run(cmd);
    CHECK(drv_tsdb_open(&ccfg, &st, &rep) == DRV_OK);
    uint32_t n = scan(&st, "d1", "a", T0, T0 + 700000);
    CHECK(n < 450);
    drv_tsdb_stats stats;
    CHECK(drv_tsdb_get_stats(&st, &stats) && stats.corrupt_blocks >= 1);
    st.ops->close(st.st);
}

/* A series whose data left every file (retention) and whose SERIES record
 * left the log (a flush) must declare itself again before its next sample:
 * a crash then replays that sample, and the log after it (review finding). */
static void test_series_redeclared(void)
{
    char dir[300], crash[300], cmd[2048];
    snprintf(dir, sizeof(dir), "%s/redeclare", root);
    snprintf(crash, sizeof(crash), "%s/redeclare-crash", root);
    drv_tsdb_config cfg = config(dir);
    drv_ts_store st;
    CHECK(drv_tsdb_open(&cfg, &st, NULL) == DRV_OK);
    drv_ts_append_result res;
    drv_sample a = num("k", T0, 1.5);
    CHECK(st.ops->append(st.st, "acme", "d", &a, 1, &res) == DRV_OK && res.stored == 1);
    CHECK(st.ops->commit(st.st) == DRV_OK);
    CHECK(drv_tsdb_flush(&st) == DRV_OK); /* in a file; the log segment with SERIES is gone */
    snprintf(cmd, sizeof(cmd), "rm -f '%s'/t/acme/*/*.blk", dir); /* as retention would */
    run(cmd);
    drv_sample b[2] = {num("k", T0 + 1000, 2.5), num("other", T0 + 1000, 7)};
    CHECK(st.ops->append(st.st, "acme", "d", &b[0], 1, &res) == DRV_OK && res.stored == 1);
    CHECK(st.ops->append(st.st, "acme", "d2", &b[1], 1, &res) == DRV_OK && res.stored == 1);
    CHECK(st.ops->commit(st.st) == DRV_OK);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -a '%s' '%s'", crash, dir, crash);
    run(cmd);
    st.ops->close(st.st);
    drv_tsdb_config ccfg = config(crash);
    drv_tsdb_recovery rep;
    CHECK(drv_tsdb_open(&ccfg, &st, &rep) == DRV_OK);
    CHECK(rep.wal_bytes_cut == 0);
    CHECK(scan(&st, "d", "k", T0, T0 + 2000) == 1 && got.v[0] == 2.5);
    CHECK(scan(&st, "d2", "other", T0, T0 + 2000) == 1 && got.v[0] == 7);
    st.ops->close(st.st);
}

/* Aggregates over long ranges come from rollups; they must equal the raw answer. */
static void test_rollups(void)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/rollups", root);
    drv_tsdb_config cfg = config(dir);
    drv_ts_store st;
    CHECK(drv_tsdb_open(&cfg, &st, NULL) == DRV_OK);
    drv_ts_append_result res;
    const int N =
        8 * 1440; /* eight days at 60 s: hourly rollups (minutely ones would be too sparse) */
    for (int i = 0; i < N; i++) {
        drv_sample s[2] = {num("t", T0 + (int64_t)i * 60000, 20 + (i * 37 % 1000) / 100.0),
                           inum("n", T0 + (int64_t)i * 60000, i % 7)};
        CHECK(st.ops->append(st.st, "acme", "r", s, 2, &res) == DRV_OK);
    }
    CHECK(st.ops->commit(st.st) == DRV_OK);
    CHECK(drv_tsdb_flush(&st) == DRV_OK);
    /* late data into the second day: that partition is read raw, the others from rollups */
    drv_sample late = num("t", T0 + 86400000 + 5, 99.5);
    CHECK(st.ops->append(st.st, "acme", "r", &late, 1, &res) == DRV_OK);

    static const char *keys[] = {"t", "n"};
    for (int k = 0; k < 2; k++) {
        buckets bk = {0};
        int64_t from = T0, to = T0 + 8 * 86400000LL, bucket = 3600000;
        CHECK(st.ops->aggregate(st.st, "acme", "r", keys[k], from, to, bucket, take_bucket, &bk) ==
              DRV_OK);
        CHECK_CASE(bk.n == 192, keys[k]);
        /* the same from raw samples */
        uint32_t bad = 0;
        for (uint32_t b = 0; b < bk.n && b < 192; b++) {
            uint32_t n = scan(&st, "r", keys[k], from + b * bucket, from + (b + 1) * bucket);
            double sum = 0, mn = INFINITY, mx = -INFINITY;
            for (uint32_t i = 0; i < n; i++) {
                sum += bk.b[b].count ? collect_v(i) : 0;
                mn = fmin(mn, collect_v(i));
                mx = fmax(mx, collect_v(i));
            }
            if (bk.b[b].count != n || fabs(bk.b[b].sum - sum) > 1e-6 || bk.b[b].min != mn ||
                bk.b[b].max != mx || bk.b[b].first_ts != got_ts(0) ||
                bk.b[b].last_ts != got_ts(n - 1))
                bad++;
        }
        CHECK_CASE(bad == 0, keys[k]);
    }
    /* one bucket for the whole range, and the late sample in it */
    buckets one = {0};
    CHECK(st.ops->aggregate(st.st, "acme", "r", "t", T0, T0 + 8 * 86400000LL, 0, take_bucket,
                            &one) == DRV_OK);
    CHECK(one.n == 1 && one.b[0].count == (uint64_t)N + 1 && one.b[0].max == 99.5);
    CHECK(one.b[0].first.type == DRV_VALUE_DOUBLE && one.b[0].first.d == 20);
    /* integers come back as integers through rollups */
    one.n = 0;
    CHECK(st.ops->aggregate(st.st, "acme", "r", "n", T0, T0 + 8 * 86400000LL, 0, take_bucket,
                            &one) == DRV_OK);
    CHECK(one.n == 1 && one.b[0].last.type == DRV_VALUE_INT && one.b[0].last.i == (N - 1) % 7);
    /* "t": the seven days without late data came from rollups, the second raw (twice);
     * "n": all eight days (twice) */
    drv_tsdb_stats stats;
    CHECK(drv_tsdb_get_stats(&st, &stats) && stats.rollups_read == 2 * 7 * 24 + 2 * 8 * 24);
    /* a short range never uses them */
    one.n = 0;
    CHECK(st.ops->aggregate(st.st, "acme", "r", "t", T0, T0 + 86400000LL, 3600000, take_bucket,
                            &one) == DRV_OK);
    CHECK(drv_tsdb_get_stats(&st, &stats) && stats.rollups_read == 2 * 7 * 24 + 2 * 8 * 24);
    st.ops->close(st.st);
}

int main(void)
{
    snprintf(root, sizeof(root), "/tmp/drover-tsdb-test-%d", (int)getpid());
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -p '%s'", root, root);
    run(cmd);
    test_basic();
    test_crash_and_repair();
    test_rollups();
    test_series_redeclared();
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    run(cmd);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
