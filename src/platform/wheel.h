/*
 * wheel.h — a hashed timer wheel with 100 ms resolution.
 *
 * Timers are embedded in their owners (drv_timer), armed with a delay and
 * fired from drv_wheel_run.  Start, stop and run are O(1) per timer (a timer
 * further away than one revolution stays in its slot until due).  A wheel is
 * not thread-safe: each loop has one, and the broker's session timers live
 * in a wheel guarded by the broker lock.  A callback may re-arm or stop any
 * timer of the same wheel, itself included.
 */
#ifndef DRV_PLATFORM_WHEEL_H
#define DRV_PLATFORM_WHEEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DRV_WHEEL_SLOTS 1024
#define DRV_WHEEL_TICK_MS 100

typedef void (*drv_timer_cb)(void *ud);

/* A one-shot timer; owned and embedded by the caller, zero-initialised. */
typedef struct drv_timer {
    struct drv_timer *next, *prev; /* wheel slot list; NULL when not armed */
    uint64_t due_ms;               /* monotonic time it fires at */
    drv_timer_cb cb;               /* called once when due */
    void *ud;                      /* passed to cb */
} drv_timer;

/* Armed: linked into a wheel (or into the list of timers firing now). */
static inline bool drv_timer_armed(const drv_timer *t)
{
    return t->next != NULL;
}

typedef struct drv_wheel {
    uint64_t now_ms;                  /* latest time given to drv_wheel_run */
    uint64_t pos_ms;                  /* time up to which slots were processed */
    drv_timer slots[DRV_WHEEL_SLOTS]; /* sentinel heads of circular lists */
} drv_wheel;

void drv_wheel_init(drv_wheel *w, uint64_t now_ms);
/* Arm (or re-arm) t to fire `ms` after the wheel's current time. */
void drv_wheel_start(drv_wheel *w, drv_timer *t, uint64_t ms, drv_timer_cb cb, void *ud);
void drv_wheel_stop(drv_timer *t);
/* Advance to now_ms and fire every due timer. */
void drv_wheel_run(drv_wheel *w, uint64_t now_ms);

#endif
