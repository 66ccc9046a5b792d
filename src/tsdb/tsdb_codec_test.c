/*
 * tsdb_codec_test.c — unit tests for the block codecs (src/tsdb/codec.c).
 * (Not codec_test.c: that name is src/mqtt's test executable.)
 *
 * Table-driven round trips through every encoder and decoder: edge values
 * (INT64_MIN/MAX neighbours, NaN payloads, -0.0, ±inf, subnormals,
 * DBL_MAX/MIN, 0..9-digit decimals, 0.1 + 0.2), one and two samples,
 * duplicates, 65536 samples, long and empty strings.  Every stream must
 * decode to the same values (doubles compared bit for bit) with *used equal
 * to its length, also when more bytes follow; every strict prefix must be
 * DRV_CORRUPT, and every single-byte corruption must be DRV_CORRUPT or
 * DRV_OK, never a crash (streams are copied into exact-size heap blocks, so
 * an over-read is an ASan report).  Also: the chosen modes for regular
 * timestamps and decimal doubles, the size on the benchmark dataset's value
 * pattern (printed), argument errors, buffer caps, and the varints.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "tsdb/codec.h"

#include "core/test.h"

#define MAXN TSC_MAX_BLOCK_SAMPLES

enum {
    K_TS,
    K_F64,
    K_I64,
    K_BOOL,
    K_STR
};

/* xorshift64*: deterministic test data. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Du;
}
/* Uniform in [0, 1). */
static double rnd01(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

static double dbl(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

/* The heap copy the last decode read (decoded strings point into it); freed by the next. */
static uint8_t *last_in;

/* Decode stream[0..len) (copied to an exact-size heap block) as kind with n elements into
 * out (an array of n elements of the kind's type). */
static drv_err decode(int kind, const uint8_t *stream, size_t len, uint32_t n, void *out,
                      size_t *used)
{
    free(last_in);
    uint8_t *in = last_in = malloc(len ? len : 1);
    memcpy(in, stream, len);
    drv_err e = DRV_INVAL;
    switch (kind) {
    case K_TS:
        e = tsc_decode_ts(in, len, n, out, used);
        break;
    case K_F64:
        e = tsc_decode_f64(in, len, n, out, used);
        break;
    case K_I64:
        e = tsc_decode_i64(in, len, n, out, used);
        break;
    case K_BOOL:
        e = tsc_decode_bool(in, len, n, out, used);
        break;
    case K_STR:
        e = tsc_decode_str(in, len, n, out, used);
        break;
    }
    return e;
}

static drv_err encode(int kind, drv_buf *b, const void *v, uint32_t n)
{
    switch (kind) {
    case K_TS:
        return tsc_encode_ts(b, v, n);
    case K_F64:
        return tsc_encode_f64(b, v, n);
    case K_I64:
        return tsc_encode_i64(b, v, n);
    case K_BOOL:
        return tsc_encode_bool(b, v, n);
    default:
        return tsc_encode_str(b, v, n);
    }
}

static size_t elem_size(int kind)
{
    return kind == K_BOOL ? 1 : kind == K_STR ? sizeof(drv_span) : 8;
}

/* Decoded values equal the originals (bit for bit; strings by content). */
static bool same(int kind, const void *a, const void *b, uint32_t n)
{
    if (kind != K_STR)
        return memcmp(a, b, (size_t)n * elem_size(kind)) == 0;
    const drv_span *x = a, *y = b;
    for (uint32_t i = 0; i < n; i++)
        if (x[i].n != y[i].n || (x[i].n && memcmp(x[i].p, y[i].p, x[i].n) != 0))
            return false;
    return true;
}

/* Encode v[0..n), check the round trip, prefixes and (when corrupt_all) every single-byte
 * corruption; returns the encoded size. */
static size_t round_trip(int kind, const char *name, const void *v, uint32_t n, bool corrupt_all)
{
    drv_buf b;
    drv_buf_init(&b, 16u << 20);
    CHECK_CASE(encode(kind, &b, v, n) == DRV_OK, name);
    size_t len = b.len;
    void *out = calloc(n, elem_size(kind));
    size_t used = 0;
    CHECK_CASE(decode(kind, b.data, len, n, out, &used) == DRV_OK, name);
    CHECK_CASE(used == len, name);
    CHECK_CASE(same(kind, v, out, n), name);

    /* The same stream with other bytes after it: *used stops at its end. */
    uint8_t *more = malloc(len + 16);
    memcpy(more, b.data, len);
    memset(more + len, 0xA5, 16);
    used = 0;
    CHECK_CASE(decode(kind, more, len + 16, n, out, &used) == DRV_OK && used == len, name);
    CHECK_CASE(same(kind, v, out, n), name);
    free(more);

    /* Every strict prefix is refused (long streams: the first and last 16, 16 others). */
    bool prefixes_ok = true;
    for (size_t cut = 0; cut < len; cut++) {
        if (len > 256 && cut >= 16 && cut + 16 < len && cut % (len / 16))
            continue;
        if (decode(kind, b.data, cut, n, out, &used) != DRV_CORRUPT)
            prefixes_ok = false;
    }
    CHECK_CASE(prefixes_ok, name);

    /* Single-byte corruptions: OK or CORRUPT, *used within the stream. */
    if (corrupt_all) {
        bool answers_ok = true;
        static const uint8_t flips[] = {0x01, 0x02, 0x10, 0x40, 0x80, 0xFF, 0x7F};
        for (size_t at = 0; at < len; at++) {
            for (size_t f = 0; f < sizeof(flips); f++) {
                b.data[at] ^= flips[f];
                used = 0;
                drv_err e = decode(kind, b.data, len, n, out, &used);
                if (!(e == DRV_CORRUPT || (e == DRV_OK && used <= len)))
                    answers_ok = false;
                b.data[at] ^= flips[f];
            }
        }
        CHECK_CASE(answers_ok, name);
    }
    free(out);
    drv_buf_free(&b);
    return len;
}

/* ---- timestamps ------------------------------------------------------------------------- */

static void test_ts(void)
{
    static int64_t v[MAXN];
    static const struct {
        const char *name;
        int64_t ts[8];
        uint32_t n;
        size_t max_len; /* 0: no bound checked */
    } rows[] = {
        {"one", {1767225600000}, 1, 7},
        {"two", {1767225600000, 1767225610000}, 2, 10},
        {"equal", {5, 5, 5, 5}, 4, 3},
        {"regular", {0, 10, 20, 30, 40, 50, 60, 70}, 8, 3},
        {"irregular", {0, 10, 21, 30, 45, 50, 61, 70}, 7, 0},
        {"duplicates", {-7, -7, 3, 3, 3, 9, 9, 1000}, 8, 0},
        {"negative", {-3000, -2000, -1000, 0, 1000, 2000}, 6, 6},
        {"min-max", {INT64_MIN, INT64_MAX}, 2, 0},
        {"min-0-max", {INT64_MIN, 0, INT64_MAX}, 3, 0},
        {"min-min+1-max", {INT64_MIN, INT64_MIN + 1, INT64_MAX - 1, INT64_MAX}, 4, 0},
        {"max-dups", {INT64_MAX, INT64_MAX, INT64_MAX}, 3, 0},
        {"min-dups", {INT64_MIN, INT64_MIN, INT64_MIN + 1}, 3, 0},
    };
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        size_t len = round_trip(K_TS, rows[r].name, rows[r].ts, rows[r].n, true);
        if (rows[r].max_len)
            CHECK_CASE(len <= rows[r].max_len, rows[r].name);
    }

    /* 65536 regular samples: a few bytes; with jitter; with occasional gaps. */
    for (uint32_t i = 0; i < MAXN; i++)
        v[i] = 1767225600000 + (int64_t)i * 10000;
    CHECK(round_trip(K_TS, "65536 regular", v, MAXN, false) <= 12);
    for (uint32_t i = 0; i < MAXN; i++)
        v[i] = 1767225600000 + (int64_t)i * 10000 + (int64_t)(rnd() % 40);
    size_t jitter = round_trip(K_TS, "65536 jitter", v, MAXN, false);
    CHECK(jitter <= MAXN + 64); /* dod in [-78, 78]: at most 8 bits */
    for (uint32_t i = 0; i < MAXN; i++)
        v[i] = 1767225600000 + (int64_t)i * 10000 + (i > 30000 ? 3600000 : 0) +
               (i % 1000 == 999 ? 17 : 0);
    size_t gaps = round_trip(K_TS, "65536 gaps", v, MAXN, false);
    CHECK(gaps < 1000); /* exceptions only, no per-sample bits */
    for (uint32_t i = 0; i < 300; i++)
        v[i] = (int64_t)(rnd() >> 2) * (i & 1 ? 1 : -1);
    for (uint32_t i = 1; i < 300; i++) /* sort: insertion */
        for (uint32_t j = i; j > 0 && v[j] < v[j - 1]; j--) {
            int64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    round_trip(K_TS, "random sorted", v, 300, true);

    /* A regular stream is mode 0 with no packed part. */
    drv_buf b;
    drv_buf_init(&b, 1 << 20);
    CHECK(tsc_encode_ts(&b, v, 300) == DRV_OK && b.data[0] == 1);
    b.len = 0;
    int64_t reg[3] = {10, 20, 30};
    CHECK(tsc_encode_ts(&b, reg, 3) == DRV_OK && b.len == 3 && b.data[0] == 0);

    /* Errors. */
    int64_t unsorted[3] = {3, 2, 4};
    CHECK(tsc_encode_ts(&b, unsorted, 3) == DRV_INVAL);
    CHECK(tsc_encode_ts(&b, reg, 0) == DRV_INVAL);
    CHECK(tsc_encode_ts(&b, v, MAXN + 1) == DRV_INVAL);
    int64_t o[4];
    size_t used;
    static const uint8_t bad_mode[] = {7, 0, 0};
    CHECK(tsc_decode_ts(bad_mode, sizeof(bad_mode), 1, o, &used) == DRV_CORRUPT);
    static const uint8_t dod_short[] = {1, 0, 2}; /* mode dod with 2 samples */
    CHECK(tsc_decode_ts(dod_short, sizeof(dod_short), 2, o, &used) == DRV_CORRUPT);
    /* A regular stream whose delta wraps: decoded times would go down. */
    static const uint8_t wraps[] = {0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1};
    CHECK(tsc_decode_ts(wraps, sizeof(wraps), 2, o, &used) == DRV_CORRUPT);
    CHECK(tsc_decode_ts(wraps, sizeof(wraps), 0, o, &used) == DRV_CORRUPT);
    CHECK(tsc_decode_ts(wraps, sizeof(wraps), MAXN + 1, o, &used) == DRV_CORRUPT);
    /* Width over 64. */
    static const uint8_t wide[] = {1, 0, 2, 65, 0, 0};
    CHECK(tsc_decode_ts(wide, sizeof(wide), 3, o, &used) == DRV_CORRUPT);
    /* An exception positioned past the end. */
    static const uint8_t exc_out[] = {1, 0, 2, 0, 0, 1, 1, 2};
    CHECK(tsc_decode_ts(exc_out, sizeof(exc_out), 3, o, &used) == DRV_CORRUPT);
    static const uint8_t exc_in[] = {1, 0, 2, 0, 0, 1, 0, 2};
    CHECK(tsc_decode_ts(exc_in, sizeof(exc_in), 3, o, &used) == DRV_OK && used == 8 && o[0] == 0 &&
          o[1] == 2 && o[2] == 5); /* dod 1 from the exception */
    /* Too small a buffer. */
    drv_buf small;
    drv_buf_init(&small, 4);
    CHECK(tsc_encode_ts(&small, v, 300) == DRV_TOOBIG);
    drv_buf_free(&small);
    drv_buf_free(&b);
}

/* ---- doubles ---------------------------------------------------------------------------- */

static void test_f64(void)
{
    static double v[MAXN];
    const double nan1 = dbl(0x7FF8000000000000u), nan2 = dbl(0x7FF0000000000001u),
                 nan3 = dbl(0xFFF8DEADBEEF0001u), nan4 = dbl(0x7FFFFFFFFFFFFFFFu);
    const struct {
        const char *name;
        double v[8];
        uint32_t n;
    } rows[] = {
        {"one", {21.37}, 1},
        {"two", {21.37, 21.4}, 2},
        {"constant", {3.25, 3.25, 3.25, 3.25, 3.25}, 5},
        {"0 digits", {1, 2, 3, -4, 100000, 0}, 6},
        {"1 digit", {0.1, 0.2, 0.3, -0.5}, 4},
        {"2 digits", {21.37, 21.4, 20.99, 22.01}, 4},
        {"3 digits", {0.001, -0.002, 1.234}, 3},
        {"4 digits", {0.0001, 12.3456}, 2},
        {"5 digits", {3.14159, 2.71828}, 2},
        {"6 digits", {0.000001, 1.000001}, 2},
        {"7 digits", {0.1234567, 7.7777777}, 2},
        {"8 digits", {0.12345678, 99.00000001}, 2},
        {"9 digits", {0.123456789, 1e-9}, 2},
        {"10 digits", {0.1234567891, 1e-10}, 2},
        {"0.1+0.2", {0.1 + 0.2, 0.3}, 2},
        {"nan payloads", {nan1, nan2, nan3, nan4, nan1}, 5},
        {"inf", {INFINITY, -INFINITY, 1.5, INFINITY}, 4},
        {"-0.0", {-0.0, 0.0, -0.0}, 3},
        {"-0.0 among decimals", {21.37, -0.0, 21.4}, 3},
        {"subnormals", {DBL_TRUE_MIN, -DBL_TRUE_MIN, 1e-310, DBL_MIN / 3}, 4},
        {"max-min", {DBL_MAX, DBL_MIN, -DBL_MAX, -DBL_MIN}, 4},
        {"2^53", {9007199254740992.0, 9007199254740993.0, -9007199254740992.0}, 3},
        {"big integers", {1e15, 1e15 + 1, 4503599627370496.5}, 3},
        {"mixed", {1.0, nan1, 2.0, -0.0, 1e308}, 5},
    };
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++)
        round_trip(K_F64, rows[r].name, rows[r].v, rows[r].n, true);

    /* Modes: decimals use mode 0 with the smallest digit count; others are not mode 0. */
    static const struct {
        double v;
        int digits; /* -1: not decimal */
    } digits[] = {{5, 0},       {0.5, 1},          {21.37, 2},     {0.125, 3}, {1.0001, 4},
                  {3.14159, 5}, {1e-6, 6},         {0.1234567, 7}, {1e-8, 8},  {1.000000001, 9},
                  {1e-10, -1},  {0.1 + 0.2, -1},   {-0.0, -1},     {NAN, -1},  {INFINITY, -1},
                  {1e300, -1},  {DBL_TRUE_MIN, -1}};
    drv_buf b;
    drv_buf_init(&b, 1 << 20);
    for (size_t r = 0; r < sizeof(digits) / sizeof(digits[0]); r++) {
        double two[2] = {1.5, digits[r].v};
        b.len = 0;
        CHECK(tsc_encode_f64(&b, two, 2) == DRV_OK);
        if (digits[r].digits >= 0)
            CHECK_CASE(b.data[0] == 0 && b.data[1] == (digits[r].digits ? digits[r].digits : 1),
                       "decimal digits");
        else
            CHECK_CASE(b.data[0] != 0, "not decimal");
    }

    /* Decimals of every digit count, many values. */
    for (int d = 0; d <= 9; d++) {
        double scale = 1;
        for (int k = 0; k < d; k++)
            scale *= 10;
        for (uint32_t i = 0; i < 1000; i++)
            v[i] = (double)((int64_t)(rnd() % 2000000) - 1000000) / scale;
        char name[32];
        snprintf(name, sizeof(name), "random %d digits", d);
        round_trip(K_F64, name, v, 1000, d == 2);
    }
    for (uint32_t i = 0; i < 1000; i++)
        v[i] = dbl(rnd());
    round_trip(K_F64, "random bits", v, 1000, false);
    b.len = 0;
    CHECK(tsc_encode_f64(&b, v, 1000) == DRV_OK && b.len <= 1 + 8000);
    for (uint32_t i = 0; i < 1000; i++)
        v[i] = rnd01() * 100;
    round_trip(K_F64, "random [0,100)", v, 1000, false);
    v[0] = 1000;
    for (uint32_t i = 1; i < MAXN; i++)
        v[i] = v[i - 1] + rnd01() - 0.5;
    round_trip(K_F64, "65536 random walk", v, MAXN, false);
    for (uint32_t i = 0; i < MAXN; i++)
        v[i] = (double)(int64_t)(rnd() % 100000) / 100;
    round_trip(K_F64, "65536 decimals", v, MAXN, false);
    for (uint32_t i = 0; i < 200; i++)
        v[i] = i % 7 ? 1.0 + i : nan3;
    round_trip(K_F64, "gorilla windows", v, 200, true);

    CHECK(tsc_encode_f64(&b, v, 0) == DRV_INVAL);
    double o[4];
    size_t used;
    static const uint8_t bad_digits[] = {0, 10, 0, 0};
    CHECK(tsc_decode_f64(bad_digits, sizeof(bad_digits), 1, o, &used) == DRV_CORRUPT);
    static const uint8_t raw_short[] = {2, 1, 2, 3, 4, 5, 6, 7};
    CHECK(tsc_decode_f64(raw_short, sizeof(raw_short), 1, o, &used) == DRV_CORRUPT);
    drv_buf_free(&b);
}

/* The benchmark dataset's pattern (bench/tsdb_dataset.py) for one series: 5000 points at
 * 10 s, v = round(20 + ((s*7+t)%100)/10 + random(), 2). */
static void test_dataset_size(void)
{
    enum {
        N = 5000
    };
    static int64_t ts[N];
    static double v[N];
    double total = 0;
    for (int s = 0; s < 4; s++) {
        for (int t = 0; t < N; t++) {
            ts[t] = 1767225600000 + (int64_t)t * 10000;
            double x = 20 + ((s * 7 + t) % 100) / 10.0 + rnd01();
            /* round(x, 2): the nearest two-decimal double, as Python prints and reads it */
            char txt[32];
            snprintf(txt, sizeof(txt), "%.2f", x);
            v[t] = strtod(txt, NULL);
        }
        size_t tl = round_trip(K_TS, "dataset ts", ts, N, false);
        size_t vl = round_trip(K_F64, "dataset values", v, N, false);
        double per = (double)(tl + vl) / N;
        printf("dataset series %d: ts %zu B, values %zu B, %.3f bytes/sample\n", s, tl, vl, per);
        CHECK(per < 1.2);
        total += per;
    }
    printf("dataset mean: %.3f bytes/sample\n", total / 4);
}

/* ---- integers, booleans, strings ------------------------------------------------------- */

static void test_i64(void)
{
    static int64_t v[MAXN];
    static const struct {
        const char *name;
        int64_t v[8];
        uint32_t n;
    } rows[] = {
        {"one", {42}, 1},
        {"two", {-1, 1}, 2},
        {"constant", {7, 7, 7, 7, 7, 7}, 6},
        {"counter", {100, 101, 103, 106, 110, 115, 121, 128}, 8},
        {"min-max", {INT64_MIN, INT64_MAX, INT64_MIN, INT64_MAX}, 4},
        {"neighbours", {INT64_MAX, INT64_MAX - 1, INT64_MIN + 1, INT64_MIN, 0, -1, 1}, 7},
        {"zeros", {0, 0}, 2},
        {"min", {INT64_MIN}, 1},
    };
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++)
        round_trip(K_I64, rows[r].name, rows[r].v, rows[r].n, true);
    for (uint32_t i = 0; i < 500; i++)
        v[i] = (int64_t)rnd();
    round_trip(K_I64, "random", v, 500, true);
    for (uint32_t i = 0; i < 500; i++)
        v[i] = (int64_t)(rnd() % 4);
    size_t states = round_trip(K_I64, "states 0..3", v, 500, true);
    CHECK(states < 500 / 4 + 16); /* direct, 2 bits each */
    for (uint32_t i = 0; i < MAXN; i++)
        v[i] = (int64_t)i * 1000 + (int64_t)(rnd() % 100) + (i % 500 == 0 ? INT64_MIN / 2 : 0);
    round_trip(K_I64, "65536 counter with outliers", v, MAXN, false);
    for (uint32_t i = 0; i < MAXN; i++)
        v[i] = (int64_t)(rnd() >> (rnd() % 64));
    round_trip(K_I64, "65536 mixed widths", v, MAXN, false);
    drv_buf b;
    drv_buf_init(&b, 64);
    CHECK(tsc_encode_i64(&b, v, 0) == DRV_INVAL);
    CHECK(tsc_encode_i64(&b, v, 1000) == DRV_TOOBIG);
    drv_buf_free(&b);
    int64_t o[2];
    size_t used;
    static const uint8_t wide64_exc[] = {1, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2};
    CHECK(tsc_decode_i64(wide64_exc, sizeof(wide64_exc), 1, o, &used) == DRV_CORRUPT);
    static const uint8_t long_varint[] = {0,    0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                          0xFF, 0xFF, 0xFF, 0xFF, 0x02};
    CHECK(tsc_decode_i64(long_varint, sizeof(long_varint), 1, o, &used) == DRV_CORRUPT);
}

