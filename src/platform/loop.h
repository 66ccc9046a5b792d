/*
 * loop.h — the event loop: epoll for I/O, a timer wheel, and a turn-end hook.
 *
 * One loop runs on one thread and everything registered on it is touched
 * only by that thread.  A "turn" is one epoll_wait and the dispatch of what
 * it returned plus due timers; after every turn the loop calls the turn-end
 * hook, which is where the broker commits its log (group commit) and then
 * flushes every connection's output buffer (batched writes, ADR-0002).
 *
 * Timers have 100 ms resolution (keepalive, deadlines, expiry need no more).
 * A timer callback may re-arm or cancel any timer, including itself.
 */
#ifndef DRV_PLATFORM_LOOP_H
#define DRV_PLATFORM_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "platform/wheel.h"

typedef struct drv_loop drv_loop;

enum {
    DRV_EV_READ = 1u << 0,
    DRV_EV_WRITE = 1u << 1,
    DRV_EV_ERROR = 1u << 2, /* hang-up or error: the owner should read to learn which */
};

typedef void (*drv_io_cb)(void *ud, uint32_t events);

/* An fd watched by the loop; owned and embedded by the caller. */
typedef struct drv_io {
    int fd;
    uint32_t events; /* DRV_EV_READ | DRV_EV_WRITE currently requested */
    drv_io_cb cb;
    void *ud;
} drv_io;

drv_err drv_loop_new(drv_loop **out);
void drv_loop_free(drv_loop *loop);

/* Start watching io->fd for `events`. */
drv_err drv_loop_add(drv_loop *loop, drv_io *io, uint32_t events);
/* Change the watched events (no-op if unchanged). */
drv_err drv_loop_mod(drv_loop *loop, drv_io *io, uint32_t events);
/* Stop watching (before closing the fd). */
void drv_loop_del(drv_loop *loop, drv_io *io);

/* Arm (or re-arm) t to fire after `ms` milliseconds. */
void drv_timer_start(drv_loop *loop, drv_timer *t, uint64_t ms, drv_timer_cb cb, void *ud);
void drv_timer_stop(drv_loop *loop, drv_timer *t);

/* Called after each turn, before the next epoll_wait. */
void drv_loop_set_turn_end(drv_loop *loop, void (*fn)(void *ud), void *ud);

/* Run until drv_loop_stop; SIGINT/SIGTERM also stop it when handle_signals. */
drv_err drv_loop_run(drv_loop *loop, bool handle_signals);
void drv_loop_stop(drv_loop *loop);

/* Same thread: there is work for the next turn-end hook; don't sleep in epoll. */
void drv_loop_poke(drv_loop *loop);

/* Monotonic time in milliseconds, cached at the start of the turn. */
uint64_t drv_loop_now(const drv_loop *loop);

#endif
