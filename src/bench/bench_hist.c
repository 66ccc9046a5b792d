/*
 * bench_hist.c — a log-linear latency histogram in the manner of
 * HdrHistogram: values below 128 ns have a bucket each; above, each power
 * of two [2^k, 2^(k+1)) is split into 64 equal buckets, so a bucket's width
 * is under 1/64 of its values.  Recording is a count-leading-zeros, a shift
 * and an increment: no allocation, no search.
 *
 *   value  0 .. 127           → bucket value
 *   value  2^k .. 2^(k+1)-1   → bucket 128 + (k-7)*64 + (value >> (k-6)) - 64
 */
#include "bench/bench_int.h"

#include <string.h>

void bench_hist_init(bench_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min_ns = UINT64_MAX;
}

static uint32_t bucket_of(uint64_t v)
{
    if (v < 128)
        return (uint32_t)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - 6u;
    uint64_t idx = 128u + (uint64_t)(shift - 1u) * 64u + ((v >> shift) - 64u);
    return idx < BENCH_HIST_BUCKETS ? (uint32_t)idx : BENCH_HIST_BUCKETS - 1u;
}

/* Highest value that maps to bucket idx. */
static uint64_t bucket_high(uint32_t idx)
{
    if (idx < 128)
        return idx;
    uint32_t k = idx - 128u;
    unsigned shift = k / 64u + 1u;
    uint64_t m = k % 64u + 64u;
    return ((m + 1u) << shift) - 1u;
}

void bench_hist_record(bench_hist *h, uint64_t v)
{
    h->counts[bucket_of(v)]++;
    h->total++;
    h->sum_ns += v;
    if (v > h->max_ns)
        h->max_ns = v;
    if (v < h->min_ns)
        h->min_ns = v;
}

void bench_hist_merge(bench_hist *dst, const bench_hist *src)
{
    for (uint32_t i = 0; i < BENCH_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->sum_ns += src->sum_ns;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
    if (src->min_ns < dst->min_ns)
        dst->min_ns = src->min_ns;
}

uint64_t bench_hist_quantile(const bench_hist *h, double q)
{
    if (h->total == 0)
        return 0;
    if (q <= 0)
        return h->min_ns;
    double want = q * (double)h->total;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = bucket_high(i);
            return v < h->max_ns ? v : h->max_ns;
        }
    }
    return h->max_ns;
}
