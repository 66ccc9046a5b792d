/* clock.c — see clock.h. */
#include "platform/clock.h"

#include <time.h>

uint64_t drv_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t drv_mono_ms(void)
{
    return drv_mono_ns() / 1000000u;
}

uint64_t drv_wall_s(void)
{
    return (uint64_t)time(NULL);
}

uint64_t drv_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
