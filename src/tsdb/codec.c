/*
 * codec.c — the column codecs of time-series blocks; contract in codec.h,
 * every stream format byte by byte in docs/adr/0015-tsdb-compression.md.
 *
 * The workhorse is the "pack": m unsigned 64-bit values stored with a frame
 * of reference and a width (value − base in `width` bits, LSB first), plus
 * patched exceptions for the few values outside [base, base + 2^width).
 * Integers (deltas or raw), delta-of-deltas of timestamps and the scaled
 * integers of decimal doubles all go through it.  Doubles that are not
 * decimals use Gorilla XOR, or raw 8-byte words when that is smaller.
 *
 * All integer arithmetic on values is uint64 wrap-around, so any int64
 * sequence round-trips, jumps from INT64_MIN to INT64_MAX included.  The
 * decoders read untrusted bytes: every read is bounds-checked against
 * in[0..len) (the bit unpacker reads 8-byte words only where 8 bytes
 * remain and assembles the tail byte by byte), and they never allocate.
 * Encoders may allocate scratch space (drv_malloc): up to 2n values, or the
 * string dictionary.
 *
 * Not here: block framing, checksums, series metadata (block.c).
 */
#include "tsdb/codec.h"

#include <string.h>

#include "core/alloc.h"

/* Stream modes: the first byte of each stream. */
enum {
    TS_REGULAR = 0,  /* t0, one delta: every interval equal */
    TS_DOD = 1,      /* t0, first delta, packed delta-of-deltas */
    I64_DELTA = 0,   /* first value, packed deltas */
    I64_DIRECT = 1,  /* packed values */
    F64_DECIMAL = 0, /* digits byte, then an i64 stream of the scaled integers */
    F64_GORILLA = 1, /* XOR with the previous value, leading/trailing-zero windows */
    F64_RAW = 2,     /* n little-endian 8-byte words */
    BOOL_PACKED = 0, /* one bit each, LSB first */
    BOOL_CONST = 1,  /* one byte: the value of every sample */
    BOOL_RUNS = 2,   /* first value byte, then run lengths */
    STR_PLAIN = 0,   /* uvarint length + bytes, each */
    STR_DICT = 1,    /* up to 256 distinct strings, then packed indices */
};

/* Values decoded per round of the pack reader (a stack array of this many). */
#define CHUNK 256u
/* Packs with fewer values than this never try exceptions (not worth the planning). */
#define PATCH_MIN_VALUES 32u
/* Most distinct strings a dictionary holds (decoders keep it on the stack). */
#define DICT_MAX 256u

static const double pow10_tab[10] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};

/* ---- small helpers ---------------------------------------------------------------------- */

static inline uint64_t load64le(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void store64le(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

/* Bits needed to write x (0 for 0). */
static inline unsigned bitlen(uint64_t x)
{
    return x ? 64u - (unsigned)__builtin_clzll(x) : 0u;
}

static inline uint64_t low_mask(unsigned width)
{
    return width >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << width) - 1;
}

static inline uint64_t zigzag(uint64_t v)
{
    return (v << 1) ^ (0 - (v >> 63));
}

static inline uint64_t unzigzag(uint64_t z)
{
    return (z >> 1) ^ (0 - (z & 1));
}

/* v as int64 (two's complement, no implementation-defined conversion). */
static inline int64_t as_i64(uint64_t v)
{
    int64_t s;
    memcpy(&s, &v, sizeof(s));
    return s;
}

/* Arithmetic shift right of v read as int64 (sign bits shifted in), shift < 64. */
static inline uint64_t asr(uint64_t v, unsigned shift)
{
    return (v >> 63) ? ~(~v >> shift) : v >> shift;
}

static inline uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static inline double bits_to_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static inline size_t uvarint_len(uint64_t v)
{
    return v ? (bitlen(v) + 6) / 7 : 1;
}

/* ---- varints ---------------------------------------------------------------------------- */

drv_err tsc_put_uvarint(drv_buf *out, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    return drv_buf_append(out, tmp, n);
}

drv_err tsc_put_svarint(drv_buf *out, int64_t v)
{
    return tsc_put_uvarint(out, zigzag((uint64_t)v));
}

bool tsc_get_uvarint(const uint8_t *in, size_t len, size_t *pos, uint64_t *v)
{
    size_t p = *pos;
    uint64_t x = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (p >= len)
            return false;
        uint8_t b = in[p++];
        if (i == 9 && b > 1)
            return false; /* the 10th byte holds bit 63 only */
        x |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *pos = p;
            *v = x;
            return true;
        }
    }
    return false;
}

bool tsc_get_svarint(const uint8_t *in, size_t len, size_t *pos, int64_t *v)
{
    uint64_t z;
    if (!tsc_get_uvarint(in, len, pos, &z))
        return false;
    *v = as_i64(unzigzag(z));
    return true;
}

/* ---- bit writer: LSB-first bits appended to a drv_buf through a small stage ------------- */

typedef struct bitw {
    drv_buf *out;       /* destination */
    uint64_t acc;       /* pending bits, the oldest in bit 0 */
    unsigned nacc;      /* pending bits in acc, 0..63 */
    unsigned nstage;    /* bytes in stage */
    drv_err err;        /* first buffer error (sticky); later writes are dropped */
    uint8_t stage[256]; /* whole 8-byte words waiting for one drv_buf_append */
} bitw;

