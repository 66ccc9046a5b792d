/*
 * num_test.c — unit tests for number parsing and formatting (src/core/num.c):
 * drv_parse_i64 and drv_parse_double tables (grammar, limits, overflow,
 * -0, subnormals, halfway cases, long inputs), drv_parse_double against
 * strtod on random decimals of 1..20 digits (the exact fast path and the
 * strtod path must agree to the bit), drv_format_double tables,
 * format-then-parse round trips of random bit patterns, and
 * drv_format_double against the documented rule written with snprintf.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/num.h"

#include "core/test.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

/* xorshift64*: reproducible test data. */
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717u;
}

static bool same_bits(double a, double b)
{
    return memcmp(&a, &b, sizeof(a)) == 0;
}

static void test_parse_i64(void)
{
    static const struct {
        const char *in;
        bool ok;
        int64_t want;
    } cases[] = {
        {"0", true, 0},
        {"-0", true, 0},
        {"+0", true, 0},
        {"7", true, 7},
        {"007", true, 7},
        {"-42", true, -42},
        {"+42", true, 42},
        {"9223372036854775807", true, INT64_MAX},
        {"-9223372036854775808", true, INT64_MIN},
        {"9223372036854775808", false, 0},
        {"-9223372036854775809", false, 0},
        {"99999999999999999999", false, 0},
        {"", false, 0},
        {"-", false, 0},
        {"+", false, 0},
        {" 1", false, 0},
        {"1 ", false, 0},
        {"1.0", false, 0},
        {"1e3", false, 0},
        {"0x10", false, 0},
        {"--1", false, 0},
        {"1-", false, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = 12345;
        bool ok = drv_parse_i64(cases[i].in, strlen(cases[i].in), &v);
        CHECK_CASE(ok == cases[i].ok, cases[i].in);
        CHECK_CASE(v == (ok ? cases[i].want : 12345), cases[i].in);
    }
    /* The length bounds the read: "12" of "123". */
    int64_t v;
    CHECK(drv_parse_i64("123", 2, &v) && v == 12);
    CHECK(!drv_parse_i64(NULL, 0, &v));
}

static void test_parse_double_table(void)
{
    static const struct {
        const char *in;
        bool ok;
        double want;
    } cases[] = {
        {"0", true, 0.0},
        {"-0", true, -0.0},
        {"+0", true, 0.0},
        {"-0.0", true, -0.0},
        {"0e999999999", true, 0.0},
        {"21.5", true, 21.5},
        {"+21.5", true, 21.5},
        {"-21.5", true, -21.5},
        {"0.1", true, 0.1},
        {"1e22", true, 1e22},
        {"1e23", true, 1e23},
        {"12e30", true, 12e30},
        {"1E-5", true, 1e-5},
        {"1e+5", true, 1e5},
        {"123456789012345678", true, 123456789012345678.0},
        {"9007199254740993", true, 9007199254740992.0}, /* halfway: ties to even */
        {"9007199254740995", true, 9007199254740996.0},
        {"1.7976931348623157e308", true, 1.7976931348623157e308},
        {"2.2250738585072014e-308", true, 2.2250738585072014e-308},
        {"4.9406564584124654e-324", true, 4.9406564584124654e-324},
        {"2e-324", true, 0.0}, /* below half the smallest subnormal */
        {"1e400", true, INFINITY},
        {"-1e400", true, -INFINITY},
        {"0.000001", true, 1e-6},
        {"100000000000000000000000", true, 1e23},
        {"3.14159265358979323846264338327950288", true, 3.14159265358979323846},
        /* Not JSON numbers. */
        {"", false, 0},
        {"-", false, 0},
        {"+", false, 0},
        {".5", false, 0},
        {"5.", false, 0},
        {"01", false, 0},
        {"-01", false, 0},
        {"1e", false, 0},
        {"1e+", false, 0},
        {"1.e5", false, 0},
        {"nan", false, 0},
        {"inf", false, 0},
        {"-inf", false, 0},
        {"infinity", false, 0},
        {"0x1p3", false, 0},
        {" 1", false, 0},
        {"1 ", false, 0},
        {"1,5", false, 0},
        {"++1", false, 0},
        {"+-1", false, 0},
        {"1e5.5", false, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        double v = 42.0;
        bool ok = drv_parse_double(cases[i].in, strlen(cases[i].in), &v);
        CHECK_CASE(ok == cases[i].ok, cases[i].in);
        CHECK_CASE(same_bits(v, ok ? cases[i].want : 42.0), cases[i].in);
    }
    /* The length bounds the read: "1.5" of "1.55", nothing at or past p[n]. */
    double d;
    CHECK(drv_parse_double("1.55", 3, &d) && d == 1.5);
    char *heap = malloc(3);
    memcpy(heap, "2.5", 3);
    CHECK(drv_parse_double(heap, 3, &d) && d == 2.5); /* ASan: no read of heap[3] */
    free(heap);
    CHECK(!drv_parse_double(NULL, 0, &d));

    /* Long inputs: up to DRV_NUM_MAX_TEXT through strtod, longer refused. */
    static char big[DRV_NUM_MAX_TEXT + 2];
    memset(big, '0', sizeof(big));
    big[0] = '1';
    big[1] = '.';
    CHECK(drv_parse_double(big, DRV_NUM_MAX_TEXT, &d) && d == 1.0);
    CHECK(!drv_parse_double(big, DRV_NUM_MAX_TEXT + 1, &d));
    /* A halfway case decided by a digit far to the right. */
    char half[200];
    int n = snprintf(half, sizeof(half), "9007199254740993.%0100d1", 0);
    CHECK(drv_parse_double(half, (size_t)n, &d) && d == 9007199254740994.0);
    n = snprintf(half, sizeof(half), "9007199254740993.%0100d", 0);
    CHECK(drv_parse_double(half, (size_t)n, &d) && d == 9007199254740992.0);
}

/* drv_parse_double agrees with strtod on random decimals: both the fast and the slow path. */
static void test_parse_double_vs_strtod(void)
{
    int bad = 0, fast_candidates = 0;
    for (int i = 0; i < 200000; i++) {
        char buf[64];
        int ndig = 1 + (int)(rnd() % 20);
        int pos = 0;
        if (rnd() % 2)
            buf[pos++] = '-';
        char digits[24];
        for (int k = 0; k < ndig; k++)
            digits[k] = (char)('0' + rnd() % 10);
        if (digits[0] == '0' && ndig > 1)
            digits[0] = '1';
        int point = (int)(rnd() % (unsigned)(ndig + 1)); /* digits before the '.' */
        if (point == 0) {
            buf[pos++] = '0';
            buf[pos++] = '.';
            memcpy(buf + pos, digits, (size_t)ndig);
            pos += ndig;
        } else {
            memcpy(buf + pos, digits, (size_t)point);
            pos += point;
            if (point < ndig) {
                buf[pos++] = '.';
                memcpy(buf + pos, digits + point, (size_t)(ndig - point));
                pos += ndig - point;
            }
        }
        int range = (i % 4 == 0) ? 700 : 30; /* mostly near the exact range, some far */
        int exp = (int)(rnd() % (unsigned)(2 * range + 1)) - range;
        if (rnd() % 3)
            pos += snprintf(buf + pos, sizeof(buf) - (size_t)pos, "e%d", exp);
        buf[pos] = '\0';
        if (ndig <= 15)
            fast_candidates++;
        double got, want = strtod(buf, NULL);
        if (!drv_parse_double(buf, (size_t)pos, &got) || !same_bits(got, want)) {
            if (bad++ < 5)
                fprintf(stderr, "mismatch on %s: got %.17g want %.17g\n", buf, got, want);
        }
    }
    CHECK(bad == 0);
    CHECK(fast_candidates > 50000);
}

static void test_format_table(void)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0.0, "0"},
        {-0.0, "-0"},
        {21.0, "21"},
        {-21.0, "-21"},
        {21.5, "21.5"},
        {0.1, "0.1"},
        {1.0 / 3.0, "0.3333333333333333"},
        {100.0, "100"},
        {1e15, "1000000000000000"},
        {-1e15, "-1000000000000000"},
        {1e16, "1e16"},
        {1e20, "1e20"},
        {123456789012345678.0, "1.2345678901234568e17"},
        {1e-7, "1e-7"},
        {1.5e-7, "1.5e-7"},
        {0.000123, "0.000123"},
        {1.7976931348623157e308, "1.7976931348623157e308"},
        {-2.2250738585072014e-308, "-2.2250738585072014e-308"},
        {4.9406564584124654e-324, "4.94065645841247e-324"},
        {9007199254740993.0, "9007199254740992"},
        {0.30000000000000004, "0.30000000000000004"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[DRV_NUM_FORMAT_CAP];
        int n = drv_format_double(cases[i].v, buf);
        CHECK_CASE(n == (int)strlen(cases[i].want) && strcmp(buf, cases[i].want) == 0,
                   cases[i].want);
        if (strcmp(buf, cases[i].want) != 0)
            fprintf(stderr, "  got \"%s\"\n", buf);
    }
    char buf[DRV_NUM_FORMAT_CAP];
    CHECK(drv_format_double(NAN, buf) == 0 && buf[0] == '\0');
    CHECK(drv_format_double(INFINITY, buf) == 0 && buf[0] == '\0');
    CHECK(drv_format_double(-INFINITY, buf) == 0 && buf[0] == '\0');
}

