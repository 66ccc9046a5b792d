/*
 * fuzz_block_codec.c — libFuzzer harness for the time-series block codecs
 * (src/tsdb/codec.c): the decoders read block files, which may be corrupt.
 *
 * Input: byte 0 picks the codec (low 6 bits mod 5: ts, f64, i64, bool,
 * str) and the mode (bit 7).
 *   Stream mode (bit 7 clear): bytes 1-2 give n (little-endian, mod
 *   TSC_MAX_BLOCK_SAMPLES, plus 1); the rest is a stream, copied into a
 *   heap block of its exact size so an over-read is an ASan report.  The
 *   decoder must answer DRV_OK or DRV_CORRUPT with *used inside the input;
 *   when OK, the values (timestamps sorted, booleans 0/1) are encoded again
 *   and that stream must decode to the same values, bit for bit, with
 *   *used equal to its length.
 *   Value mode (bit 7 set): the rest are values — 8-byte words (sorted for
 *   timestamps), or with bit 6 set one signed byte per value as a step of a
 *   running sum (scaled to two decimals for doubles, 0x80 a huge jump for
 *   integers), bytes & 1 for booleans, NUL-separated strings — encoded,
 *   decoded and compared bit for bit.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "tsdb/codec.h"

#include "fuzz.h"

enum {
    K_TS,
    K_F64,
    K_I64,
    K_BOOL,
    K_STR
};

static size_t elem_size(int kind)
{
    return kind == K_BOOL ? 1 : kind == K_STR ? sizeof(drv_span) : 8;
}

static drv_err decode(int kind, const uint8_t *in, size_t len, uint32_t n, void *out, size_t *used)
{
    switch (kind) {
    case K_TS:
        return tsc_decode_ts(in, len, n, out, used);
    case K_F64:
        return tsc_decode_f64(in, len, n, out, used);
    case K_I64:
        return tsc_decode_i64(in, len, n, out, used);
    case K_BOOL:
        return tsc_decode_bool(in, len, n, out, used);
    default:
        return tsc_decode_str(in, len, n, out, used);
    }
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

/* Encode v[0..n), decode the stream from an exact-size copy, compare. */
static void check_round_trip(int kind, const void *v, uint32_t n)
{
    drv_buf b;
    drv_buf_init(&b, 64u << 20);
    FUZZ_ASSERT(encode(kind, &b, v, n) == DRV_OK);
    uint8_t *copy = malloc(b.len);
    FUZZ_ASSERT(copy != NULL);
    memcpy(copy, b.data, b.len);
    void *back = malloc((size_t)n * elem_size(kind));
    FUZZ_ASSERT(back != NULL);
    size_t used = 0;
    FUZZ_ASSERT(decode(kind, copy, b.len, n, back, &used) == DRV_OK);
    FUZZ_ASSERT(used == b.len);
    FUZZ_ASSERT(same(kind, v, back, n));
    free(back);
    free(copy);
    drv_buf_free(&b);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Values made from p[0..len) for value mode; returns how many (at least 1). */
static uint32_t make_values(int kind, bool narrow, const uint8_t *p, size_t len, void *out)
{
    uint32_t n = 0;
    switch (kind) {
    case K_TS:
    case K_I64:
    case K_F64: {
        uint64_t *v = out, acc = 0;
        if (narrow) {
            for (; n < len && n < TSC_MAX_BLOCK_SAMPLES; n++) {
                int8_t step = (int8_t)p[n];
                if (kind == K_TS)
                    acc += (uint8_t)step;
                else if (kind == K_I64 && p[n] == 0x80)
                    acc += (uint64_t)INT64_MAX / 3;
                else
                    acc += (uint64_t)(int64_t)step;
                v[n] = acc;
            }
        } else {
            for (; (size_t)n * 8 + 8 <= len && n < TSC_MAX_BLOCK_SAMPLES; n++)
                memcpy(&v[n], p + (size_t)n * 8, 8);
        }
        if (n == 0)
            v[n++] = 0;
        if (kind == K_TS && !narrow)
            qsort(v, n, sizeof(*v), cmp_i64);
        if (kind == K_F64 && narrow) {
            double *d = out;
            for (uint32_t i = 0; i < n; i++) {
                int64_t s;
                memcpy(&s, &v[i], 8);
                d[i] = (double)(s + 2000) / 100;
            }
        }
        return n;
    }
    case K_BOOL: {
        uint8_t *v = out;
        for (; n < len && n < TSC_MAX_BLOCK_SAMPLES; n++)
            v[n] = p[n] & 1;
        if (n == 0)
            v[n++] = 0;
        return n;
    }
    default: {
        drv_span *v = out;
        size_t start = 0;
        for (size_t i = 0; i <= len && n < TSC_MAX_BLOCK_SAMPLES; i++)
            if (i == len || p[i] == 0) {
                v[n++] = (drv_span){(const char *)p + start, i - start};
                start = i + 1;
            }
        return n;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int kind = (data[0] & 0x3F) % 5;
    if (data[0] & 0x80) {
        size_t len = size - 1;
        uint8_t *in = malloc(len ? len : 1);
        FUZZ_ASSERT(in != NULL);
        memcpy(in, data + 1, len);
        void *v = malloc((len + 1) * elem_size(kind) + 8);
        FUZZ_ASSERT(v != NULL);
        uint32_t n = make_values(kind, data[0] & 0x40, in, len, v);
        check_round_trip(kind, v, n);
        free(v);
        free(in);
        return 0;
    }
    if (size < 3)
        return 0;
    uint32_t n = (uint32_t)(data[1] | data[2] << 8) % TSC_MAX_BLOCK_SAMPLES + 1;
    size_t len = size - 3;
    uint8_t *in = malloc(len ? len : 1);
    FUZZ_ASSERT(in != NULL);
    memcpy(in, data + 3, len);
    void *out = malloc((size_t)n * elem_size(kind));
    FUZZ_ASSERT(out != NULL);
    size_t used = SIZE_MAX;
    drv_err e = decode(kind, in, len, n, out, &used);
    FUZZ_ASSERT(e == DRV_OK || e == DRV_CORRUPT);
    if (e == DRV_OK) {
        FUZZ_ASSERT(used <= len);
        if (kind == K_TS)
            for (uint32_t i = 1; i < n; i++)
                FUZZ_ASSERT(((int64_t *)out)[i - 1] <= ((int64_t *)out)[i]);
        if (kind == K_BOOL)
            for (uint32_t i = 0; i < n; i++)
                FUZZ_ASSERT(((uint8_t *)out)[i] <= 1);
        if (kind == K_STR)
            for (uint32_t i = 0; i < n; i++) {
                const drv_span *s = (const drv_span *)out + i;
                FUZZ_ASSERT(s->p >= (const char *)in && s->n <= len &&
                            (size_t)(s->p - (const char *)in) <= len - s->n);
            }
        check_round_trip(kind, out, n);
    }
    free(out);
    free(in);
    return 0;
}