static void bw_init(bitw *w, drv_buf *out)
{
    w->out = out;
    w->acc = 0;
    w->nacc = 0;
    w->nstage = 0;
    w->err = DRV_OK;
}

static void bw_flush_stage(bitw *w)
{
    if (w->nstage && w->err == DRV_OK)
        w->err = drv_buf_append(w->out, w->stage, w->nstage);
    w->nstage = 0;
}

/* Append the low k bits of x (k ≤ 64; x has no bits above k). */
static inline void bw_put(bitw *w, uint64_t x, unsigned k)
{
    if (k == 0)
        return;
    w->acc |= x << w->nacc;
    unsigned total = w->nacc + k;
    if (total < 64) {
        w->nacc = total;
        return;
    }
    if (w->nstage == sizeof(w->stage))
        bw_flush_stage(w);
    store64le(w->stage + w->nstage, w->acc);
    w->nstage += 8;
    w->acc = w->nacc ? x >> (64 - w->nacc) : 0;
    w->nacc = total - 64;
}

/* Flush everything, padding the last byte with zero bits; returns the first error. */
static drv_err bw_finish(bitw *w)
{
    uint8_t tail[8];
    unsigned nb = (w->nacc + 7) / 8;
    store64le(tail, w->acc);
    bw_flush_stage(w);
    if (nb && w->err == DRV_OK)
        w->err = drv_buf_append(w->out, tail, nb);
    w->acc = 0;
    w->nacc = 0;
    return w->err;
}

/* ---- bit reading ------------------------------------------------------------------------ */

/* 64 bits of p[0..avail) starting at bit `bit` (LSB first); zeros past the end. */
static inline uint64_t peek64(const uint8_t *p, size_t avail, uint64_t bit)
{
    uint64_t at = bit >> 3;
    unsigned sh = (unsigned)(bit & 7);
    uint8_t tmp[9];
    const uint8_t *src = tmp;
    if (at < avail && avail - at >= 9) {
        src = p + at;
    } else {
        memset(tmp, 0, sizeof(tmp));
        for (unsigned i = 0; i < 9 && at + i < avail; i++)
            tmp[i] = p[at + i];
    }
    uint64_t w = load64le(src) >> sh;
    if (sh)
        w |= (uint64_t)src[8] << (64 - sh);
    return w;
}

/* Values start..start+k of a pack of `width`-bit fields at p (p[0..avail) readable). */
static void unpack(const uint8_t *p, size_t avail, unsigned width, uint32_t start, uint32_t k,
                   uint64_t *buf)
{
    if (width == 0) {
        memset(buf, 0, (size_t)k * sizeof(*buf));
        return;
    }
    uint64_t mask = low_mask(width);
    uint64_t bit = (uint64_t)start * width;
    uint32_t i = 0;
    if (width <= 56) { /* shift ≤ 7 + width ≤ 56: one 8-byte load holds the field */
        for (; i < k; i++, bit += width) {
            uint64_t at = bit >> 3;
            if (at + 8 > avail)
                break;
            buf[i] = (load64le(p + at) >> (bit & 7)) & mask;
        }
    }
    for (; i < k; i++, bit += width)
        buf[i] = peek64(p, avail, bit) & mask;
}

/* A sequential reader of LSB-first bits (Gorilla); reads past the end give zeros and
 * are caught afterwards by comparing `bit` with the length. */
typedef struct bitr {
    const uint8_t *p; /* first byte of the bits */
    size_t avail;     /* readable bytes from p */
    uint64_t bit;     /* next bit to read */
} bitr;

static inline uint64_t br_get(bitr *r, unsigned k)
{
    uint64_t w = peek64(r->p, r->avail, r->bit);
    r->bit += k;
    return w & low_mask(k);
}

/* ---- packs: frame of reference + width + patched exceptions ------------------------------
 *
 *   u8 width (0..64) | svarint base | ceil(m·width/8) bytes of packed (v − base) low bits |
 *   uvarint exceptions | exceptions × (uvarint gap, svarint high)
 *
 * An exception at position pos has (v − base) = low | high << width; positions are
 * ascending, each gap counted from the previous position + 1 (from 0 for the first).
 */

/* How to pack a run of values. */
typedef struct pack_plan {
    uint64_t base;  /* subtracted (wrapping) from every value */
    unsigned width; /* bits per packed field, 0..64 */
    size_t bytes;   /* exact size of the pack */
} pack_plan;

/* Exact bytes of the pack of v[0..m) under base and width. */
static size_t pack_size(const uint64_t *v, uint32_t m, uint64_t base, unsigned width)
{
    size_t size = 1 + uvarint_len(zigzag(base)) + ((uint64_t)m * width + 7) / 8;
    size_t nexc = 0;
    if (width < 64) {
        uint32_t next = 0;
        for (uint32_t i = 0; i < m; i++) {
            uint64_t u = v[i] - base;
            if (u >> width) {
                size += uvarint_len(i - next) + uvarint_len(zigzag(asr(u, width)));
                next = i + 1;
                nexc++;
            }
        }
    }
    return size + uvarint_len(nexc);
}