static void test_bool(void)
{
    static uint8_t v[MAXN];
    static const struct {
        const char *name;
        uint8_t v[12];
        uint32_t n;
        size_t len; /* expected stream size */
    } rows[] = {
        {"one false", {0}, 1, 2},
        {"one true", {1}, 1, 2},
        {"all true", {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 10, 2},
        {"alternate", {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1}, 12, 3},
        {"two runs", {0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1}, 12, 3},
        {"nine", {1, 0, 0, 1, 1, 0, 1, 0, 1}, 9, 3},
    };
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++)
        CHECK_CASE(round_trip(K_BOOL, rows[r].name, rows[r].v, rows[r].n, true) == rows[r].len,
                   rows[r].name);
    for (uint32_t i = 0; i < MAXN; i++)
        v[i] = (i / 5000) & 1;
    CHECK(round_trip(K_BOOL, "65536 runs", v, MAXN, false) < 40);
    for (uint32_t i = 0; i < MAXN; i++)
        v[i] = rnd() & 1;
    CHECK(round_trip(K_BOOL, "65536 random", v, MAXN, false) == 1 + MAXN / 8);
    drv_buf b;
    drv_buf_init(&b, 64);
    uint8_t two = 2;
    CHECK(tsc_encode_bool(&b, &two, 1) == DRV_INVAL);
    drv_buf_free(&b);
    uint8_t o[8];
    size_t used;
    static const uint8_t const2[] = {1, 2};
    CHECK(tsc_decode_bool(const2, 2, 3, o, &used) == DRV_CORRUPT);
    static const uint8_t runs_over[] = {2, 0, 3, 9};
    CHECK(tsc_decode_bool(runs_over, sizeof(runs_over), 8, o, &used) == DRV_CORRUPT);
    static const uint8_t run_zero[] = {2, 0, 0, 8};
    CHECK(tsc_decode_bool(run_zero, sizeof(run_zero), 8, o, &used) == DRV_CORRUPT);
}

