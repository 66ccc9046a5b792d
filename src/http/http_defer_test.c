/*
 * http_defer_test.c — unit tests for deferred responses and posts (http.h,
 * drv_http_defer, drv_http_complete, drv_http_post) against a live server
 * over real sockets: a request completed from a post another thread made;
 * the deferral's timeout (on_timeout answers 504, not early; one that does
 * not complete gets a 500); a client that leaves while deferred (on_gone
 * once, never on_timeout, over a socketpair and over loopback TCP, also
 * when a full input buffer has stopped the server reading);
 * pipelined requests answered after the deferred one, in order; HEAD and
 * HTTP/1.0 rules applied to the late response; completion from inside the
 * handler; a fill that streams, hands over or defers (500); a response the
 * server did not make (NULL); many posts from another thread, in order; and
 * stopping the server with a deferred request and queued posts (on_gone,
 * queued posts run at the stop, drv_http_post refused with DRV_CLOSED, nothing leaked).
 *
 * The application keeps its deferred requests in `slots`, touched only on
 * the API thread, as the REST API keeps its waiting commands: a post names a
 * slot and completes it if it is still waiting.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "http/http.h"
#include "platform/clock.h"
#include "platform/net.h"

#include "core/test.h"

#define NSLOTS 16
#define NPOSTS 2000

/* ------------------------------------------------------------------------ */
/* The application                                                           */

/* A deferred request (API thread only). */
static struct {
    drv_http_deferred *d; /* while waiting */
    bool lazy;            /* on_timeout does not complete (the server's fallback) */
} slots[NSLOTS];

/* Per slot, read by the test thread. */
static _Atomic int deferred[NSLOTS]; /* drv_http_defer succeeded */
static _Atomic int gone[NSLOTS];     /* on_gone calls */
static _Atomic int timeouts[NSLOTS]; /* on_timeout calls */
static _Atomic int completed[NSLOTS];
static _Atomic int stream_frees, takeover_frees;
static _Atomic int defer_in_fill = -1; /* 1: drv_http_defer from a fill returned NULL */

/* What a post asks for: complete `slot` with status and body. */
typedef struct result {
    int slot;
    int status;
    char body[64];
    int misuse; /* 1: the fill streams, 2: hands over, 3: defers */
} result;

static _Atomic int post_in_gone = -1; /* drv_http_post's result inside on_gone (a drv_err) */

static drv_err no_stream(void *ud, drv_buf *out)
{
    (void)ud;
    (void)out;
    return DRV_OK;
}

static void count_stream_free(void *ud)
{
    (void)ud;
    atomic_fetch_add(&stream_frees, 1);
}

static void no_takeover(void *ud, int fd, drv_stream *st, const drv_peer *peer, const uint8_t *rest,
                        size_t nrest)
{
    (void)ud, (void)fd, (void)st, (void)peer, (void)rest, (void)nrest;
}

static void count_takeover_free(void *ud)
{
    (void)ud;
    atomic_fetch_add(&takeover_frees, 1);
}

static void never_timeout(void *ud, drv_http_deferred *d)
{
    (void)ud;
    (void)d;
}

static void fill_result(void *ud, drv_http_response *resp)
{
    result *r = ud;
    resp->status = r->status;
    resp->content_type = "text/plain";
    drv_buf_append(&resp->body, r->body, strlen(r->body));
    if (r->misuse == 1) {
        resp->stream = no_stream;
        resp->stream_free = count_stream_free;
    } else if (r->misuse == 2) {
        resp->takeover = no_takeover;
        resp->takeover_free = count_takeover_free;
    } else if (r->misuse == 3) {
        drv_http_deferred *d = drv_http_defer(resp, 1000, never_timeout, NULL, NULL);
        atomic_store(&defer_in_fill, d == NULL);
    }
}