/* Choose base and width for v[0..m) (m ≥ 1), deterministically.  The plain frame
 * (base = min, width for max − min, no exceptions) is the fallback; when the values
 * cluster, a narrower window around their median with the outliers as exceptions is
 * tried, its width picked from a histogram of zig-zag distances to the median. */
static void plan_pack(const uint64_t *v, uint32_t m, pack_plan *pl)
{
    int64_t lo = as_i64(v[0]), hi = lo;
    for (uint32_t i = 1; i < m; i++) {
        int64_t x = as_i64(v[i]);
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
    }
    unsigned full = bitlen((uint64_t)hi - (uint64_t)lo);
    pl->base = (uint64_t)lo;
    pl->width = full;
    pl->bytes = 1 + uvarint_len(zigzag((uint64_t)lo)) + ((uint64_t)m * full + 7) / 8 + 1;
    if (m < PATCH_MIN_VALUES || full <= 2)
        return;

    /* Median of up to 31 evenly spaced samples. */
    int64_t s[31];
    uint32_t ns = m < 31 ? m : 31;
    for (uint32_t k = 0; k < ns; k++) {
        int64_t x = as_i64(v[(uint64_t)k * m / ns]);
        uint32_t j = k;
        for (; j > 0 && s[j - 1] > x; j--)
            s[j] = s[j - 1];
        s[j] = x;
    }
    uint64_t centre = (uint64_t)s[ns / 2];

    uint32_t hist[65] = {0};
    for (uint32_t i = 0; i < m; i++)
        hist[bitlen(zigzag(v[i] - centre))]++;

    /* Estimated bits for each width: fields plus ~(1 + high bytes) per exception. */
    unsigned best = full;
    uint64_t best_bits = (uint64_t)m * full;
    for (unsigned w = 0; w < full; w++) {
        uint64_t bits = (uint64_t)m * w;
        for (unsigned k = w + 1; k <= 64; k++)
            if (hist[k])
                bits += (uint64_t)hist[k] * 8 * (1 + (k - w + 7) / 7);
        if (bits < best_bits) {
            best_bits = bits;
            best = w;
        }
    }
    if (best == full)
        return;

    /* The window [centre − 2^(w−1), centre + 2^(w−1)) holds the inliers the histogram
     * counted; start the frame at the smallest of them. */
    uint64_t wlo = best ? centre - ((uint64_t)1 << (best - 1)) : centre;
    uint64_t minoff = UINT64_MAX;
    for (uint32_t i = 0; i < m; i++) {
        uint64_t off = v[i] - wlo;
        if (!(off >> best) && off < minoff)
            minoff = off;
    }
    if (minoff == UINT64_MAX)
        return;
    uint64_t base = wlo + minoff;
    size_t bytes = pack_size(v, m, base, best);
    if (bytes < pl->bytes) {
        pl->base = base;
        pl->width = best;
        pl->bytes = bytes;
    }
}

/* Append the pack of v[0..m) as planned. */
static drv_err put_pack(drv_buf *out, const uint64_t *v, uint32_t m, const pack_plan *pl)
{
    uint8_t w8 = (uint8_t)pl->width;
    drv_err e = drv_buf_append(out, &w8, 1);
    if (e == DRV_OK)
        e = tsc_put_svarint(out, as_i64(pl->base));
    if (e != DRV_OK)
        return e;
    unsigned width = pl->width;
    uint64_t mask = low_mask(width);
    uint64_t nexc = 0;
    if (width > 0) {
        bitw bw;
        bw_init(&bw, out);
        for (uint32_t i = 0; i < m; i++) {
            uint64_t u = v[i] - pl->base;
            bw_put(&bw, u & mask, width);
            nexc += width < 64 && (u >> (width & 63)) != 0;
        }
        e = bw_finish(&bw);
    } else {
        for (uint32_t i = 0; i < m; i++)
            nexc += v[i] != pl->base;
    }
    if (e == DRV_OK)
        e = tsc_put_uvarint(out, nexc);
    uint32_t next = 0;
    for (uint32_t i = 0; i < m && nexc && e == DRV_OK; i++) {
        uint64_t u = v[i] - pl->base;
        if (u >> width) { /* width < 64 whenever nexc > 0 */
            e = tsc_put_uvarint(out, i - next);
            if (e == DRV_OK)
                e = tsc_put_uvarint(out, zigzag(asr(u, width)));
            next = i + 1;
            nexc--;
        }
    }
    return e;
}

/* A pack being decoded in chunks. */
typedef struct pack_rd {
    const uint8_t *in; /* the whole stream */
    size_t len;        /* its length */
    size_t bits_at;    /* offset of the packed fields */
    uint64_t base;     /* frame of reference */
    unsigned width;    /* bits per field */
    uint32_t m;        /* values in the pack */
    uint32_t done;     /* values handed out so far */
    size_t xat;        /* offset of the next unread exception */
    uint64_t xleft;    /* exceptions not read yet */
    uint32_t xnext;    /* smallest position the next exception may have */
    bool xhave;        /* xpos/xhigh hold a read, unapplied exception */
    uint32_t xpos;     /* its position */
    uint64_t xhigh;    /* its high bits */
} pack_rd;

