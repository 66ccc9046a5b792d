/* loop.c — epoll event loop with a hashed timer wheel; see loop.h. */
#include "platform/loop.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "core/alloc.h"
#include "platform/clock.h"
#include "platform/net.h"

#define TICK_MS DRV_WHEEL_TICK_MS
#define MAX_EVENTS 256

struct drv_loop {
    int epfd;
    bool stop;
    uint64_t now_ms; /* monotonic time cached at the start of the turn */
    drv_wheel wheel; /* this loop's timers */
    bool poked;      /* the next epoll_wait must not sleep */
    void (*turn_end)(void *ud);
    void *turn_end_ud;
};

drv_err drv_loop_new(drv_loop **out)
{
    drv_loop *loop = drv_calloc(1, sizeof(*loop));
    if (!loop)
        return DRV_NOMEM;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        drv_err e = drv_err_from_errno(errno);
        drv_free(loop);
        return e;
    }
    loop->now_ms = drv_mono_ms();
    drv_wheel_init(&loop->wheel, loop->now_ms);
    *out = loop;
    return DRV_OK;
}

void drv_loop_free(drv_loop *loop)
{
    if (!loop)
        return;
    close(loop->epfd);
    drv_free(loop);
}

static uint32_t to_epoll(uint32_t ev)
{
    return (ev & DRV_EV_READ ? EPOLLIN : 0) | (ev & DRV_EV_WRITE ? EPOLLOUT : 0);
}

drv_err drv_loop_add(drv_loop *loop, drv_io *io, uint32_t events)
{
    struct epoll_event e = {.events = to_epoll(events), .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, io->fd, &e) < 0)
        return drv_err_from_errno(errno);
    io->events = events;
    return DRV_OK;
}

drv_err drv_loop_mod(drv_loop *loop, drv_io *io, uint32_t events)
{
    if (io->events == events)
        return DRV_OK;
    struct epoll_event e = {.events = to_epoll(events), .data.ptr = io};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &e) < 0)
        return drv_err_from_errno(errno);
    io->events = events;
    return DRV_OK;
}

void drv_loop_del(drv_loop *loop, drv_io *io)
{
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->events = 0;
}

void drv_timer_stop(drv_loop *loop, drv_timer *t)
{
    (void)loop;
    drv_wheel_stop(t);
}

void drv_timer_start(drv_loop *loop, drv_timer *t, uint64_t ms, drv_timer_cb cb, void *ud)
{
    drv_wheel_start(&loop->wheel, t, ms, cb, ud);
}

void drv_loop_set_turn_end(drv_loop *loop, void (*fn)(void *ud), void *ud)
{
    loop->turn_end = fn;
    loop->turn_end_ud = ud;
}

void drv_loop_stop(drv_loop *loop)
{
    loop->stop = true;
}

void drv_loop_poke(drv_loop *loop)
{
    loop->poked = true;
}

uint64_t drv_loop_now(const drv_loop *loop)
{
    return loop->now_ms;
}

drv_err drv_loop_run(drv_loop *loop, bool handle_signals)
{
    drv_io sig_io = {.fd = -1};
    if (handle_signals) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        sig_io.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
        if (sig_io.fd < 0)
            return drv_err_from_errno(errno);
        drv_loop_add(loop, &sig_io, DRV_EV_READ);
    }
    struct epoll_event events[MAX_EVENTS];
    while (!loop->stop) {
        int timeout = loop->poked ? 0 : TICK_MS;
        loop->poked = false;
        int n = epoll_wait(loop->epfd, events, MAX_EVENTS, timeout);
        loop->now_ms = drv_mono_ms();
        for (int i = 0; i < n; i++) {
            drv_io *io = events[i].data.ptr;
            if (io == &sig_io) {
                loop->stop = true;
                continue;
            }
            uint32_t ev = 0;
            if (events[i].events & EPOLLIN)
                ev |= DRV_EV_READ;
            if (events[i].events & EPOLLOUT)
                ev |= DRV_EV_WRITE;
            if (events[i].events & (EPOLLERR | EPOLLHUP))
                ev |= DRV_EV_ERROR | DRV_EV_READ;
            io->cb(io->ud, ev);
        }
        drv_wheel_run(&loop->wheel, loop->now_ms);
        /* Only work queued by the turn-end hook itself needs the next wait to be short. */
        loop->poked = false;
        if (loop->turn_end)
            loop->turn_end(loop->turn_end_ud);
    }
    if (sig_io.fd >= 0) {
        drv_loop_del(loop, &sig_io);
        close(sig_io.fd);
    }
    return DRV_OK;
}