/* The text is a JSON number: what drv_parse_double reads without the '+' extension. */
static bool json_number(const char *s)
{
    return s[0] != '+' && !strchr(s, '+') && !strstr(s, "inf") && !strstr(s, "nan");
}

static void test_format_round_trip(void)
{
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        uint64_t bits = rnd();
        double v;
        if (i % 4 == 0) { /* "sensor-like" values too: short decimals */
            v = (double)(int64_t)(rnd() % 2000001 - 1000000) / (double)(1 + rnd() % 1000);
        } else {
            memcpy(&v, &bits, sizeof(v));
        }
        if (!isfinite(v))
            continue;
        char buf[DRV_NUM_FORMAT_CAP];
        int n = drv_format_double(v, buf);
        double back;
        if (n <= 0 || n >= (int)DRV_NUM_FORMAT_CAP || (size_t)n != strlen(buf) ||
            !drv_parse_double(buf, (size_t)n, &back) || !same_bits(back, v) || !json_number(buf)) {
            if (bad++ < 5)
                fprintf(stderr, "round trip of %a: \"%s\"\n", v, buf);
        }
    }
    CHECK(bad == 0);
    /* Integral values up to 1e15 never use an exponent. */
    for (int i = 0; i < 10000; i++) {
        double v = (double)(int64_t)(rnd() % 2000000000000001u) - 1e15;
        char buf[DRV_NUM_FORMAT_CAP];
        drv_format_double(v, buf);
        CHECK(strchr(buf, 'e') == NULL && strchr(buf, '.') == NULL);
    }
}