/* Read the next exception's position and high bits; false when malformed. */
static bool pack_read_exc(pack_rd *r)
{
    uint64_t gap, high;
    if (!tsc_get_uvarint(r->in, r->len, &r->xat, &gap) ||
        !tsc_get_uvarint(r->in, r->len, &r->xat, &high) || gap >= (uint64_t)r->m - r->xnext)
        return false;
    r->xpos = r->xnext + (uint32_t)gap;
    r->xnext = r->xpos + 1;
    r->xhigh = unzigzag(high);
    r->xleft--;
    r->xhave = true;
    return true;
}

/* Start reading a pack of m ≥ 1 values at in + pos; false when its header is malformed. */
static bool pack_open(pack_rd *r, const uint8_t *in, size_t len, size_t pos, uint32_t m)
{
    int64_t base;
    if (pos >= len || in[pos] > 64)
        return false;
    r->width = in[pos++];
    if (!tsc_get_svarint(in, len, &pos, &base))
        return false;
    uint64_t nbytes = ((uint64_t)m * r->width + 7) / 8;
    if (nbytes > len - pos)
        return false;
    r->in = in;
    r->len = len;
    r->bits_at = pos;
    r->base = (uint64_t)base;
    r->m = m;
    r->done = 0;
    r->xat = pos + (size_t)nbytes;
    r->xnext = 0;
    r->xhave = false;
    if (!tsc_get_uvarint(in, len, &r->xat, &r->xleft) || r->xleft > m ||
        (r->xleft && r->width == 64))
        return false;
    return r->xleft == 0 || pack_read_exc(r);
}

/* The next k values minus base (done + k ≤ m) into buf. */
static bool pack_chunk(pack_rd *r, uint64_t *buf, uint32_t k)
{
    unpack(r->in + r->bits_at, r->len - r->bits_at, r->width, r->done, k, buf);
    uint32_t end = r->done + k;
    while (r->xhave && r->xpos < end) {
        buf[r->xpos - r->done] |= r->xhigh << r->width;
        r->xhave = false;
        if (r->xleft && !pack_read_exc(r))
            return false;
    }
    r->done = end;
    return true;
}

/* ---- integers --------------------------------------------------------------------------- */

/* Append the i64 stream of v[0..n) (n ≥ 1); scratch holds n values. */
static drv_err encode_ints(drv_buf *out, const uint64_t *v, uint32_t n, uint64_t *scratch)
{
    uint8_t mode = I64_DELTA;
    if (n == 1) {
        drv_err e = drv_buf_append(out, &mode, 1);
        return e == DRV_OK ? tsc_put_svarint(out, as_i64(v[0])) : e;
    }
    for (uint32_t i = 0; i + 1 < n; i++)
        scratch[i] = v[i + 1] - v[i];
    pack_plan delta, direct;
    plan_pack(scratch, n - 1, &delta);
    plan_pack(v, n, &direct);
    bool use_direct = direct.bytes < delta.bytes + uvarint_len(zigzag(v[0]));
    mode = use_direct ? I64_DIRECT : I64_DELTA;
    drv_err e = drv_buf_append(out, &mode, 1);
    if (e != DRV_OK)
        return e;
    if (use_direct)
        return put_pack(out, v, n, &direct);
    e = tsc_put_svarint(out, as_i64(v[0]));
    return e == DRV_OK ? put_pack(out, scratch, n - 1, &delta) : e;
}

/* Where decoded integers go: int64s, or doubles (integer / scale). */
typedef struct int_sink {
    int64_t *i64; /* integer destination, or NULL */
    double *f64;  /* double destination when i64 is NULL */
    double scale; /* 10^digits, for f64 */
} int_sink;

static inline void sink_put(const int_sink *s, uint32_t at, const uint64_t *buf, uint32_t k)
{
    if (s->i64) {
        for (uint32_t j = 0; j < k; j++)
            s->i64[at + j] = as_i64(buf[j]);
    } else {
        double scale = s->scale;
        for (uint32_t j = 0; j < k; j++)
            s->f64[at + j] = (double)as_i64(buf[j]) / scale;
    }
}

/* Decode the i64 stream of n values in in[0..len) into s. */
static drv_err decode_ints(const uint8_t *in, size_t len, uint32_t n, const int_sink *s,
                           size_t *used)
{
    uint64_t buf[CHUNK];
    pack_rd r;
    size_t pos = 1;
    uint32_t at = 0;
    if (len < 1)
        return DRV_CORRUPT;
    if (in[0] == I64_DELTA) {
        int64_t first;
        if (!tsc_get_svarint(in, len, &pos, &first))
            return DRV_CORRUPT;
        buf[0] = (uint64_t)first;
        sink_put(s, 0, buf, 1);
        at = 1;
        if (n == 1) {
            *used = pos;
            return DRV_OK;
        }
        if (!pack_open(&r, in, len, pos, n - 1))
            return DRV_CORRUPT;
        uint64_t acc = (uint64_t)first, base = r.base;
        while (at < n) {
            uint32_t k = n - at < CHUNK ? n - at : CHUNK;
            if (!pack_chunk(&r, buf, k))
                return DRV_CORRUPT;
            for (uint32_t j = 0; j < k; j++) {
                acc += base + buf[j];
                buf[j] = acc;
            }
            sink_put(s, at, buf, k);
            at += k;
        }
    } else if (in[0] == I64_DIRECT) {
        if (!pack_open(&r, in, len, pos, n))
            return DRV_CORRUPT;
        uint64_t base = r.base;
        while (at < n) {
            uint32_t k = n - at < CHUNK ? n - at : CHUNK;
            if (!pack_chunk(&r, buf, k))
                return DRV_CORRUPT;
            for (uint32_t j = 0; j < k; j++)
                buf[j] += base;
            sink_put(s, at, buf, k);
            at += k;
        }
    } else {
        return DRV_CORRUPT;
    }
    *used = r.xat;
    return DRV_OK;
}

