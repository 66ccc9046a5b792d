/*
 * bench_sys.c — the operating-system calls `drover bench` needs that
 * src/platform does not offer: outgoing non-blocking connects, a bare epoll
 * instance (drv_loop's 100 ms timer tick is too coarse for pacing), the
 * file-descriptor limit, another process's CPU time and RSS from /proc, our
 * own CPU time, sleeping and signal flags.
 *
 * STYLE.md puts sockets, epoll, clocks and errno in src/platform; this file
 * is the one place in src/bench that touches them, so moving these
 * functions into src/platform later changes no caller.  Reads and writes
 * on sockets already go through platform/net.h, clocks through
 * platform/clock.h and /proc files through platform/fs.h.
 */
#include "bench/bench_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "platform/fs.h"
#include "platform/loop.h"
#include "platform/net.h"

struct bench_poll {
    int epfd;                /* the epoll descriptor */
    uint32_t max;            /* capacity of evs */
    struct epoll_event *evs; /* filled by epoll_wait */
};

static volatile sig_atomic_t interrupted;

drv_err bench_sys_resolve(const char *host, uint16_t port, bench_addr *out)
{
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, portstr, &hints, &res) != 0 || !res)
        return DRV_INVAL;
    drv_err err = DRV_INVAL;
    if (res->ai_addrlen <= sizeof(out->raw)) {
        memset(out, 0, sizeof(*out));
        memcpy(out->raw, res->ai_addr, res->ai_addrlen);
        out->len = (uint32_t)res->ai_addrlen;
        err = DRV_OK;
    }
    freeaddrinfo(res);
    return err;
}

drv_err bench_sys_connect(const bench_addr *a, int *fd_out, bool *done)
{
    const struct sockaddr *sa = (const struct sockaddr *)a->raw;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return drv_err_from_errno(errno);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    drv_err err = DRV_OK;
    *done = true;
    if (connect(fd, sa, (socklen_t)a->len) < 0) {
        if (errno == EINPROGRESS) {
            *done = false;
        } else {
            err = drv_err_from_errno(errno);
            goto out_close;
        }
    }
    *fd_out = fd;
    return DRV_OK;
out_close:
    close(fd);
    return err == DRV_AGAIN ? DRV_IO : err;
}

drv_err bench_sys_connect_result(int fd)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return drv_err_from_errno(errno);
    if (soerr == ECONNREFUSED)
        return DRV_CLOSED;
    return soerr ? drv_err_from_errno(soerr) : DRV_OK;
}

drv_err bench_sys_raise_nofile(uint64_t *limit)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return drv_err_from_errno(errno);
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return drv_err_from_errno(errno);
    }
    *limit = (uint64_t)rl.rlim_cur;
    return DRV_OK;
}

drv_err bench_poll_new(uint32_t max_events, bench_poll **out)
{
    drv_err err = DRV_NOMEM;
    bench_poll *p = drv_calloc(1, sizeof(*p));
    if (!p)
        goto out;
    p->evs = drv_calloc(max_events, sizeof(*p->evs));
    if (!p->evs)
        goto out_free;
    p->max = max_events;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        err = drv_err_from_errno(errno);
        goto out_free_evs;
    }
    *out = p;
    return DRV_OK;
out_free_evs:
    drv_free(p->evs);
out_free:
    drv_free(p);
out:
    return err;
}

void bench_poll_free(bench_poll *p)
{
    if (!p)
        return;
    close(p->epfd);
    drv_free(p->evs);
    drv_free(p);
}

static uint32_t to_epoll(uint32_t ev)
{
    return (ev & DRV_EV_READ ? EPOLLIN : 0u) | (ev & DRV_EV_WRITE ? EPOLLOUT : 0u);
}

drv_err bench_poll_add(bench_poll *p, int fd, uint32_t events, void *ptr)
{
    struct epoll_event e = {.events = to_epoll(events), .data.ptr = ptr};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &e) < 0)
        return drv_err_from_errno(errno);
    return DRV_OK;
}

drv_err bench_poll_mod(bench_poll *p, int fd, uint32_t events, void *ptr)
{
    struct epoll_event e = {.events = to_epoll(events), .data.ptr = ptr};
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &e) < 0)
        return drv_err_from_errno(errno);
    return DRV_OK;
}

void bench_poll_del(bench_poll *p, int fd)
{
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
}

int bench_poll_wait(bench_poll *p, bench_event *out, int timeout_ms)
{
    int n = epoll_wait(p->epfd, p->evs, (int)p->max, timeout_ms);
    if (n < 0)
        return 0;
    for (int i = 0; i < n; i++) {
        uint32_t e = p->evs[i].events, ev = 0;
        if (e & EPOLLIN)
            ev |= DRV_EV_READ;
        if (e & EPOLLOUT)
            ev |= DRV_EV_WRITE;
        if (e & (EPOLLERR | EPOLLHUP))
            ev |= DRV_EV_ERROR | DRV_EV_READ;
        out[i].ptr = p->evs[i].data.ptr;
        out[i].events = ev;
    }
    return n;
}

/* Read a small /proc file into b (capped), NUL-terminated. */
static drv_err read_proc(int pid, const char *name, drv_buf *b)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/%s", pid, name);
    drv_err err = drv_file_read_all(path, b);
    if (err)
        return err;
    return drv_buf_append(b, "", 1);
}

drv_err bench_sys_proc_cpu_ns(int pid, uint64_t *ns)
{
    drv_buf b;
    drv_buf_init(&b, 1u << 17);
    drv_err err = read_proc(pid, "stat", &b);
    if (err)
        goto out;
    /* The command name may hold spaces and ')': fields restart after the last ')'. */
    err = DRV_CORRUPT;
    const char *p = strrchr((const char *)b.data, ')');
    if (!p)
        goto out;
    p++;
    /* After ')' come field 3 (state) ... field 14 (utime), field 15 (stime). */
    for (int field = 3; field < 14; field++) {
        p = strchr(p + 1, ' ');
        if (!p)
            goto out;
    }
    char *end;
    errno = 0;
    unsigned long long utime = strtoull(p, &end, 10);
    unsigned long long stime = strtoull(end, &end, 10);
    if (errno)
        goto out;
    long tck = sysconf(_SC_CLK_TCK);
    if (tck <= 0)
        goto out;
    *ns = (uint64_t)(utime + stime) * (1000000000u / (uint64_t)tck);
    err = DRV_OK;
out:
    drv_buf_free(&b);
    return err;
}

drv_err bench_sys_proc_rss(int pid, uint64_t *bytes)
{
    drv_buf b;
    drv_buf_init(&b, 1u << 17);
    drv_err err = read_proc(pid, "status", &b);
    if (err)
        goto out;
    err = DRV_CORRUPT;
    const char *p = strstr((const char *)b.data, "\nVmRSS:");
    if (!p)
        goto out;
    char *end;
    errno = 0;
    unsigned long long kb = strtoull(p + 7, &end, 10);
    if (errno || end == p + 7)
        goto out;
    *bytes = (uint64_t)kb * 1024u;
    err = DRV_OK;
out:
    drv_buf_free(&b);
    return err;
}

uint64_t bench_sys_self_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_sys_sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u),
                          .tv_nsec = (long)(ns % 1000000000u)};
    nanosleep(&ts, NULL);
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

void bench_sys_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

bool bench_sys_interrupted(void)
{
    return interrupted != 0;
}

uint32_t bench_sys_ncpu(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (uint32_t)n : 1u;
}