/* Post: complete the slot if it still waits (a late result is dropped). */
static void complete_post(void *ud)
{
    result *r = ud;
    if (slots[r->slot].d) {
        drv_http_deferred *d = slots[r->slot].d;
        slots[r->slot].d = NULL;
        drv_http_complete(d, fill_result, r);
        atomic_fetch_add(&completed[r->slot], 1);
    }
    drv_free(r);
}

static void on_timeout(void *ud, drv_http_deferred *d)
{
    int slot = (int)(intptr_t)ud;
    atomic_fetch_add(&timeouts[slot], 1);
    slots[slot].d = NULL;
    if (slots[slot].lazy)
        return;
    result r = {.slot = slot, .status = 504};
    snprintf(r.body, sizeof(r.body), "timeout");
    drv_http_complete(d, fill_result, &r);
}

static void on_gone(void *ud)
{
    int slot = (int)(intptr_t)ud;
    slots[slot].d = NULL;
    atomic_fetch_add(&gone[slot], 1);
}

static void gone_posts(void *ud)
{
    (void)ud;
}

/* A path's decimal tail after prefix, or -1. */
static int path_num(const drv_http_request *req, const char *prefix)
{
    size_t pl = strlen(prefix);
    if (req->path.n <= pl || memcmp(req->path.p, prefix, pl) != 0)
        return -1;
    int v = 0;
    for (size_t i = pl; i < req->path.n; i++) {
        char ch = req->path.p[i];
        if (ch < '0' || ch > '9')
            return -1;
        v = v * 10 + (ch - '0');
    }
    return v < NSLOTS ? v : -1;
}

static void app(void *ud, const drv_http_request *req, drv_http_response *resp)
{
    (void)ud;
    char buf[32];
    int slot;
    if ((slot = path_num(req, "/wait/")) >= 0) {
        uint32_t ms = 10000;
        if (drv_http_query_get(req, "timeout", buf, sizeof(buf), NULL))
            ms = (uint32_t)strtoul(buf, NULL, 10);
        slots[slot].lazy = drv_http_query_get(req, "lazy", buf, sizeof(buf), NULL);
        /* Filled in vain: a deferred request's resp is ignored. */
        resp->status = 418;
        drv_buf_append(&resp->body, "ignored", 7);
        if (drv_http_query_get(req, "stream", buf, sizeof(buf), NULL)) {
            resp->stream = no_stream;
            resp->stream_free = count_stream_free;
        }
        drv_http_deferred *d =
            drv_http_defer(resp, ms, on_timeout, on_gone, (void *)(intptr_t)slot);
        if (!d) {
            resp->status = 503;
            return;
        }
        slots[slot].d = d;
        atomic_fetch_add(&deferred[slot], 1);
        return;
    }
    if ((slot = path_num(req, "/now/")) >= 0) {
        /* Deferred and completed before the handler returns. */
        drv_http_deferred *d = drv_http_defer(resp, 10000, on_timeout, on_gone, NULL);
        result r = {.slot = slot, .status = 202};
        snprintf(r.body, sizeof(r.body), "at once");
        drv_http_complete(d, fill_result, &r);
        resp->status = 418; /* ignored as well */
        atomic_fetch_add(&completed[slot], 1);
        return;
    }
    resp->content_type = "text/plain";
    drv_buf_append(&resp->body, "hello", 5);
}

/* ------------------------------------------------------------------------ */
/* The client side (as in http_takeover_test.c)                              */

typedef struct client {
    int fd;
    char buf[65536];
    size_t len;
} client;