drv_err tsc_encode_i64(drv_buf *out, const int64_t *v, uint32_t n)
{
    if (n < 1 || n > TSC_MAX_BLOCK_SAMPLES)
        return DRV_INVAL;
    uint64_t *scratch = drv_malloc((size_t)n * sizeof(uint64_t));
    if (!scratch)
        return DRV_NOMEM;
    /* int64_t and uint64_t may alias each other (C11 6.5p7). */
    drv_err e = encode_ints(out, (const uint64_t *)v, n, scratch);
    drv_free(scratch);
    return e;
}

drv_err tsc_decode_i64(const uint8_t *in, size_t len, uint32_t n, int64_t *out, size_t *used)
{
    if (n < 1 || n > TSC_MAX_BLOCK_SAMPLES)
        return DRV_CORRUPT;
    int_sink s = {.i64 = out};
    return decode_ints(in, len, n, &s, used);
}

/* ---- timestamps ------------------------------------------------------------------------- */

drv_err tsc_encode_ts(drv_buf *out, const int64_t *ts, uint32_t n)
{
    if (n < 1 || n > TSC_MAX_BLOCK_SAMPLES)
        return DRV_INVAL;
    bool regular = true;
    for (uint32_t i = 1; i < n; i++) {
        if (ts[i] < ts[i - 1])
            return DRV_INVAL;
        if (i >= 2)
            regular &=
                (uint64_t)ts[i] - (uint64_t)ts[i - 1] == (uint64_t)ts[i - 1] - (uint64_t)ts[i - 2];
    }
    uint8_t mode = regular ? TS_REGULAR : TS_DOD;
    drv_err e = drv_buf_append(out, &mode, 1);
    if (e == DRV_OK)
        e = tsc_put_svarint(out, ts[0]);
    if (e == DRV_OK && n >= 2)
        e = tsc_put_uvarint(out, (uint64_t)ts[1] - (uint64_t)ts[0]);
    if (e != DRV_OK || regular)
        return e;
    uint64_t *dod = drv_malloc((size_t)(n - 2) * sizeof(uint64_t));
    if (!dod)
        return DRV_NOMEM;
    for (uint32_t i = 2; i < n; i++)
        dod[i - 2] =
            ((uint64_t)ts[i] - (uint64_t)ts[i - 1]) - ((uint64_t)ts[i - 1] - (uint64_t)ts[i - 2]);
    pack_plan pl;
    plan_pack(dod, n - 2, &pl);
    e = put_pack(out, dod, n - 2, &pl);
    drv_free(dod);
    return e;
}

drv_err tsc_decode_ts(const uint8_t *in, size_t len, uint32_t n, int64_t *out, size_t *used)
{
    if (n < 1 || n > TSC_MAX_BLOCK_SAMPLES || len < 1 || in[0] > TS_DOD)
        return DRV_CORRUPT;
    uint8_t mode = in[0];
    size_t pos = 1;
    int64_t t0;
    uint64_t delta = 0;
    if (!tsc_get_svarint(in, len, &pos, &t0) || (n >= 2 && !tsc_get_uvarint(in, len, &pos, &delta)))
        return DRV_CORRUPT;
    out[0] = t0;
    uint64_t acc = (uint64_t)t0;
    bool unsorted = false;
    if (mode == TS_REGULAR || n < 3) {
        if (mode != TS_REGULAR)
            return DRV_CORRUPT; /* a delta-of-delta stream has at least one dod */
        for (uint32_t i = 1; i < n; i++) {
            int64_t prev = as_i64(acc);
            acc += delta;
            out[i] = as_i64(acc);
            unsorted |= out[i] < prev;
        }
        *used = pos;
        return unsorted ? DRV_CORRUPT : DRV_OK;
    }
    pack_rd r;
    uint64_t buf[CHUNK];
    if (!pack_open(&r, in, len, pos, n - 2))
        return DRV_CORRUPT;
    acc += delta;
    out[1] = as_i64(acc);
    unsorted = out[1] < t0;
    uint64_t base = r.base;
    for (uint32_t at = 2; at < n;) {
        uint32_t k = n - at < CHUNK ? n - at : CHUNK;
        if (!pack_chunk(&r, buf, k))
            return DRV_CORRUPT;
        for (uint32_t j = 0; j < k; j++) {
            int64_t prev = as_i64(acc);
            delta += base + buf[j];
            acc += delta;
            out[at + j] = as_i64(acc);
            unsorted |= out[at + j] < prev;
        }
        at += k;
    }
    *used = r.xat;
    return unsorted ? DRV_CORRUPT : DRV_OK;
}

