/*
 * num.c — number parsing and formatting; contract in num.h.
 *
 * drv_parse_double validates the JSON grammar itself in one pass, gathering
 * up to 19 significant digits into an integer and a decimal exponent.  When
 * the significand is at most 2^53 and the power of ten at most 22 (both then
 * exact doubles), one IEEE multiply or divide gives the correctly rounded
 * result (Clinger, "How to read floating point numbers accurately", 1990);
 * that covers sensor values and CSV columns.  Everything else goes to
 * strtod on a NUL-terminated copy in a 1 KiB stack buffer (no heap: the
 * payload decoders promise not to allocate), in the C locale because the
 * server never calls setlocale.  The fast path needs doubles evaluated in
 * double precision (FLT_EVAL_METHOD 0, true on x86-64 and AArch64); where
 * that does not hold, everything takes the strtod path.
 */
#include "core/num.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
#define NUM_FAST_PATH 1
#else
#define NUM_FAST_PATH 0
#endif

bool drv_parse_i64(const char *p, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (n > 0 && (p[0] == '-' || p[0] == '+')) {
        neg = p[0] == '-';
        i = 1;
    }
    if (i == n)
        return false;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (; i < n; i++) {
        unsigned d = (unsigned)(unsigned char)p[i] - '0';
        if (d > 9)
            return false;
        /* No division per digit (imports parse millions of these): up to 18
         * digits cannot overflow; past that, check the multiply-add. */
        if (v >= UINT64_C(100000000000000000) && (v > (UINT64_MAX - d) / 10 || v * 10 + d > limit))
            return false;
        v = v * 10 + d;
    }
    /* -(2^63) has no positive int64 twin: negate v - 1, then step down. */
    *out = neg ? (v ? -(int64_t)(v - 1) - 1 : 0) : (int64_t)v;
    return true;
}

/* The exactly representable powers of ten. */
static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Correctly rounded strtod on text already validated by drv_parse_double. */
__attribute__((noinline)) static bool parse_slow(const char *p, size_t n, double *out)
{
    char buf[DRV_NUM_MAX_TEXT + 1];
    if (n > DRV_NUM_MAX_TEXT)
        return false;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end;
    double d = strtod(buf, &end); /* ERANGE is fine: ±inf, ±0 or a subnormal, as documented */
    if (end != buf + n)
        return false;
    *out = d;
    return true;
}

static inline bool is_digit(char c)
{
    return (unsigned)(unsigned char)c - '0' <= 9;
}

bool drv_parse_double(const char *p, size_t n, double *out)
{
    if (n == 0 || n > DRV_NUM_MAX_TEXT)
        return false;
    const char *s = p, *end = p + n;
    bool neg = false;
    if (s < end && (*s == '-' || *s == '+')) {
        neg = *s == '-';
        s++;
    }
    if (s == end || !is_digit(*s))
        return false;

    uint64_t sig = 0;     /* the first 19 significant digits */
    int ndig = 0;         /* significant digits in sig */
    bool inexact = false; /* digits beyond the 19th were dropped */
    int exp10 = 0;        /* value = sig * 10^exp10 (before dropped digits) */
    if (*s == '0') {
        s++;
    } else {
        for (; s < end && is_digit(*s); s++) {
            if (ndig < 19) {
                sig = sig * 10 + (unsigned)(*s - '0');
                ndig++;
            } else {
                inexact = true;
                exp10++;
            }
        }
    }
    if (s < end && *s == '.') {
        s++;
        if (s == end || !is_digit(*s))
            return false;
        for (; s < end && is_digit(*s); s++) {
            if (sig == 0 && *s == '0') {
                exp10--; /* a leading zero of the fraction */
            } else if (ndig < 19) {
                sig = sig * 10 + (unsigned)(*s - '0');
                ndig++;
                exp10--;
            } else {
                inexact = true;
            }
        }
    }
    if (s < end && (*s == 'e' || *s == 'E')) {
        s++;
        bool eneg = false;
        if (s < end && (*s == '-' || *s == '+')) {
            eneg = *s == '-';
            s++;
        }
        if (s == end || !is_digit(*s))
            return false;
        int e = 0;
        for (; s < end && is_digit(*s); s++)
            if (e < 100000) /* far past any double; keeps the int from overflowing */
                e = e * 10 + (*s - '0');
        exp10 += eneg ? -e : e;
    }
    if (s != end)
        return false;

    if (sig == 0) { /* only zeros: ±0 whatever the exponent */
        *out = neg ? -0.0 : 0.0;
        return true;
    }
#if NUM_FAST_PATH
    if (!inexact && sig <= (UINT64_C(1) << 53)) {
        double d = (double)sig; /* exact */
        if (exp10 >= 0 && exp10 <= 22) {
            d *= pow10_exact[exp10];
        } else if (exp10 < 0 && exp10 >= -22) {
            d /= pow10_exact[-exp10];
        } else if (exp10 > 22 && exp10 <= 22 + 16) {
            /* "12e30": move the excess into the significand while it stays exact. */
            uint64_t m = sig;
            for (int k = exp10 - 22; k > 0 && m <= (UINT64_C(1) << 53); k--)
                m *= 10;
            if (m > (UINT64_C(1) << 53))
                return parse_slow(p, n, out);
            d = (double)m * 1e22;
        } else {
            return parse_slow(p, n, out);
        }
        *out = neg ? -d : d;
        return true;
    }
#endif
    return parse_slow(p, n, out);
}

