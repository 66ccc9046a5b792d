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

#define WHEEL_SLOTS 1024
#define TICK_MS 100
#define MAX_EVENTS 256

struct drv_loop {
    int epfd;
    bool stop;
    uint64_t now_ms;
    uint64_t wheel_pos_ms;        /* time up to which the wheel has been processed */
    drv_timer wheel[WHEEL_SLOTS]; /* sentinel heads of circular lists */
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
    for (int i = 0; i < WHEEL_SLOTS; i++)
        loop->wheel[i].next = loop->wheel[i].prev = &loop->wheel[i];
    loop->now_ms = drv_mono_ms();
    loop->wheel_pos_ms = loop->now_ms;
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

static void unlink_timer(drv_timer *t)
{
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->next = t->prev = NULL;
    t->armed = false;
}

void drv_timer_stop(drv_loop *loop, drv_timer *t)
{
    (void)loop;
    if (t->armed)
        unlink_timer(t);
}

void drv_timer_start(drv_loop *loop, drv_timer *t, uint64_t ms, drv_timer_cb cb, void *ud)
{
    if (t->armed)
        unlink_timer(t);
    t->due_ms = loop->now_ms + ms;
    t->cb = cb;
    t->ud = ud;
    /* A timer due before the processed position goes in the next slot processed. */
    uint64_t slot_time = t->due_ms > loop->wheel_pos_ms ? t->due_ms : loop->wheel_pos_ms + TICK_MS;
    drv_timer *head = &loop->wheel[(slot_time / TICK_MS) % WHEEL_SLOTS];
    t->next = head;
    t->prev = head->prev;
    head->prev->next = t;
    head->prev = t;
    t->armed = true;
}

static void run_timers(drv_loop *loop)
{
    while (loop->wheel_pos_ms / TICK_MS <= loop->now_ms / TICK_MS) {
        drv_timer *head = &loop->wheel[(loop->wheel_pos_ms / TICK_MS) % WHEEL_SLOTS];
        /* Detach the due timers first so callbacks can re-arm freely. */
        drv_timer due = {0};
        due.next = due.prev = &due;
        for (drv_timer *t = head->next, *n; t != head; t = n) {
            n = t->next;
            if (t->due_ms <= loop->now_ms) {
                unlink_timer(t);
                t->armed = true;
                t->next = &due;
                t->prev = due.prev;
                due.prev->next = t;
                due.prev = t;
            }
        }
        while (due.next != &due) {
            drv_timer *t = due.next;
            unlink_timer(t);
            t->cb(t->ud);
        }
        if (loop->wheel_pos_ms / TICK_MS == loop->now_ms / TICK_MS)
            break;
        loop->wheel_pos_ms += TICK_MS;
    }
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
        int timeout = TICK_MS;
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
        run_timers(loop);
        if (loop->turn_end)
            loop->turn_end(loop->turn_end_ud);
    }
    if (sig_io.fd >= 0) {
        drv_loop_del(loop, &sig_io);
        close(sig_io.fd);
    }
    return DRV_OK;
}
