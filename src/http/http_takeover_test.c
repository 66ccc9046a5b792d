/*
 * http_takeover_test.c — unit tests for the HTTP server's hand-over of a
 * connection (http.h, "Hand-over"): the head of a 101 or 2xx answer (and
 * the start of its body) is written completely before the takeover callback
 * runs; the callback gets the socket (non-blocking, no longer watched), its
 * transport stack, the peer and the bytes the client sent after the request
 * (pipelined frames, even a whole next request, which is never answered);
 * exactly one of takeover / takeover_free is called — takeover_free for
 * HEAD, for 204, for an invalid answer, when the client is gone before the
 * head is out, and when the server stops first; other connections go on.
 *
 * Connections are socketpairs adopted with drv_http_adopt, as in
 * http_test.c.
 */
#include <fcntl.h>
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
#include "platform/net.h"

#include "core/test.h"

#define BIG_BODY (1u << 20)
#define TAKEN_MARK "TAKEN\n"

/* ------------------------------------------------------------------------ */
/* The application                                                           */

/* What the last hand-over gave (written on the API thread, read by the test
 * once `takeovers` moved). */
static struct {
    int fd;
    drv_stream *st;
    drv_peer peer;
    uint8_t rest[8192];
    size_t nrest;
    bool nonblocking;
    char path[64];
} last;

static _Atomic int takeovers, frees;
static char *big_body;

/* Per request: which path asked for the hand-over. */
typedef struct handoff {
    char path[64];
} handoff;

static void on_takeover(void *ud, int fd, drv_stream *st, const drv_peer *peer, const uint8_t *rest,
                        size_t nrest)
{
    handoff *h = ud;
    last.fd = fd;
    last.st = st;
    last.peer = *peer;
    last.nrest = nrest < sizeof(last.rest) ? nrest : sizeof(last.rest);
    if (last.nrest)
        memcpy(last.rest, rest, last.nrest);
    int fl = fcntl(fd, F_GETFL);
    last.nonblocking = fl >= 0 && (fl & O_NONBLOCK);
    snprintf(last.path, sizeof(last.path), "%s", h->path);
    /* Written now, it can only follow what the server wrote before. */
    size_t w = 0;
    if (st)
        drv_stream_write(st, (const uint8_t *)TAKEN_MARK, strlen(TAKEN_MARK), &w);
    else
        drv_write(fd, TAKEN_MARK, strlen(TAKEN_MARK), &w);
    drv_free(h);
    atomic_fetch_add(&takeovers, 1);
}

static void on_takeover_free(void *ud)
{
    drv_free(ud);
    atomic_fetch_add(&frees, 1);
}

static void app(void *ud, const drv_http_request *req, drv_http_response *resp)
{
    (void)ud;
    char path[64];
    snprintf(path, sizeof(path), "%.*s", (int)req->path.n, req->path.p);
    if (strcmp(path, "/hello") == 0) {
        resp->content_type = "text/plain";
        drv_buf_append(&resp->body, "hello", 5);
        return;
    }
    handoff *h = drv_calloc(1, sizeof(*h));
    snprintf(h->path, sizeof(h->path), "%s", path);
    resp->takeover = on_takeover;
    resp->takeover_ud = h;
    resp->takeover_free = on_takeover_free;
    if (strcmp(path, "/ws") == 0) {
        resp->status = 101;
        drv_http_add_header(resp, "Upgrade", "websocket");
        drv_http_add_header(resp, "Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    } else if (strcmp(path, "/sse") == 0) {
        resp->content_type = "text/event-stream";
        drv_http_add_header(resp, "Cache-Control", "no-store");
        drv_buf_append(&resp->body, "retry: 1000\n\n", 13);
    } else if (strcmp(path, "/sse-big") == 0) {
        resp->content_type = "text/event-stream";
        drv_buf_append(&resp->body, big_body, BIG_BODY);
    } else if (strcmp(path, "/nocontent") == 0) {
        resp->status = 204;
    } else if (strcmp(path, "/bad") == 0) {
        resp->status = 42;
    } else if (strcmp(path, "/fivehundred") == 0) {
        resp->status = 503; /* a 5xx hand-over: the head says close, no length */
    } else {
        resp->status = 404;
    }
}

/* ------------------------------------------------------------------------ */
/* The client side                                                           */

typedef struct client {
    int fd;
    char buf[BIG_BODY + 65536];
    size_t len;
} client;

static client cl, cl2;

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void say(client *c, const char *s)
{
    send_all(c->fd, s, strlen(s));
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

/* Wait until c holds at least n bytes (5 s). */
static bool fill_to(client *c, size_t n)
{
    while (c->len < n)
        if (!fill(c, 5000))
            return false;
    return true;
}

/* The head of the first response in c (NUL-terminated copy), its length. */
static size_t head_of(client *c, char *head, size_t cap)
{
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end) {
            size_t hl = (size_t)(end + 4 - c->buf);
            if (hl >= cap)
                return 0;
            memcpy(head, c->buf, hl);
            head[hl] = '\0';
            return hl;
        }
        if (!fill(c, 5000))
            return 0;
    }
}