/* The documented rule, spelled out with snprintf and strtod only. */
static void ref_format(double v, char *out, size_t cap)
{
    if (v == trunc(v) && fabs(v) <= 1e15) {
        snprintf(out, cap, "%.0f", v);
        return;
    }
    char buf[64];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (same_bits(strtod(buf, NULL), v))
            break;
    }
    /* Exponent without '+' and leading zeros. */
    char *e = strchr(buf, 'e'), *o = out;
    size_t head = e ? (size_t)(e - buf) + 1 : strlen(buf);
    memcpy(o, buf, head);
    o += head;
    if (e) {
        const char *x = e + 1;
        if (*x == '-')
            *o++ = *x++;
        else if (*x == '+')
            x++;
        while (*x == '0' && x[1])
            x++;
        while (*x)
            *o++ = *x++;
    }
    *o = '\0';
}

/* drv_format_double (with its snprintf-free fast path) gives exactly the documented text. */
static void test_format_vs_reference(void)
{
    int bad = 0;
    for (int i = 0; i < 300000; i++) {
        double v;
        switch (i % 3) {
        case 0: { /* sensor-like: a few decimals */
            int64_t m = (int64_t)(rnd() % 200000001) - 100000000;
            static const double div[] = {1, 10, 100, 1000, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
            v = (double)m / div[rnd() % 10];
            break;
        }
        case 1: /* any magnitude */
            v = (double)(int64_t)rnd() * pow(10.0, (double)((int)(rnd() % 40) - 25)) / 9.2e18;
            break;
        default: {
            uint64_t bits = rnd();
            memcpy(&v, &bits, sizeof(v));
        }
        }
        if (!isfinite(v))
            continue;
        char got[DRV_NUM_FORMAT_CAP], want[64];
        drv_format_double(v, got);
        ref_format(v, want, sizeof(want));
        if (strcmp(got, want) != 0 && bad++ < 5)
            fprintf(stderr, "format %a: got \"%s\" want \"%s\"\n", v, got, want);
    }
    CHECK(bad == 0);
}

int main(void)
{
    test_parse_i64();
    test_parse_double_table();
    test_parse_double_vs_strtod();
    test_format_table();
    test_format_round_trip();
    test_format_vs_reference();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