static client cl;

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void say(client *c, const char *s)
{
    const char *p = s;
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

/* Read more within ms; false on EOF, error or timeout. */
static bool fill(client *c, int ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (poll(&pfd, 1, ms) <= 0)
        return false;
    ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (r <= 0)
        return false;
    c->len += (size_t)r;
    c->buf[c->len] = '\0';
    return true;
}

static void drop(client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    c->buf[c->len] = '\0';
}

/* Nothing arrives within ms (and nothing is buffered). */
static bool quiet(client *c, int ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    return c->len == 0 && poll(&pfd, 1, ms) == 0;
}

/* EOF within 5 s, with nothing before it. */
static bool eof_next(client *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    char b[1];
    return c->len == 0 && poll(&pfd, 1, 5000) == 1 && read(c->fd, b, 1) == 0;
}

/*
 * One response (5 s): its head (NUL-terminated) in head, its status; the
 * body (by Content-Length, none when head_only) in body.  The response is
 * dropped from c.  0 when none arrived.
 */
static int response(client *c, char *head, size_t hcap, char *body, size_t bcap, bool head_only)
{
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4)))
        if (!fill(c, 5000))
            return 0;
    size_t hl = (size_t)(end + 4 - c->buf);
    if (hl >= hcap)
        return 0;
    memcpy(head, c->buf, hl);
    head[hl] = '\0';
    size_t bl = 0;
    const char *cl_h = strstr(head, "\r\nContent-Length: ");
    if (cl_h && !head_only)
        bl = strtoul(cl_h + 18, NULL, 10);
    if (bl >= bcap)
        return 0;
    while (c->len < hl + bl)
        if (!fill(c, 5000))
            return 0;
    memcpy(body, c->buf + hl, bl);
    body[bl] = '\0';
    drop(c, hl + bl);
    return strncmp(head, "HTTP/1.1 ", 9) == 0 ? (int)strtol(head + 9, NULL, 10) : -1;
}

/* A socketpair: the client end in c, the server end adopted. */
static void open_conn(drv_http_server *srv, client *c)
{
    int sv[2];
    c->len = 0;
    c->buf[0] = '\0';
    c->fd = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        CHECK(!"socketpair");
        return;
    }
    int fl = fcntl(sv[1], F_GETFL);
    fcntl(sv[1], F_SETFL, fl | O_NONBLOCK);
    c->fd = sv[0];
    drv_peer peer = {.loopback = true};
    drv_http_adopt(srv, sv[1], NULL, &peer, NULL, 0);
}

/* A loopback TCP connection: the client end in c, the accepted end adopted. */
static void open_tcp(drv_http_server *srv, client *c)
{
    c->len = 0;
    c->buf[0] = '\0';
    c->fd = -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = l >= 0 && bind(l, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(l, 1) == 0 &&
              getsockname(l, (struct sockaddr *)&a, &al) == 0;
    int fd = ok ? socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) : -1;
    ok = ok && fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    int s = ok ? accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC) : -1;
    if (l >= 0)
        close(l);
    CHECK(s >= 0);
    if (s < 0) {
        if (fd >= 0)
            close(fd);
        return;
    }
    c->fd = fd;
    drv_peer peer = {.loopback = true};
    drv_http_adopt(srv, s, NULL, &peer, NULL, 0);
}