static void drop(client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    c->buf[c->len] = '\0';
}

/* Nothing more arrives within ms (and the connection is still open). */
static bool quiet(client *c, int ms)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    return c->len == 0 && poll(&pfd, 1, ms) == 0;
}

/* EOF within 5 s after whatever is still to come; *extra: bytes read first. */
static bool eof_after(client *c, size_t *extra)
{
    size_t before = c->len;
    while (fill(c, 5000))
        ;
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    char b[1];
    bool eof = poll(&pfd, 1, 0) == 1 && read(c->fd, b, 1) == 0;
    if (extra)
        *extra = c->len - before;
    return eof;
}

/* A fake TLS transport over a socket, as in http_test.c. */
static _Atomic int fake_freed;

static drv_err fake_read(drv_stream *st, uint8_t *buf, size_t len, size_t *n)
{
    return drv_read(st->fd, buf, len, n);
}

static drv_err fake_write(drv_stream *st, const uint8_t *buf, size_t len, size_t *n)
{
    return drv_write(st->fd, buf, len, n);
}

static void fake_free(drv_stream *st)
{
    atomic_fetch_add(&fake_freed, 1);
    drv_free(st);
}

static const drv_transport_ops fake_tls_ops = {
    .name = "tls",
    .read = fake_read,
    .write = fake_write,
    .free = fake_free,
};

/* A socketpair: the client end in c, the server end adopted with pre bytes
 * (n of them); tls: under the fake transport. */
static void open_conn(drv_http_server *srv, client *c, bool tls, const char *pre, size_t n)
{
    int sv[2];
    c->len = 0;
    c->buf[0] = '\0';
    c->fd = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        CHECK(!"socketpair");
        return;
    }
    set_nonblocking(sv[1]);
    c->fd = sv[0];
    drv_stream *st = NULL;
    if (tls) {
        st = drv_calloc(1, sizeof(*st));
        st->ops = &fake_tls_ops;
        st->fd = sv[1];
    }
    drv_peer peer = {.family = 0, .loopback = true};
    drv_http_adopt(srv, sv[1], st, &peer, (const uint8_t *)pre, n);
}