/* Write the digits of v (≥ 0) backwards ending at *end; return the start. */
static char *u64_digits(uint64_t v, char *end)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

/* "1.5e+07" → "1.5e7", "1e-05" → "1e-5": drop the '+' and leading zeros. */
static int tidy_exponent(char *buf, int len)
{
    char *e = memchr(buf, 'e', (size_t)len);
    if (!e)
        return len;
    char *src = e + 1, *dst = e + 1;
    if (*src == '+')
        src++;
    else if (*src == '-')
        *dst++ = *src++;
    while (*src == '0' && src[1] != '\0')
        src++;
    while (*src)
        *dst++ = *src++;
    *dst = '\0';
    return (int)(dst - buf);
}

/*
 * The shortest fixed-point text of v (1e-4 ≤ |v| < 1e15) when it has at most
 * 15 significant digits: the smallest k ≤ 9 for which r = round(v × 10^k)
 * reads back as v (r / 10^k, exactly what drv_parse_double computes for that
 * text).  At most one decimal of ≤ 15 digits reads back as a given double,
 * so this is the text "%.15g" would give, without snprintf.  0 when there
 * is none (the caller falls back to snprintf).
 */
static int format_fixed(double v, char buf[DRV_NUM_FORMAT_CAP])
{
#if NUM_FAST_PATH
    double a = fabs(v);
    if (!(a >= 1e-4 && a < 1e15))
        return 0;
    for (int k = 1; k <= 9; k++) {
        double r = round(a * pow10_exact[k]);
        if (r >= 1e15)
            return 0;
        if (r / pow10_exact[k] != a)
            continue;
        char tmp[40], *end = tmp + sizeof(tmp);
        char *s = u64_digits((uint64_t)r, end);
        while (end - s <= k) /* "15" with k = 4 → "0015" → "0.0015" */
            *--s = '0';
        int len = (int)(end - s);
        char *o = buf;
        if (v < 0)
            *o++ = '-';
        memcpy(o, s, (size_t)(len - k));
        o += len - k;
        *o++ = '.';
        memcpy(o, end - k, (size_t)k);
        o += k;
        *o = '\0';
        return (int)(o - buf);
    }
#else
    (void)v;
    (void)buf;
#endif
    return 0;
}

int drv_format_double(double v, char buf[DRV_NUM_FORMAT_CAP])
{
    buf[0] = '\0';
    if (!isfinite(v))
        return 0;
    if (fabs(v) <= 1e15 && v == trunc(v)) {
        char tmp[24], *end = tmp + sizeof(tmp);
        char *s = u64_digits((uint64_t)fabs(v), end);
        if (signbit(v))
            *--s = '-';
        int len = (int)(end - s);
        memcpy(buf, s, (size_t)len);
        buf[len] = '\0';
        return len;
    }
    int len = format_fixed(v, buf);
    if (len > 0)
        return len;
    for (int prec = 15; prec <= 17; prec++) {
        len = snprintf(buf, DRV_NUM_FORMAT_CAP, "%.*g", prec, v);
        double back;
        if (len > 0 && len < (int)DRV_NUM_FORMAT_CAP && drv_parse_double(buf, (size_t)len, &back) &&
            memcmp(&back, &v, sizeof(v)) == 0)
            break;
    }
    return tidy_exponent(buf, len);
}