static void close_conn(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Wait (5 s) until *a reaches want; true when it is exactly want. */
static bool reaches(_Atomic int *a, int want)
{
    for (int i = 0; i < 5000 && atomic_load(a) < want; i++)
        sleep_ms(1);
    return atomic_load(a) == want;
}

/* GET /hello on c answers 200 "hello". */
static bool hello_works(client *c)
{
    char head[2048], body[64];
    say(c, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    return response(c, head, sizeof(head), body, sizeof(body), false) == 200 &&
           strcmp(body, "hello") == 0;
}

/* A result for slot, as another thread would post it. */
static result *make_result(int slot, int status, const char *body)
{
    result *r = drv_calloc(1, sizeof(*r));
    r->slot = slot;
    r->status = status;
    snprintf(r->body, sizeof(r->body), "%s", body);
    return r;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

typedef struct poster {
    drv_http_server *srv;
    int slot;
    drv_err e;
} poster;

/* Another thread (the command service) has the result: post it. */
static void *post_later(void *arg)
{
    poster *p = arg;
    sleep_ms(100);
    p->e = drv_http_post(p->srv, complete_post, make_result(p->slot, 201, "done"));
    return NULL;
}

/* Defer, then complete from a post made by another thread. */
static void test_complete_from_thread(drv_http_server *srv)
{
    char head[2048], body[256];
    open_conn(srv, &cl);
    say(&cl, "GET /wait/0 HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(reaches(&deferred[0], 1));
    CHECK(quiet(&cl, 200)); /* nothing yet: not the handler's 418 either */
    poster p = {.srv = srv, .slot = 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, post_later, &p) == 0);
    pthread_join(t, NULL);
    CHECK(p.e == DRV_OK);
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 201);
    CHECK(strcmp(body, "done") == 0);
    CHECK(strstr(head, "\r\nContent-Type: text/plain\r\n") != NULL);
    CHECK(strstr(head, "\r\nContent-Length: 4\r\n") != NULL);
    CHECK(strstr(head, "Connection: close") == NULL);
    CHECK(atomic_load(&completed[0]) == 1);
    /* The connection goes on. */
    CHECK(hello_works(&cl));
    close_conn(&cl);
    sleep_ms(50);
    CHECK(atomic_load(&gone[0]) == 0 && atomic_load(&timeouts[0]) == 0);
}

/* The deadline: on_timeout answers 504, not before about the timeout. */
static void test_timeout(drv_http_server *srv)
{
    char head[2048], body[256];
    open_conn(srv, &cl);
    uint64_t t0 = drv_mono_ms();
    say(&cl, "GET /wait/1?timeout=600 HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 504);
    CHECK(drv_mono_ms() - t0 >= 300);
    CHECK(strcmp(body, "timeout") == 0);
    CHECK(atomic_load(&timeouts[1]) == 1 && atomic_load(&gone[1]) == 0);
    /* A late result finds nothing to complete. */
    CHECK(drv_http_post(srv, complete_post, make_result(1, 200, "late")) == DRV_OK);
    CHECK(hello_works(&cl));
    CHECK(quiet(&cl, 100));

    /* on_timeout that does not complete: the server answers 500 itself. */
    t0 = drv_mono_ms();
    say(&cl, "GET /wait/7?timeout=300&lazy=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 500);
    CHECK(drv_mono_ms() - t0 >= 150);
    CHECK(atomic_load(&timeouts[7]) == 1 && atomic_load(&gone[7]) == 0);
    CHECK(hello_works(&cl));

    /* An idle timeout shorter than the deferral does not cut it (see main). */
    say(&cl, "GET /wait/8?timeout=1500 HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 504);
    CHECK(atomic_load(&timeouts[8]) == 1 && atomic_load(&gone[8]) == 0);
    CHECK(hello_works(&cl));
    close_conn(&cl);
}

/* The client leaves while deferred: on_gone once; never a timeout or a completion. */
static void test_client_gone(drv_http_server *srv)
{
    /* Over a socketpair, then over TCP (a FIN). */
    for (int i = 0; i < 2; i++) {
        int slot = 2 + i * 7; /* 2, 9 */
        if (i == 0)
            open_conn(srv, &cl);
        else
            open_tcp(srv, &cl);
        say(&cl, i == 0 ? "GET /wait/2?timeout=700 HTTP/1.1\r\nHost: h\r\n\r\n"
                        : "GET /wait/9?timeout=700 HTTP/1.1\r\nHost: h\r\n\r\n");
        CHECK(reaches(&deferred[slot], 1));
        close_conn(&cl);
        CHECK(reaches(&gone[slot], 1));
        /* A result that comes later is dropped by the application. */
        CHECK(drv_http_post(srv, complete_post, make_result(slot, 200, "late")) == DRV_OK);
        sleep_ms(1000); /* past the deferral's timeout: its timer was stopped */
        CHECK(atomic_load(&gone[slot]) == 1);
        CHECK(atomic_load(&timeouts[slot]) == 0);
        CHECK(atomic_load(&completed[slot]) == 0);
    }

    /* The client shuts down its sending side only: gone too (as nginx sees it). */
    open_conn(srv, &cl);
    say(&cl, "GET /wait/10 HTTP/1.1\r\nHost: h\r\n\r\n");
    shutdown(cl.fd, SHUT_WR);
    CHECK(reaches(&gone[10], 1));
    CHECK(eof_next(&cl));
    close_conn(&cl);
}

/* The input buffer is full behind a deferred request, so the server stops
 * reading; a client that then hangs up is still seen as gone (not only at
 * the deferral's timeout, and without the hang-up spinning the loop). */
static void test_gone_full_input(void)
{
    size_t base = drv_mem_used();
    drv_http_config cfg = {.handler = app, .limits = {.max_head = 1024, .max_body = 1024}};
    drv_http_server *srv = NULL;
    CHECK(drv_http_server_start(&cfg, &srv) == DRV_OK);
    if (!srv)
        return;
    open_conn(srv, &cl);
    say(&cl, "GET /wait/13?timeout=10000 HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(reaches(&deferred[13], 1));
    /* More than the buffer's cap (max_head + max_body + DRV_HTTP_CHUNK_SLACK). */
    static char junk[128 << 10];
    memset(junk, 'x', sizeof(junk));
    int fl = fcntl(cl.fd, F_GETFL);
    fcntl(cl.fd, F_SETFL, fl | O_NONBLOCK);
    size_t sent = 0;
    for (int i = 0; i < 1000 && sent < sizeof(junk); i++) {
        ssize_t w = send(cl.fd, junk + sent, sizeof(junk) - sent, MSG_NOSIGNAL);
        if (w > 0)
            sent += (size_t)w;
        else
            sleep_ms(1);
    }
    CHECK(sent > 1024 + 1024 + DRV_HTTP_CHUNK_SLACK);
    sleep_ms(200);
    close_conn(&cl);
    CHECK(reaches(&gone[13], 1));
    CHECK(atomic_load(&timeouts[13]) == 0);
    drv_http_server_stop(srv);
    CHECK(drv_mem_used() == base);
}

/* Requests behind a deferred one wait, then are answered in order. */
static void test_pipelined(drv_http_server *srv)
{
    char head[2048], body[256];
    open_conn(srv, &cl);
    say(&cl, "GET /wait/3 HTTP/1.1\r\nHost: h\r\n\r\n"
             "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n"
             "GET /now/11 HTTP/1.1\r\nHost: h\r\n\r\n"
             "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(reaches(&deferred[3], 1));
    /* /hello waits behind /wait/3, past the request timeout (500 ms, see main). */
    CHECK(quiet(&cl, 800));
    CHECK(drv_http_post(srv, complete_post, make_result(3, 200, "first")) == DRV_OK);
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 200);
    CHECK(strcmp(body, "first") == 0);
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 200);
    CHECK(strcmp(body, "hello") == 0);
    /* Completed inside its own handler: answered in its place. */
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 202);
    CHECK(strcmp(body, "at once") == 0);
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 200);
    CHECK(strcmp(body, "hello") == 0);
    CHECK(quiet(&cl, 50));
    close_conn(&cl);
    CHECK(atomic_load(&gone[3]) == 0);
}

/* HEAD: the late response has the head GET would get, no body.  HTTP/1.0:
 * closed after it (or kept open when asked). */
static void test_request_rules(drv_http_server *srv)
{
    char head[2048], body[256];
    open_conn(srv, &cl);
    say(&cl, "HEAD /wait/4 HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(reaches(&deferred[4], 1));
    CHECK(drv_http_post(srv, complete_post, make_result(4, 200, "abcdef")) == DRV_OK);
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), true) == 200);
    CHECK(strstr(head, "\r\nContent-Length: 6\r\n") != NULL);
    CHECK(quiet(&cl, 100)); /* no body */
    CHECK(hello_works(&cl));
    close_conn(&cl);

    open_conn(srv, &cl);
    say(&cl, "GET /wait/5 HTTP/1.0\r\n\r\n");
    CHECK(reaches(&deferred[5], 1));
    CHECK(drv_http_post(srv, complete_post, make_result(5, 200, "ten")) == DRV_OK);
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 200);
    CHECK(strcmp(body, "ten") == 0);
    CHECK(strstr(head, "\r\nConnection: close\r\n") != NULL);
    CHECK(eof_next(&cl));
    close_conn(&cl);

    open_conn(srv, &cl);
    say(&cl, "GET /wait/5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(reaches(&deferred[5], 2));
    CHECK(drv_http_post(srv, complete_post, make_result(5, 200, "ten")) == DRV_OK);
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 200);
    CHECK(strstr(head, "\r\nConnection: keep-alive\r\n") != NULL);
    CHECK(hello_works(&cl));
    close_conn(&cl);
    CHECK(atomic_load(&gone[4]) == 0 && atomic_load(&gone[5]) == 0);
}