/* ---- doubles ---------------------------------------------------------------------------- */

/* v is exactly r / 10^d for an integer |r| ≤ 2^53 (to the bit: -0.0, NaN and ±inf never are);
 * *r gets it. */
static inline bool decimal_exact(double v, unsigned d, int64_t *r)
{
    double x = v * pow10_tab[d];
    if (!(x > -9007199254740992.0 && x < 9007199254740992.0))
        return false;
    int64_t i = (int64_t)x; /* truncates; the fraction x − i is exact */
    double frac = x - (double)i;
    i += (frac >= 0.5) - (frac <= -0.5);
    *r = i;
    return dbits((double)i / pow10_tab[d]) == dbits(v);
}

/* Append the Gorilla bit stream of v[0..n) (after the mode byte). */
static drv_err encode_gorilla(drv_buf *out, const double *v, uint32_t n)
{
    bitw bw;
    bw_init(&bw, out);
    uint64_t prev = dbits(v[0]);
    unsigned plz = 0, ptz = 0;
    bool window = false;
    bw_put(&bw, prev, 64);
    for (uint32_t i = 1; i < n; i++) {
        uint64_t cur = dbits(v[i]), x = cur ^ prev;
        prev = cur;
        if (!x) {
            bw_put(&bw, 0, 1);
            continue;
        }
        unsigned lz = (unsigned)__builtin_clzll(x), tz = (unsigned)__builtin_ctzll(x);
        if (window && lz >= plz && tz >= ptz) {
            bw_put(&bw, 1, 2); /* bits 1, 0: same window */
            bw_put(&bw, x >> ptz, 64 - plz - ptz);
        } else {
            unsigned mlen = 64 - lz - tz;
            bw_put(&bw, 3, 2); /* bits 1, 1: new window */
            bw_put(&bw, lz, 6);
            bw_put(&bw, mlen - 1, 6);
            bw_put(&bw, x >> tz, mlen);
            plz = lz;
            ptz = tz;
            window = true;
        }
    }
    return bw_finish(&bw);
}

/* Decode n Gorilla-coded values from in[0..len) (after the mode byte). */
static drv_err decode_gorilla(const uint8_t *in, size_t len, uint32_t n, double *out, size_t *used)
{
    bitr r = {.p = in, .avail = len, .bit = 0};
    uint64_t prev = br_get(&r, 64);
    unsigned ptz = 0, plen = 0;
    bool window = false;
    out[0] = bits_to_double(prev);
    for (uint32_t i = 1; i < n; i++) {
        uint64_t ctl = br_get(&r, 1);
        if (ctl) {
            if (br_get(&r, 1)) {
                unsigned lz = (unsigned)br_get(&r, 6), mlen = (unsigned)br_get(&r, 6) + 1;
                if (lz + mlen > 64)
                    return DRV_CORRUPT;
                plen = mlen;
                ptz = 64 - lz - mlen;
                window = true;
            } else if (!window) {
                return DRV_CORRUPT;
            }
            prev ^= br_get(&r, plen) << ptz;
        }
        out[i] = bits_to_double(prev);
        if (r.bit > (uint64_t)len * 8)
            return DRV_CORRUPT;
    }
    if (r.bit > (uint64_t)len * 8)
        return DRV_CORRUPT;
    *used = (size_t)((r.bit + 7) / 8);
    return DRV_OK;
}

/* Try the decimal mode: append it and set *done, or leave out as it was when some value
 * is not a decimal of at most 9 digits (d is the smallest digit count that fits all). */
static drv_err encode_decimal(drv_buf *out, const double *v, uint32_t n, bool *done)
{
    *done = false;
    uint64_t *scaled = drv_malloc((size_t)n * 2 * sizeof(uint64_t));
    if (!scaled)
        return DRV_NOMEM;
    drv_err e = DRV_OK;
    unsigned d = 0;
    uint32_t stale = 0; /* scaled[0..stale) were computed with fewer digits than d */
    int64_t r;
    for (uint32_t i = 0; i < n; i++) {
        while (!decimal_exact(v[i], d, &r)) {
            if (++d > 9)
                goto out_free;
            stale = i;
        }
        scaled[i] = (uint64_t)r;
    }
    for (uint32_t i = 0; i < stale; i++) {
        if (!decimal_exact(v[i], d, &r))
            goto out_free; /* a huge value exact at a smaller d overflows at d */
        scaled[i] = (uint64_t)r;
    }
    uint8_t hdr[2] = {F64_DECIMAL, (uint8_t)d};
    e = drv_buf_append(out, hdr, 2);
    if (e == DRV_OK)
        e = encode_ints(out, scaled, n, scaled + n);
    *done = e == DRV_OK;
out_free:
    drv_free(scaled);
    return e;
}

