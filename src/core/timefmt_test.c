/* timefmt_test.c — RFC 3339 and integer times, both ways. */
#include <string.h>

#include "core/test.h"
#include "core/timefmt.h"

static bool parse(const char *s, int64_t *v)
{
    return drv_parse_time_ms(s, strlen(s), v);
}

int main(void)
{
    static const struct {
        const char *in;
        int64_t want;
    } ok[] = {
        {"1767225600000", 1767225600000},
        {"-5", -5},
        {"0", 0},
        {"2026-01-01T00:00:00Z", 1767225600000},
        {"2026-01-01T00:00:00.5Z", 1767225600500},
        {"2026-01-01T00:00:00.123456789Z", 1767225600123},
        {"2026-01-01t01:00:00+01:00", 1767225600000},
        {"2025-12-31T23:30:00-00:30", 1767225600000},
        {"1970-01-01T00:00:00Z", 0},
        {"2024-02-29T12:00:00Z", 1709208000000},
        {"1969-12-31T23:59:59.999Z", -1},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = 0;
        CHECK_CASE(parse(ok[i].in, &v) && v == ok[i].want, ok[i].in);
    }
    static const char *bad[] = {"",
                                "-",
                                "12a",
                                "2026-01-01",
                                "2026-01-01T00:00:00",
                                "2026-13-01T00:00:00Z",
                                "2026-02-30T00:00:00Z",
                                "2025-02-29T00:00:00Z",
                                "2026-01-01T24:00:00Z",
                                "2026-01-01T00:00:00.Z",
                                "2026-01-01T00:00:00Zjunk",
                                "2026-01-01T00:00:00+1:00",
                                "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v;
        CHECK_CASE(!parse(bad[i], &v), bad[i]);
    }
    char buf[40];
    drv_format_time_ms(1767225600123, buf, sizeof(buf));
    CHECK(strcmp(buf, "2026-01-01T00:00:00.123Z") == 0);
    drv_format_time_ms(-1, buf, sizeof(buf));
    CHECK(strcmp(buf, "1969-12-31T23:59:59.999Z") == 0);
    for (int64_t t = -100000000000; t < 4000000000000; t += 7777777777) {
        int64_t back;
        size_t n = drv_format_time_ms(t, buf, sizeof(buf));
        CHECK_CASE(drv_parse_time_ms(buf, n, &back) && back == t, buf);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
