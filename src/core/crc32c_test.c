/* crc32c_test.c — known answers (RFC 3720 B.4) and piecewise updates. */
#include <string.h>

#include "core/crc32c.h"
#include "core/test.h"

int main(void)
{
    uint8_t zeros[32] = {0}, ones[32], inc[32];
    memset(ones, 0xFF, sizeof(ones));
    for (int i = 0; i < 32; i++)
        inc[i] = (uint8_t)i;
    CHECK(drv_crc32c(zeros, 32) == 0x8A9136AAu);
    CHECK(drv_crc32c(ones, 32) == 0x62A8AB43u);
    CHECK(drv_crc32c(inc, 32) == 0x46DD794Eu);
    CHECK(drv_crc32c("123456789", 9) == 0xE3069283u);
    CHECK(drv_crc32c("", 0) == 0);
    for (size_t cut = 0; cut <= 32; cut++)
        CHECK_CASE(drv_crc32c_update(drv_crc32c(inc, cut), inc + cut, 32 - cut) ==
                       drv_crc32c(inc, 32),
                   "piecewise");
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