drv_err tsc_encode_f64(drv_buf *out, const double *v, uint32_t n)
{
    if (n < 1 || n > TSC_MAX_BLOCK_SAMPLES)
        return DRV_INVAL;
    uint32_t start = out->len;
    size_t raw = 1 + (size_t)n * 8;
    bool done;
    drv_err e = encode_decimal(out, v, n, &done);
    if (e != DRV_OK)
        return e;
    if (done && out->len - start <= raw)
        return DRV_OK;
    out->len = start;
    uint8_t mode = F64_GORILLA;
    e = drv_buf_append(out, &mode, 1);
    if (e == DRV_OK)
        e = encode_gorilla(out, v, n);
    if (e == DRV_OK && out->len - start <= raw)
        return DRV_OK;
    if (e != DRV_OK && e != DRV_TOOBIG)
        return e;
    out->len = start; /* Gorilla lost to raw words (or outgrew the buffer): raw */
    mode = F64_RAW;
    e = drv_buf_append(out, &mode, 1);
    for (uint32_t i = 0; i < n && e == DRV_OK; i++) {
        uint8_t w[8];
        store64le(w, dbits(v[i]));
        e = drv_buf_append(out, w, 8);
    }
    return e;
}

drv_err tsc_decode_f64(const uint8_t *in, size_t len, uint32_t n, double *out, size_t *used)
{
    if (n < 1 || n > TSC_MAX_BLOCK_SAMPLES || len < 1)
        return DRV_CORRUPT;
    switch (in[0]) {
    case F64_DECIMAL: {
        if (len < 2 || in[1] > 9)
            return DRV_CORRUPT;
        int_sink s = {.f64 = out, .scale = pow10_tab[in[1]]};
        size_t u;
        drv_err e = decode_ints(in + 2, len - 2, n, &s, &u);
        if (e == DRV_OK)
            *used = u + 2;
        return e;
    }
    case F64_GORILLA: {
        size_t u;
        drv_err e = decode_gorilla(in + 1, len - 1, n, out, &u);
        if (e == DRV_OK)
            *used = u + 1;
        return e;
    }
    case F64_RAW:
        if ((len - 1) / 8 < n)
            return DRV_CORRUPT;
        for (uint32_t i = 0; i < n; i++)
            out[i] = bits_to_double(load64le(in + 1 + (size_t)i * 8));
        *used = 1 + (size_t)n * 8;
        return DRV_OK;
    default:
        return DRV_CORRUPT;
    }
}

/* ---- booleans --------------------------------------------------------------------------- */

drv_err tsc_encode_bool(drv_buf *out, const uint8_t *v, uint32_t n)
{
    if (n < 1 || n > TSC_MAX_BLOCK_SAMPLES)
        return DRV_INVAL;
    size_t runs = 2, packed = 1 + ((size_t)n + 7) / 8;
    uint32_t run = 1;
    for (uint32_t i = 0; i < n; i++) {
        if (v[i] > 1)
            return DRV_INVAL;
        if (i == 0)
            continue;
        if (v[i] == v[i - 1]) {
            run++;
        } else {
            runs += uvarint_len(run);
            run = 1;
        }
    }
    runs += uvarint_len(run);
    if (run == n) {
        uint8_t s[2] = {BOOL_CONST, v[0]};
        return drv_buf_append(out, s, 2);
    }
    drv_err e;
    if (runs < packed) {
        uint8_t s[2] = {BOOL_RUNS, v[0]};
        e = drv_buf_append(out, s, 2);
        run = 1;
        for (uint32_t i = 1; i < n && e == DRV_OK; i++) {
            if (v[i] == v[i - 1]) {
                run++;
            } else {
                e = tsc_put_uvarint(out, run);
                run = 1;
            }
        }
        return e == DRV_OK ? tsc_put_uvarint(out, run) : e;
    }
    uint8_t mode = BOOL_PACKED, byte = 0;
    e = drv_buf_append(out, &mode, 1);
    for (uint32_t i = 0; i < n && e == DRV_OK; i++) {
        byte |= (uint8_t)(v[i] << (i & 7));
        if ((i & 7) == 7 || i + 1 == n) {
            e = drv_buf_append(out, &byte, 1);
            byte = 0;
        }
    }
    return e;
}

drv_err tsc_decode_bool(const uint8_t *in, size_t len, uint32_t n, uint8_t *out, size_t *used)
{
    if (n < 1 || n > TSC_MAX_BLOCK_SAMPLES || len < 2)
        return DRV_CORRUPT;
    switch (in[0]) {
    case BOOL_PACKED: {
        size_t bytes = ((size_t)n + 7) / 8;
        if (len - 1 < bytes)
            return DRV_CORRUPT;
        for (uint32_t i = 0; i < n; i++)
            out[i] = (in[1 + (i >> 3)] >> (i & 7)) & 1;
        *used = 1 + bytes;
        return DRV_OK;
    }
    case BOOL_CONST:
        if (in[1] > 1)
            return DRV_CORRUPT;
        memset(out, in[1], n);
        *used = 2;
        return DRV_OK;
    case BOOL_RUNS: {
        if (in[1] > 1)
            return DRV_CORRUPT;
        uint8_t val = in[1];
        size_t pos = 2;
        uint32_t at = 0;
        while (at < n) {
            uint64_t run;
            if (!tsc_get_uvarint(in, len, &pos, &run) || run == 0 || run > n - at)
                return DRV_CORRUPT;
            memset(out + at, val, (size_t)run);
            at += (uint32_t)run;
            val ^= 1;
        }
        *used = pos;
        return DRV_OK;
    }
    default:
        return DRV_CORRUPT;
    }
}

/* ---- strings ---------------------------------------------------------------------------- */

