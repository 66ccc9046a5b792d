/*
 * bench_hist_test.c — unit tests for the latency histogram of `drover bench`
 * (src/bench/bench_hist.c): exact buckets below 128 ns, the relative error
 * bound above, quantiles against a sorted copy of the samples, merging, the
 * clamp of huge values into the last bucket, and the empty histogram.
 *
 * The bench sources are linked only into the drover binary, not into a
 * library the test executables link, so the one file under test is
 * compiled in here.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench/bench_hist.c"

#include "core/test.h"

static bench_hist h, h2;
static uint64_t samples[100000];

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* A deterministic spread of values from 1 ns to about 1 s (xorshift). */
static uint64_t next_value(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    unsigned bits = (unsigned)(*state % 30u) + 1u;
    return (*state >> 34) & ((1ull << bits) - 1u);
}

static void test_empty(void)
{
    bench_hist_init(&h);
    CHECK(h.total == 0);
    CHECK(bench_hist_quantile(&h, 0.5) == 0);
    CHECK(bench_hist_quantile(&h, 0.99) == 0);
}

static void test_exact_small_values(void)
{
    bench_hist_init(&h);
    for (uint64_t v = 0; v < 128; v++)
        bench_hist_record(&h, v);
    CHECK(h.total == 128);
    CHECK(h.min_ns == 0 && h.max_ns == 127);
    CHECK(bench_hist_quantile(&h, 0.5) == 63);
    CHECK(bench_hist_quantile(&h, 1.0) == 127);
    CHECK(bench_hist_quantile(&h, 0.0) == 0);
}

/* Every value maps to a bucket whose highest value is within 1/64 above it. */
static void test_bucket_bounds(void)
{
    for (uint64_t v = 1; v < (1ull << 38); v = v * 3 / 2 + 1) {
        uint32_t b = bucket_of(v);
        uint64_t hi = bucket_high(b);
        CHECK(hi >= v);
        CHECK(hi - v <= v / 64 + 1);
        if (b > 0)
            CHECK(bucket_high(b - 1) < v);
    }
}

static void test_quantiles_match_sorted(void)
{
    uint64_t state = 88172645463325252ull;
    size_t n = sizeof(samples) / sizeof(samples[0]);
    bench_hist_init(&h);
    for (size_t i = 0; i < n; i++) {
        samples[i] = next_value(&state);
        bench_hist_record(&h, samples[i]);
    }
    qsort(samples, n, sizeof(samples[0]), cmp_u64);
    const double qs[] = {0.5, 0.9, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        size_t rank = (size_t)(qs[i] * (double)n + 0.999999);
        uint64_t exact = samples[rank - 1];
        uint64_t got = bench_hist_quantile(&h, qs[i]);
        CHECK(got >= exact);
        CHECK(got - exact <= exact / 64 + 1);
    }
    CHECK(h.max_ns == samples[n - 1]);
    CHECK(h.min_ns == samples[0]);
}

static void test_merge(void)
{
    bench_hist_init(&h);
    bench_hist_init(&h2);
    for (uint64_t v = 1000; v < 2000; v++)
        bench_hist_record(&h, v);
    for (uint64_t v = 5000; v < 6000; v++)
        bench_hist_record(&h2, v);
    bench_hist_merge(&h, &h2);
    CHECK(h.total == 2000);
    CHECK(h.min_ns == 1000 && h.max_ns == 5999);
    uint64_t p50 = bench_hist_quantile(&h, 0.5);
    CHECK(p50 >= 1999 && p50 <= 1999 + 1999 / 64 + 1);
    CHECK(bench_hist_quantile(&h, 0.75) >= 5499);
}

static void test_huge_values_clamp(void)
{
    bench_hist_init(&h);
    bench_hist_record(&h, UINT64_MAX / 2);
    bench_hist_record(&h, 1ull << 40);
    CHECK(h.total == 2);
    CHECK(h.counts[BENCH_HIST_BUCKETS - 1] == 2);
    /* Never reports more than the exact maximum. */
    CHECK(bench_hist_quantile(&h, 1.0) <= h.max_ns);
}

int main(void)
{
    test_empty();
    test_exact_small_values();
    test_bucket_bounds();
    test_quantiles_match_sorted();
    test_merge();
    test_huge_values_clamp();
    printf("bench_hist_test: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