/* What a deferred request cannot do: a fill that streams, hands over or
 * defers gets 500 (its state released); the handler's own stream is
 * released; a response the server did not make cannot be deferred. */
static void test_misuse(drv_http_server *srv)
{
    char head[2048], body[256];
    int sf0 = atomic_load(&stream_frees), tf0 = atomic_load(&takeover_frees);
    open_conn(srv, &cl);
    for (int m = 1; m <= 3; m++) {
        say(&cl, "GET /wait/6 HTTP/1.1\r\nHost: h\r\n\r\n");
        CHECK(reaches(&deferred[6], m));
        result *r = make_result(6, 200, "misused");
        r->misuse = m;
        CHECK(drv_http_post(srv, complete_post, r) == DRV_OK);
        CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 500);
        CHECK(strcmp(body, "") == 0);
    }
    CHECK(atomic_load(&stream_frees) == sf0 + 1);
    CHECK(atomic_load(&takeover_frees) == tf0 + 1);
    CHECK(atomic_load(&defer_in_fill) == 1);
    CHECK(hello_works(&cl));

    /* The handler set a stream, then deferred: stream_free runs at once. */
    say(&cl, "GET /wait/6?stream=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(reaches(&deferred[6], 4));
    CHECK(reaches(&stream_frees, sf0 + 2));
    CHECK(drv_http_post(srv, complete_post, make_result(6, 200, "ok")) == DRV_OK);
    CHECK(response(&cl, head, sizeof(head), body, sizeof(body), false) == 200);
    CHECK(strcmp(body, "ok") == 0);
    close_conn(&cl);

    drv_http_response mine = {.status = 200};
    CHECK(drv_http_defer(&mine, 1000, on_timeout, on_gone, NULL) == NULL);
}

