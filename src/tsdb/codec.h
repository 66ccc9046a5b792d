/*
 * codec.h — the column codecs of the time-series engine's blocks (ADR-0015).
 *
 * A block holds one series' samples of one value type, sorted by time.  Its
 * timestamps and its values are encoded as two separate streams by the
 * functions here; the block framing (header, checksum) is block.c's.  These
 * codecs know nothing of series, files or tenants: pure functions of arrays,
 * used by the engine, the unit tests (tsdb_codec_test.c) and
 * fuzz/fuzz_block_codec.c.
 *
 * Every stream starts with a one-byte mode, so each block picks the encoding
 * that suits its data:
 *   timestamps: delta-of-delta, bit-packed with frame of reference; a block
 *               whose interval never changes stores no per-sample bits;
 *   doubles:    decimal-aware — when every value is an integer times 10^-d
 *               (d ≤ 9) and fits, the scaled integers are delta-encoded and
 *               bit-packed (frame of reference); otherwise Gorilla XOR;
 *   integers:   delta, bit-packed with frame of reference;
 *   booleans:   one bit each;
 *   strings:    length-prefixed bytes (decoded as views into the stream).
 * Encoders choose deterministically; a round trip is exact to the bit (NaN
 * payloads, -0.0, infinities and subnormals included).
 *
 * Decoders take untrusted bytes (a corrupt file): they never read outside
 * in[0..len), never write more than n elements, never assert, and answer
 * DRV_CORRUPT for anything malformed (a bad mode, a truncated stream, a
 * width over 64, a count that does not fit).  They never allocate.
 */
#ifndef DRV_TSDB_CODEC_H
#define DRV_TSDB_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/span.h"

/* Most samples one block may hold (decoders refuse larger n with DRV_CORRUPT). */
#define TSC_MAX_BLOCK_SAMPLES 65536u

/*
 * Encoders: append the stream for v[0..n) (1 ≤ n ≤ TSC_MAX_BLOCK_SAMPLES) to
 * out.  Timestamps must be non-decreasing (equal ones allowed).  Errors:
 * DRV_TOOBIG / DRV_NOMEM from the buffer; DRV_INVAL for n out of range or
 * unsorted timestamps.  On error out may hold a partial stream: the caller
 * truncates it back.
 */
drv_err tsc_encode_ts(drv_buf *out, const int64_t *ts, uint32_t n);
drv_err tsc_encode_f64(drv_buf *out, const double *v, uint32_t n);
drv_err tsc_encode_i64(drv_buf *out, const int64_t *v, uint32_t n);
drv_err tsc_encode_bool(drv_buf *out, const uint8_t *v, uint32_t n); /* v[i] is 0 or 1 */
drv_err tsc_encode_str(drv_buf *out, const drv_span *v, uint32_t n);

/*
 * Decoders: read exactly n elements from in[0..len) into out[0..n); *used
 * gets the bytes of the stream (the next stream starts at in + *used).
 * tsc_decode_str's spans point into `in`.  DRV_CORRUPT when the stream is
 * malformed or shorter than n elements; out is then unspecified.
 */
drv_err tsc_decode_ts(const uint8_t *in, size_t len, uint32_t n, int64_t *out, size_t *used);
drv_err tsc_decode_f64(const uint8_t *in, size_t len, uint32_t n, double *out, size_t *used);
drv_err tsc_decode_i64(const uint8_t *in, size_t len, uint32_t n, int64_t *out, size_t *used);
drv_err tsc_decode_bool(const uint8_t *in, size_t len, uint32_t n, uint8_t *out, size_t *used);
drv_err tsc_decode_str(const uint8_t *in, size_t len, uint32_t n, drv_span *out, size_t *used);

/* Varints shared with the block and log formats: LEB128 unsigned, and
 * zig-zag for signed.  put_* append (buffer errors returned); get_* read at
 * *pos within len and advance it, false when truncated or longer than 10
 * bytes / overflowing 64 bits. */
drv_err tsc_put_uvarint(drv_buf *out, uint64_t v);
drv_err tsc_put_svarint(drv_buf *out, int64_t v);
bool tsc_get_uvarint(const uint8_t *in, size_t len, size_t *pos, uint64_t *v);
bool tsc_get_svarint(const uint8_t *in, size_t len, size_t *pos, int64_t *v);

#endif
