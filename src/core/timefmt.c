/* timefmt.c — see timefmt.h.  Civil-date arithmetic after H. Hinnant's
 * days_from_civil (proleptic Gregorian, any year 0000–9999). */
#include "core/timefmt.h"

#include <stdio.h>

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *p, size_t n, size_t at, size_t count, unsigned *out)
{
    if (at + count > n)
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < count; i++) {
        char c = p[at + i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (unsigned)(c - '0');
    }
    *out = v;
    return true;
}

static bool parse_int(const char *p, size_t n, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (n > 0 && p[0] == '-') {
        neg = true;
        i = 1;
    }
    if (i == n || n - i > 18)
        return false;
    int64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (p[i] - '0');
    }
    *out = neg ? -v : v;
    return true;
}

bool drv_parse_time_ms(const char *p, size_t n, int64_t *out)
{
    if (parse_int(p, n, out))
        return true;
    unsigned y, mo, d, h, mi, s;
    if (!digits(p, n, 0, 4, &y) || n < 20 || p[4] != '-' || !digits(p, n, 5, 2, &mo) ||
        p[7] != '-' || !digits(p, n, 8, 2, &d) || (p[10] != 'T' && p[10] != 't') ||
        !digits(p, n, 11, 2, &h) || p[13] != ':' || !digits(p, n, 14, 2, &mi) || p[16] != ':' ||
        !digits(p, n, 17, 2, &s))
        return false;
    static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || s > 60)
        return false;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return false;
    size_t i = 19;
    int64_t ms = 0;
    if (i < n && p[i] == '.') {
        size_t k = 0;
        for (i++; i < n && p[i] >= '0' && p[i] <= '9'; i++, k++) {
            if (k >= 9)
                return false;
            if (k < 3)
                ms = ms * 10 + (p[i] - '0');
        }
        if (k == 0)
            return false;
        for (; k < 3; k++)
            ms *= 10;
    }
    int64_t off = 0;
    if (i < n && (p[i] == 'Z' || p[i] == 'z')) {
        i++;
    } else if (i < n && (p[i] == '+' || p[i] == '-')) {
        unsigned oh, om;
        if (!digits(p, n, i + 1, 2, &oh) || i + 3 >= n || p[i + 3] != ':' ||
            !digits(p, n, i + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        off = (int64_t)(oh * 60 + om) * 60000 * (p[i] == '+' ? 1 : -1);
        i += 6;
    } else {
        return false;
    }
    if (i != n)
        return false;
    int64_t days = days_from_civil(y, mo, d);
    *out = ((days * 24 + h) * 60 + mi) * 60000 + (int64_t)(s > 59 ? 59 : s) * 1000 + ms - off;
    return true;
}

size_t drv_format_time_ms(int64_t ms, char *buf, size_t cap)
{
    int64_t days = ms / 86400000, rem = ms % 86400000;
    if (rem < 0) {
        rem += 86400000;
        days--;
    }
    /* civil_from_days */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = (int64_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    int n = snprintf(buf, cap, "%04lld-%02u-%02uT%02u:%02u:%02u.%03uZ", (long long)y, m, d,
                     (unsigned)(rem / 3600000), (unsigned)(rem / 60000 % 60),
                     (unsigned)(rem / 1000 % 60), (unsigned)(rem % 1000));
    return n < 0 ? 0 : (size_t)n;
}