/* Posts from another thread run in order. */
static _Atomic int post_seen, post_disorder;

static void seq_post(void *ud)
{
    int n = (int)(intptr_t)ud;
    if (n != atomic_load(&post_seen))
        atomic_fetch_add(&post_disorder, 1);
    atomic_fetch_add(&post_seen, 1);
}

static void *post_many(void *arg)
{
    drv_http_server *srv = arg;
    for (int i = 0; i < NPOSTS; i++)
        if (drv_http_post(srv, seq_post, (void *)(intptr_t)i) != DRV_OK)
            atomic_fetch_add(&post_disorder, 1);
    return NULL;
}

static void test_post_order(drv_http_server *srv)
{
    pthread_t t;
    CHECK(pthread_create(&t, NULL, post_many, srv) == 0);
    /* The API thread keeps serving meanwhile. */
    open_conn(srv, &cl);
    CHECK(hello_works(&cl));
    close_conn(&cl);
    pthread_join(t, NULL);
    CHECK(reaches(&post_seen, NPOSTS));
    CHECK(atomic_load(&post_disorder) == 0);
}

/* Stopping: the deferred request gets on_gone; queued posts still run (on
 * the stopping thread, after the connections are gone); drv_http_post
 * during the stop is refused. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static _Atomic int gate_entered, late_ran, late_posted;

/* Holds the API thread until the gate opens, so posts queue up behind it. */
static void gate_post(void *ud)
{
    (void)ud;
    atomic_store(&gate_entered, 1);
    pthread_mutex_lock(&gate_lock);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
}