static void test_str(void)
{
    static drv_span v[MAXN];
    static char names[300][16];
    char *big = malloc(100000);
    memset(big, 'x', 100000);
    drv_span rows1[] = {{"", 0}};
    round_trip(K_STR, "one empty", rows1, 1, true);
    drv_span rows2[] = {{"ok", 2}, {"", 0}, {"idle", 4}, {"ok", 2}, {NULL, 0}};
    round_trip(K_STR, "few", rows2, 5, true);
    drv_span rows3[] = {{big, 100000}, {"a", 1}, {big, 99999}};
    round_trip(K_STR, "long", rows3, 3, false);
    for (uint32_t i = 0; i < MAXN; i++)
        v[i] = (drv_span){i % 3 ? "running" : "stopped", 7};
    size_t dict = round_trip(K_STR, "65536 two values", v, MAXN, false);
    CHECK(dict < MAXN / 8 + 32);
    for (int i = 0; i < 300; i++) {
        snprintf(names[i], sizeof(names[i]), "state-%d", i);
        v[i] = (drv_span){names[i], strlen(names[i])};
    }
    round_trip(K_STR, "300 distinct", v, 300, false);
    for (int i = 0; i < 2000; i++)
        v[i] = (drv_span){names[rnd() % 256], 0};
    for (int i = 0; i < 2000; i++)
        v[i].n = strlen(v[i].p);
    round_trip(K_STR, "256 distinct", v, 2000, false);
    for (int i = 0; i < 600; i++)
        v[i] = (drv_span){names[rnd() % 5], 0};
    for (int i = 0; i < 600; i++)
        v[i].n = strlen(v[i].p);
    round_trip(K_STR, "5 distinct", v, 600, true);
    drv_span o[4];
    size_t used;
    static const uint8_t idx_over[] = {1, 2, 1, 'a', 1, 'b', 1, 'c', 0xFF};
    CHECK(tsc_decode_str(idx_over, sizeof(idx_over), 4, o, &used) == DRV_CORRUPT);
    static const uint8_t len_over[] = {0, 5, 'a'};
    CHECK(tsc_decode_str(len_over, sizeof(len_over), 1, o, &used) == DRV_CORRUPT);
    free(big);
}