static void close_conn(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Wait (5 s) until the counters reach t and f. */
static bool counters_reach(int t, int f)
{
    for (int i = 0; i < 5000; i++) {
        if (atomic_load(&takeovers) >= t && atomic_load(&frees) >= f)
            return atomic_load(&takeovers) == t && atomic_load(&frees) == f;
        sleep_ms(1);
    }
    return false;
}

/* Release what the last hand-over gave the test. */
static void release_last(void)
{
    if (last.st)
        drv_stream_free(last.st, 0);
    last.st = NULL;
    if (last.fd >= 0)
        close(last.fd);
    last.fd = -1;
}

/* The taken socket reads `want` (2 s). */
static bool taken_reads(const char *want)
{
    char b[256];
    size_t n = 0, wn = strlen(want);
    while (n < wn) {
        struct pollfd pfd = {.fd = last.fd, .events = POLLIN};
        if (poll(&pfd, 1, 2000) <= 0)
            return false;
        ssize_t r = read(last.fd, b + n, sizeof(b) - n);
        if (r <= 0)
            return false;
        n += (size_t)r;
    }
    return n == wn && memcmp(b, want, wn) == 0;
}

/* A GET /hello on a connection answers 200 "hello". */
static bool hello_works(client *c)
{
    say(c, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    char head[4096];
    size_t hl = head_of(c, head, sizeof(head));
    if (!hl || strncmp(head, "HTTP/1.1 200 ", 13) != 0 || !fill_to(c, hl + 5))
        return false;
    bool ok = memcmp(c->buf + hl, "hello", 5) == 0;
    drop(c, hl + 5);
    return ok;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

static const char UPGRADE[] = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
/* A masked text frame "Hello" (RFC 6455 §5.7) and a whole next request. */
static const char FRAME[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
static const char NEXT[] = "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n";

/* 101: the pipelined bytes come with the hand-over, nothing after it is read. */
static void test_upgrade(drv_http_server *srv)
{
    int t0 = atomic_load(&takeovers), f0 = atomic_load(&frees);
    /* Everything the client sent arrived with the connection (a worker's pre bytes). */
    char pre[1024];
    size_t fl = sizeof(FRAME) - 1;
    size_t n = 0;
    memcpy(pre + n, UPGRADE, strlen(UPGRADE));
    n += strlen(UPGRADE);
    memcpy(pre + n, FRAME, fl);
    n += fl;
    memcpy(pre + n, NEXT, strlen(NEXT));
    n += strlen(NEXT);
    open_conn(srv, &cl, false, pre, n);
    CHECK(counters_reach(t0 + 1, f0));
    CHECK(strcmp(last.path, "/ws") == 0);
    CHECK(last.fd >= 0 && last.st == NULL && last.nonblocking && last.peer.loopback);
    CHECK(last.nrest == fl + strlen(NEXT));
    CHECK(memcmp(last.rest, FRAME, fl) == 0);
    CHECK(memcmp(last.rest + fl, NEXT, strlen(NEXT)) == 0);

    /* The head, whole, then only what the new owner wrote. */
    char head[4096];
    size_t hl = head_of(&cl, head, sizeof(head));
    CHECK(hl > 0);
    CHECK(strncmp(head, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
    CHECK(strstr(head, "\r\nConnection: Upgrade\r\n") != NULL);
    CHECK(strstr(head, "\r\nUpgrade: websocket\r\n") != NULL);
    CHECK(strstr(head, "\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n") != NULL);
    CHECK(strstr(head, "Content-Length") == NULL && strstr(head, "Transfer-Encoding") == NULL);
    CHECK(fill_to(&cl, hl + strlen(TAKEN_MARK)));
    CHECK(memcmp(cl.buf + hl, TAKEN_MARK, strlen(TAKEN_MARK)) == 0);
    drop(&cl, hl + strlen(TAKEN_MARK));
    /* The pipelined GET /hello is not answered: the server let go. */
    CHECK(quiet(&cl, 200));

    /* Both directions belong to the new owner now. */
    say(&cl, "client->owner");
    CHECK(taken_reads("client->owner"));
    size_t w = 0;
    CHECK(drv_write(last.fd, "owner->client", 13, &w) == DRV_OK && w == 13);
    CHECK(fill_to(&cl, 13) && memcmp(cl.buf, "owner->client", 13) == 0);
    drop(&cl, 13);
    release_last();
    CHECK(eof_after(&cl, &n) && n == 0);
    close_conn(&cl);

    /* The client sends its frames after the connection was adopted. */
    open_conn(srv, &cl, false, NULL, 0);
    char msg[2048];
    n = 0;
    memcpy(msg + n, UPGRADE, strlen(UPGRADE));
    n += strlen(UPGRADE);
    memcpy(msg + n, FRAME, fl);
    n += fl;
    send_all(cl.fd, msg, n);
    CHECK(counters_reach(t0 + 2, f0));
    /* What did not come with the hand-over is still in the socket, in order. */
    char got[64];
    size_t k = last.nrest <= fl ? last.nrest : 0;
    memcpy(got, last.rest, k);
    CHECK(last.nrest <= fl);
    while (k < fl) {
        struct pollfd pfd = {.fd = last.fd, .events = POLLIN};
        if (poll(&pfd, 1, 2000) <= 0)
            break;
        ssize_t r = read(last.fd, got + k, sizeof(got) - k);
        if (r <= 0)
            break;
        k += (size_t)r;
    }
    CHECK(k == fl && memcmp(got, FRAME, fl) == 0);
    release_last();
    hl = head_of(&cl, head, sizeof(head));
    CHECK(hl > 0 && strncmp(head, "HTTP/1.1 101 ", 13) == 0);
    close_conn(&cl);
}

/* 200 text/event-stream: the head says close and no length; the body's
 * first bytes are written before the hand-over. */
static void test_event_stream(drv_http_server *srv)
{
    int t0 = atomic_load(&takeovers), f0 = atomic_load(&frees);
    static const char *const reqs[] = {
        "GET /sse HTTP/1.1\r\nHost: h\r\nAccept: text/event-stream\r\n\r\n",
        "GET /sse HTTP/1.0\r\n\r\n",
        "GET /sse HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        open_conn(srv, &cl, false, NULL, 0);
        say(&cl, reqs[i]);
        CHECK_CASE(counters_reach(t0 + (int)i + 1, f0), reqs[i]);
        CHECK_CASE(last.nrest == 0, reqs[i]);
        char head[4096];
        size_t hl = head_of(&cl, head, sizeof(head));
        CHECK_CASE(hl > 0 && strncmp(head, "HTTP/1.1 200 OK\r\n", 17) == 0, reqs[i]);
        CHECK_CASE(strstr(head, "\r\nContent-Type: text/event-stream\r\n") != NULL, reqs[i]);
        CHECK_CASE(strstr(head, "\r\nCache-Control: no-store\r\n") != NULL, reqs[i]);
        CHECK_CASE(strstr(head, "\r\nConnection: close\r\n") != NULL, reqs[i]);
        CHECK_CASE(strstr(head, "Content-Length") == NULL, reqs[i]);
        CHECK_CASE(strstr(head, "Transfer-Encoding") == NULL, reqs[i]);
        CHECK_CASE(strstr(head, "keep-alive") == NULL, reqs[i]);
        const char *body = "retry: 1000\n\n" TAKEN_MARK;
        CHECK_CASE(fill_to(&cl, hl + strlen(body)), reqs[i]);
        CHECK_CASE(memcmp(cl.buf + hl, body, strlen(body)) == 0, reqs[i]);
        drop(&cl, hl + strlen(body));
        CHECK_CASE(quiet(&cl, 50), reqs[i]);
        release_last();
        size_t extra;
        CHECK_CASE(eof_after(&cl, &extra) && extra == 0, reqs[i]);
        close_conn(&cl);
    }
    /* A 5xx may hand over too (the API's choice): same head rules. */
    open_conn(srv, &cl, false, NULL, 0);
    say(&cl, "GET /fivehundred HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(counters_reach(t0 + 4, f0));
    char head[4096];
    size_t hl = head_of(&cl, head, sizeof(head));
    CHECK(hl > 0 && strncmp(head, "HTTP/1.1 503 ", 13) == 0);
    CHECK(strstr(head, "\r\nConnection: close\r\n") != NULL && !strstr(head, "Content-Length"));
    release_last();
    close_conn(&cl);
}

/* A head and body start larger than the socket can take: the hand-over
 * waits until the client has read all of it. */
static void test_big_start(drv_http_server *srv)
{
    int t0 = atomic_load(&takeovers), f0 = atomic_load(&frees);
    open_conn(srv, &cl, false, NULL, 0);
    say(&cl, "GET /sse-big HTTP/1.1\r\nHost: h\r\n\r\n");
    sleep_ms(300);
    CHECK(atomic_load(&takeovers) == t0 && atomic_load(&frees) == f0); /* not yet */
    char head[4096];
    size_t hl = head_of(&cl, head, sizeof(head));
    CHECK(hl > 0 && strncmp(head, "HTTP/1.1 200 ", 13) == 0);
    CHECK(fill_to(&cl, hl + BIG_BODY + strlen(TAKEN_MARK)));
    CHECK(memcmp(cl.buf + hl, big_body, BIG_BODY) == 0);
    CHECK(memcmp(cl.buf + hl + BIG_BODY, TAKEN_MARK, strlen(TAKEN_MARK)) == 0);
    CHECK(counters_reach(t0 + 1, f0));
    release_last();
    size_t extra;
    CHECK(eof_after(&cl, &extra) && extra == 0);
    close_conn(&cl);

    /* The client goes away half-way: takeover_free, never takeover. */
    open_conn(srv, &cl, false, NULL, 0);
    say(&cl, "GET /sse-big HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(fill(&cl, 5000)); /* some of it came */
    close_conn(&cl);
    CHECK(counters_reach(t0 + 1, f0 + 1));
}

/* No hand-over: HEAD, 204, an invalid status, a client gone before the
 * head.  takeover_free runs once, and the connection goes on as HTTP where
 * it can. */
static void test_no_handover(drv_http_server *srv)
{
    int t0 = atomic_load(&takeovers), f0 = atomic_load(&frees);
    char head[4096];
    size_t hl;

    /* HEAD /sse: the head GET would get, with a length; the connection stays HTTP. */
    open_conn(srv, &cl, false, NULL, 0);
    say(&cl, "HEAD /sse HTTP/1.1\r\nHost: h\r\n\r\n");
    hl = head_of(&cl, head, sizeof(head));
    CHECK(hl > 0 && strncmp(head, "HTTP/1.1 200 ", 13) == 0);
    CHECK(strstr(head, "\r\nContent-Length: 13\r\n") != NULL);
    CHECK(strstr(head, "\r\nConnection: close\r\n") == NULL);
    drop(&cl, hl);
    CHECK(counters_reach(t0, f0 + 1));
    CHECK(hello_works(&cl));
    /* HEAD /ws: no upgrade happens, whatever the status line says. */
    say(&cl, "HEAD /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    hl = head_of(&cl, head, sizeof(head));
    CHECK(hl > 0);
    CHECK(strstr(head, "Connection: Upgrade") == NULL);
    drop(&cl, hl);
    CHECK(counters_reach(t0, f0 + 2));
    CHECK(hello_works(&cl));

    /* 204 with a hand-over: a plain 204, no hand-over. */
    say(&cl, "GET /nocontent HTTP/1.1\r\nHost: h\r\n\r\n");
    hl = head_of(&cl, head, sizeof(head));
    CHECK(hl > 0 && strncmp(head, "HTTP/1.1 204 ", 13) == 0);
    drop(&cl, hl);
    CHECK(counters_reach(t0, f0 + 3));
    CHECK(hello_works(&cl));

    /* An invalid status: 500, no hand-over. */
    say(&cl, "GET /bad HTTP/1.1\r\nHost: h\r\n\r\n");
    hl = head_of(&cl, head, sizeof(head));
    CHECK(hl > 0 && strncmp(head, "HTTP/1.1 500 ", 13) == 0);
    CHECK(strstr(head, "Content-Length: 0\r\n") != NULL);
    drop(&cl, hl);
    CHECK(counters_reach(t0, f0 + 4));
    CHECK(hello_works(&cl));
    CHECK(quiet(&cl, 20));
    close_conn(&cl);

    /* The client is gone before the head is written. */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    set_nonblocking(sv[1]);
    close(sv[0]);
    drv_peer peer = {.loopback = true};
    drv_http_adopt(srv, sv[1], NULL, &peer, (const uint8_t *)UPGRADE, strlen(UPGRADE));
    CHECK(counters_reach(t0, f0 + 5));
}

/* A TLS connection: the hand-over passes its transport stack. */
static void test_tls(drv_http_server *srv)
{
    int t0 = atomic_load(&takeovers), f0 = atomic_load(&frees);
    int freed0 = atomic_load(&fake_freed);
    open_conn(srv, &cl, true, UPGRADE, strlen(UPGRADE));
    CHECK(counters_reach(t0 + 1, f0));
    CHECK(last.st != NULL && last.st->ops == &fake_tls_ops && last.st->fd == last.fd);
    CHECK(atomic_load(&fake_freed) == freed0); /* the new owner's now */
    char head[4096];
    size_t hl = head_of(&cl, head, sizeof(head));
    CHECK(hl > 0 && strncmp(head, "HTTP/1.1 101 ", 13) == 0);
    CHECK(fill_to(&cl, hl + strlen(TAKEN_MARK)) &&
          memcmp(cl.buf + hl, TAKEN_MARK, strlen(TAKEN_MARK)) == 0);
    release_last();
    CHECK(atomic_load(&fake_freed) == freed0 + 1);
    close_conn(&cl);
}

/* Stopping the server with a hand-over still waiting for its head. */
static void test_stop_pending(void)
{
    size_t base = drv_mem_used();
    drv_http_config cfg = {.handler = app};
    drv_http_server *srv = NULL;
    CHECK(drv_http_server_start(&cfg, &srv) == DRV_OK);
    if (!srv)
        return;
    int t0 = atomic_load(&takeovers), f0 = atomic_load(&frees);
    open_conn(srv, &cl, false, NULL, 0);
    say(&cl, "GET /sse-big HTTP/1.1\r\nHost: h\r\n\r\n");
    /* Another connection works meanwhile. */
    open_conn(srv, &cl2, false, NULL, 0);
    CHECK(hello_works(&cl2));
    CHECK(atomic_load(&takeovers) == t0 && atomic_load(&frees) == f0);
    drv_http_server_stop(srv);
    CHECK(atomic_load(&takeovers) == t0 && atomic_load(&frees) == f0 + 1);
    size_t extra;
    CHECK(eof_after(&cl2, &extra));
    close_conn(&cl2);
    CHECK(eof_after(&cl, &extra) && extra > 0 && cl.len < BIG_BODY); /* cut short */
    close_conn(&cl);
    CHECK(drv_mem_used() == base);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    drv_log_set_level(DRV_LOG_ERROR);
    last.fd = -1;
    big_body = malloc(BIG_BODY);
    for (size_t i = 0; i < BIG_BODY; i++)
        big_body[i] = (char)('a' + i % 26);

    size_t base = drv_mem_used();
    drv_http_config cfg = {.handler = app};
    drv_http_server *srv = NULL;
    CHECK(drv_http_server_start(&cfg, &srv) == DRV_OK);
    if (srv) {
        test_upgrade(srv);
        test_event_stream(srv);
        test_big_start(srv);
        test_no_handover(srv);
        test_tls(srv);
        /* The server still answers new connections. */
        open_conn(srv, &cl, false, NULL, 0);
        CHECK(hello_works(&cl));
        CHECK(hello_works(&cl));
        close_conn(&cl);
        drv_http_stats st;
        drv_http_server_stats(srv, &st);
        /* The 101s: two upgrades, the TLS one, HEAD /ws, the one whose client was gone. */
        CHECK(st.responses_by_class[1] == 5);
        drv_http_server_stop(srv);
    }
    CHECK(drv_mem_used() == base);
    test_stop_pending();
    free(big_body);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
