/* clock.h — time sources, the only place that reads clocks. */
#ifndef DRV_PLATFORM_CLOCK_H
#define DRV_PLATFORM_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds (for deadlines). */
uint64_t drv_mono_ms(void);
/* Monotonic nanoseconds (for latency measurements). */
uint64_t drv_mono_ns(void);
/* Wall-clock seconds since the epoch (for persisted absolute times). */
uint64_t drv_wall_s(void);
/* Wall-clock milliseconds since the Unix epoch (telemetry receive times). */
uint64_t drv_wall_ms(void);

#endif