/* ---- varints ---------------------------------------------------------------------------- */

static void test_varint(void)
{
    static const uint64_t uv[] = {0,         1, 127, 128, 16383, 16384, UINT32_MAX, UINT64_MAX / 2,
                                  UINT64_MAX};
    static const size_t ulen[] = {1, 1, 1, 2, 2, 3, 5, 9, 10};
    static const int64_t sv[] = {0, -1, 1, -64, 64, INT64_MIN, INT64_MAX};
    drv_buf b;
    drv_buf_init(&b, 1024);
    for (size_t i = 0; i < sizeof(uv) / sizeof(uv[0]); i++) {
        b.len = 0;
        CHECK(tsc_put_uvarint(&b, uv[i]) == DRV_OK && b.len == ulen[i]);
        size_t pos = 0;
        uint64_t x = 0;
        CHECK(tsc_get_uvarint(b.data, b.len, &pos, &x) && x == uv[i] && pos == b.len);
        pos = 0;
        CHECK(!tsc_get_uvarint(b.data, b.len - 1, &pos, &x) && pos == 0);
    }
    for (size_t i = 0; i < sizeof(sv) / sizeof(sv[0]); i++) {
        b.len = 0;
        CHECK(tsc_put_svarint(&b, sv[i]) == DRV_OK);
        size_t pos = 0;
        int64_t x = 0;
        CHECK(tsc_get_svarint(b.data, b.len, &pos, &x) && x == sv[i] && pos == b.len);
    }
    b.len = 0;
    CHECK(tsc_put_svarint(&b, -1) == DRV_OK && b.len == 1 && b.data[0] == 1);
    /* A 10th byte above 1 overflows; an 11th byte is too long. */
    static const uint8_t over[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02};
    static const uint8_t eleven[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                     0x80, 0x80, 0x80, 0x80, 0x00};
    size_t pos = 0;
    uint64_t x;
    CHECK(!tsc_get_uvarint(over, sizeof(over), &pos, &x));
    CHECK(!tsc_get_uvarint(eleven, sizeof(eleven), &pos, &x));
    /* Reading starts at *pos. */
    static const uint8_t two[] = {0x05, 0x96, 0x01};
    pos = 1;
    CHECK(tsc_get_uvarint(two, sizeof(two), &pos, &x) && x == 150 && pos == 3);
    drv_buf small;
    drv_buf_init(&small, 2);
    CHECK(tsc_put_uvarint(&small, 1u << 20) == DRV_TOOBIG);
    drv_buf_free(&small);
    drv_buf_free(&b);
}

int main(void)
{
    test_varint();
    test_ts();
    test_f64();
    test_dataset_size();
    test_i64();
    test_bool();
    test_str();
    free(last_in);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