static void late_post(void *ud)
{
    (void)ud;
    atomic_fetch_add(&late_ran, 1);
}

/* Opens the gate once drv_http_post is refused, i.e. stop has begun. */
static void *opener(void *arg)
{
    drv_http_server *srv = arg;
    /* Posts accepted until then queue behind the gate: they run at the stop. */
    while (drv_http_post(srv, late_post, NULL) != DRV_CLOSED) {
        atomic_fetch_add(&late_posted, 1);
        sleep_ms(1);
    }
    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_signal(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    return NULL;
}

static drv_http_server *stopping_srv;

static void gone_then_post(void *ud)
{
    on_gone(ud);
    atomic_store(&post_in_gone, (int)drv_http_post(stopping_srv, gone_posts, NULL));
}

static void stop_app(void *ud, const drv_http_request *req, drv_http_response *resp)
{
    int slot = path_num(req, "/wait/");
    if (slot < 0) {
        app(ud, req, resp);
        return;
    }
    drv_http_deferred *d =
        drv_http_defer(resp, 60000, on_timeout, gone_then_post, (void *)(intptr_t)slot);
    if (d)
        atomic_fetch_add(&deferred[slot], 1);
}

static void test_stop_pending(void)
{
    size_t base = drv_mem_used();
    drv_http_config cfg = {.handler = stop_app};
    drv_http_server *srv = NULL;
    CHECK(drv_http_server_start(&cfg, &srv) == DRV_OK);
    if (!srv)
        return;
    stopping_srv = srv;
    open_conn(srv, &cl);
    say(&cl, "GET /wait/12 HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(reaches(&deferred[12], 1));

    CHECK(drv_http_post(srv, gate_post, NULL) == DRV_OK);
    CHECK(reaches(&gate_entered, 1));
    CHECK(drv_http_post(srv, late_post, NULL) == DRV_OK); /* queued behind the gate */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, opener, srv) == 0);
    drv_http_server_stop(srv);
    pthread_join(t, NULL);

    CHECK(atomic_load(&gone[12]) == 1);
    CHECK(atomic_load(&timeouts[12]) == 0);
    CHECK(atomic_load(&post_in_gone) == DRV_CLOSED);
    /* Every accepted post ran once: the one queued behind the gate and those
     * the opener got in before the stop refused them. */
    CHECK(atomic_load(&late_ran) == atomic_load(&late_posted) + 1);
    CHECK(eof_next(&cl));
    close_conn(&cl);
    CHECK(drv_mem_used() == base);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    drv_log_set_level(DRV_LOG_ERROR); /* the 500 fallbacks log an error each */

    size_t base = drv_mem_used();
    /* Idle and request timeouts shorter than some deferrals: they must not apply. */
    drv_http_config cfg = {.handler = app, .idle_timeout_ms = 500, .request_timeout_ms = 500};
    drv_http_server *srv = NULL;
    CHECK(drv_http_server_start(&cfg, &srv) == DRV_OK);
    if (srv) {
        test_complete_from_thread(srv);
        test_timeout(srv);
        test_client_gone(srv);
        test_pipelined(srv);
        test_request_rules(srv);
        test_misuse(srv);
        test_post_order(srv);
        drv_http_server_stop(srv);
    }
    CHECK(drv_mem_used() == base);
    test_gone_full_input();
    test_stop_pending();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