/* The dictionary an encoder builds: up to DICT_MAX distinct strings, hashed. */
typedef struct str_dict {
    drv_span s[DICT_MAX];        /* the distinct strings, in order of first use */
    uint16_t slot[DICT_MAX * 2]; /* open addressing: index + 1, 0 = empty */
    uint32_t k;                  /* strings in s */
} str_dict;

static uint64_t fnv1a(drv_span s)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < s.n; i++)
        h = (h ^ (uint8_t)s.p[i]) * 0x100000001b3u;
    return h;
}

static bool span_same(drv_span a, drv_span b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* Index of s in the dictionary, adding it when new; -1 when the dictionary is full. */
static int dict_index(str_dict *d, drv_span s)
{
    uint32_t i = (uint32_t)fnv1a(s) & (DICT_MAX * 2 - 1);
    for (;; i = (i + 1) & (DICT_MAX * 2 - 1)) {
        uint16_t at = d->slot[i];
        if (at == 0)
            break;
        if (span_same(d->s[at - 1], s))
            return at - 1;
    }
    if (d->k == DICT_MAX)
        return -1;
    d->s[d->k] = s;
    d->slot[i] = (uint16_t)(d->k + 1);
    return (int)d->k++;
}

drv_err tsc_encode_str(drv_buf *out, const drv_span *v, uint32_t n)
{
    if (n < 1 || n > TSC_MAX_BLOCK_SAMPLES)
        return DRV_INVAL;
    size_t plain = 1;
    for (uint32_t i = 0; i < n; i++)
        plain += uvarint_len(v[i].n) + v[i].n;

    str_dict *d = drv_calloc(1, sizeof(*d));
    if (!d)
        return DRV_NOMEM;
    drv_err e = DRV_OK;
    bool dict = true;
    for (uint32_t i = 0; i < n && dict; i++)
        dict = dict_index(d, v[i]) >= 0;
    unsigned width = dict ? bitlen(d->k - 1) : 0;
    if (dict) {
        size_t size = 2 + ((size_t)n * width + 7) / 8;
        for (uint32_t j = 0; j < d->k; j++)
            size += uvarint_len(d->s[j].n) + d->s[j].n;
        dict = size < plain;
    }
    if (dict) {
        uint8_t hdr[2] = {STR_DICT, (uint8_t)(d->k - 1)};
        e = drv_buf_append(out, hdr, 2);
        for (uint32_t j = 0; j < d->k && e == DRV_OK; j++) {
            e = tsc_put_uvarint(out, d->s[j].n);
            if (e == DRV_OK && d->s[j].n)
                e = drv_buf_append(out, d->s[j].p, d->s[j].n);
        }
        if (e == DRV_OK && width) {
            bitw bw;
            bw_init(&bw, out);
            for (uint32_t i = 0; i < n; i++)
                bw_put(&bw, (uint64_t)dict_index(d, v[i]), width);
            e = bw_finish(&bw);
        }
        goto out_free;
    }
    uint8_t mode = STR_PLAIN;
    e = drv_buf_append(out, &mode, 1);
    for (uint32_t i = 0; i < n && e == DRV_OK; i++) {
        e = tsc_put_uvarint(out, v[i].n);
        if (e == DRV_OK && v[i].n)
            e = drv_buf_append(out, v[i].p, v[i].n);
    }
out_free:
    drv_free(d);
    return e;
}

/* One length-prefixed string at *pos. */
static bool get_str(const uint8_t *in, size_t len, size_t *pos, drv_span *s)
{
    uint64_t n;
    if (!tsc_get_uvarint(in, len, pos, &n) || n > len - *pos)
        return false;
    s->p = (const char *)in + *pos;
    s->n = (size_t)n;
    *pos += (size_t)n;
    return true;
}

drv_err tsc_decode_str(const uint8_t *in, size_t len, uint32_t n, drv_span *out, size_t *used)
{
    if (n < 1 || n > TSC_MAX_BLOCK_SAMPLES || len < 1)
        return DRV_CORRUPT;
    size_t pos = 1;
    if (in[0] == STR_PLAIN) {
        for (uint32_t i = 0; i < n; i++)
            if (!get_str(in, len, &pos, &out[i]))
                return DRV_CORRUPT;
        *used = pos;
        return DRV_OK;
    }
    if (in[0] != STR_DICT || len < 2)
        return DRV_CORRUPT;
    drv_span dict[DICT_MAX];
    uint32_t k = (uint32_t)in[1] + 1;
    pos = 2;
    for (uint32_t j = 0; j < k; j++)
        if (!get_str(in, len, &pos, &dict[j]))
            return DRV_CORRUPT;
    unsigned width = bitlen(k - 1);
    size_t bytes = ((size_t)n * width + 7) / 8;
    if (bytes > len - pos)
        return DRV_CORRUPT;
    uint64_t buf[CHUNK];
    for (uint32_t at = 0; at < n;) {
        uint32_t c = n - at < CHUNK ? n - at : CHUNK;
        unpack(in + pos, len - pos, width, at, c, buf);
        for (uint32_t j = 0; j < c; j++) {
            if (buf[j] >= k)
                return DRV_CORRUPT;
            out[at + j] = dict[buf[j]];
        }
        at += c;
    }
    *used = pos + bytes;
    return DRV_OK;
}
