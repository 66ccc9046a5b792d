/*
 * http_server.c — the API thread: one event loop that owns every HTTP
 * connection handed over with drv_http_adopt(), reads requests, calls the
 * handler and writes responses; see http.h for the contract.
 *
 * Hand-over: drv_http_adopt() may run on any thread.  It copies what it is
 * given into a queue item, pushes it under `lock` and writes the eventfd the
 * loop watches; the loop thread takes the whole queue at once and opens a
 * connection per item.  drv_http_post() works the same way with a second
 * queue, run in order after the hand-overs of the same wake-up.  Stopping
 * uses the same eventfd.  Nothing else is shared between threads:
 * statistics are relaxed atomics.
 *
 * A connection:
 *
 *          Connection: close, HTTP/1.0,           output written,
 *          parse error, request or idle           our side shut down
 *   OPEN ──── timeout, client's EOF ────▶ CLOSING ─────────────────▶ LINGER
 *    │                                       │                         │ client's EOF,
 *    │ read/write error,                     │ write error,            │ LINGER_MS or
 *    │ server stop                           │ write stalled           │ LINGER_MAX read
 *    ▼                                       ▼                         ▼
 *   closed (fd closed at once, struct freed at the end of the loop turn)
 *
 *   OPEN: read into `in`, parse, call the handler, serialise into `out`,
 *     write.  Pipelined requests are taken one at a time and only while
 *     less than OUT_LOW bytes of output wait, so a client that sends
 *     without reading cannot make `out` grow without bound.
 *   CLOSING: no more requests are read; `out` is written out.
 *   A streamed response (http.h) keeps the connection OPEN but holds the
 *     requests behind it: while `stream` is set, the producer is called
 *     whenever less than OUT_LOW bytes wait (at most STREAM_CALLS times per
 *     run, then the connection yields to the others until the turn ends),
 *     its output framed as a chunk into `out`; at its end the last chunk is
 *     written and pipelined requests are taken again.
 *   A deferred response (http.h) also keeps it OPEN and holds the requests
 *     behind it, until drv_http_complete queues the response and marks the
 *     connection ready (it runs at the end of the turn, never inside the
 *     caller).  Input is still read, only to see the client leave: EOF or a
 *     hang-up while deferred closes the connection (on_gone).
 *   LINGER: the response is out and our side is shut down (TLS
 *     close_notify, then FIN); what the client still sends is read and
 *     dropped until it closes, so a close with unread input does not turn
 *     into a reset that could destroy the response before the client reads
 *     it (nginx's lingering close).
 *
 * Invariants:
 *   - `in` holds at most max_head + max_body + DRV_HTTP_CHUNK_SLACK + 1
 *     bytes, which is more than any request the parser accepts, so a full
 *     buffer always meets a parser verdict (defended anyway: 413);
 *   - `out` is bounded by OUT_LOW plus one response (the handler's buffers
 *     are capped by DRV_HTTP_MAX_RESPONSE_*) or one framed stream slice
 *     (DRV_HTTP_STREAM_MAX);
 *   - a stream's stream_free runs exactly once: at its end, or when the
 *     connection closes (conn_close), whichever comes first;
 *   - a deferred request ends exactly once: drv_http_complete, or on_gone
 *     from conn_close; the connection holds at most one (`dfr`);
 *   - both buffers are freed whenever empty: an idle keep-alive connection
 *     holds no buffers;
 *   - a connection is never freed inside one of its own callbacks: closing
 *     moves it to `dead`, freed at the end of the loop turn.
 *
 * Time: one timer per connection with one meaning at a time (timer_kind):
 * idle keep-alive (idle_timeout_ms), a started request (request_timeout_ms
 * from its first byte, then 408), output that does not drain
 * (request_timeout_ms without progress), lingering (LINGER_MS).  A deferred
 * request has a timer of its own (timeout_ms → on_timeout); while it waits
 * with no output pending, the connection's timer is off.
 */
#include "http/http.h"

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "platform/clock.h"
#include "platform/loop.h"

#define DEFAULT_IDLE_MS 60000u
#define DEFAULT_REQUEST_MS 30000u
#define DEFAULT_MAX_CONNECTIONS 10000u
#define DEFAULT_MAX_HEAD (16u << 10)
#define DEFAULT_MAX_BODY (64ull << 20)
/* The whole request is buffered: keep max_head + max_body well under 4 GiB. */
#define MAX_HEAD_CLAMP (1u << 20)
#define MAX_BODY_CLAMP (1ull << 30)
/* Bytes asked for per read, and the most when the parser says a body needs more. */
#define READ_CHUNK (16u << 10)
#define READ_CHUNK_MAX (1u << 20)
/* Pipelined requests wait while this much output is unsent. */
#define OUT_LOW (64u << 10)
/* Status line, Date, Content-Type, Content-Length, Connection. */
#define OUT_HEAD_ROOM 1024u
/* Read rounds per wake-up before other connections get their turn. */
#define ROUNDS 16
/* Producer calls of a streamed response per run before other connections go. */
#define STREAM_CALLS 4
/* Lingering close: at most this long, and this many bytes dropped. */
#define LINGER_MS 2000u
#define LINGER_MAX (256u << 10)

typedef enum {
    C_OPEN,    /* reading and answering requests */
    C_CLOSING, /* no more requests; writing what is left in `out` */
    C_LINGER,  /* our side shut down; dropping input until the client closes */
} conn_state;

typedef enum {
    T_NONE,    /* not armed, or to be re-armed for the current state */
    T_IDLE,    /* waiting for a request on an idle connection */
    T_REQUEST, /* a request has started and must complete */
    T_WRITE,   /* output waits for the client to read */
    T_LINGER,  /* lingering close */
} timer_kind;

/* What answering a request needs once its spans are gone (a deferred one). */
typedef struct req_info {
    bool head;             /* HEAD: the head GET would get, no body */
    bool keep_alive;       /* the request lets the connection stay open */
    uint8_t version_minor; /* HTTP/1.<minor> */
} req_info;

/* A deferred request (http.h); embedded in its connection, which has at most
 * one at a time, so the handle needs no allocation. */
struct drv_http_deferred {
    struct conn *c;                                     /* the connection it is embedded in */
    void (*on_timeout)(void *ud, drv_http_deferred *d); /* timeout_ms passed: must complete */
    void (*on_gone)(void *ud);                          /* closed first; may be NULL */
    void *ud;                                           /* passed to both */
    req_info req;                                       /* how to answer */
    drv_timer timer;                                    /* timeout_ms */
};

typedef struct conn {
    drv_http_server *srv;
    struct conn *prev, *next; /* srv->conns while open; srv->dead (next only) once closed */
    struct conn *ready_next;  /* srv->ready: to be run again at the end of the turn */
    drv_io io;                /* the socket; io.fd is the connection's fd */
    drv_stream *st;           /* transport stack (TLS), NULL for plain TCP */
    drv_peer_cert *cert;      /* the verified client certificate, looked up once; NULL if none */
    drv_buf in;               /* request bytes not yet consumed; freed when empty */
    drv_buf out;              /* response bytes not yet written; freed when empty */
    drv_timer timer;          /* see timer_kind */
    size_t need;        /* OPEN: parse again once `in` holds this many; LINGER: bytes dropped */
    drv_peer peer;      /* the client's address */
    uint8_t state;      /* conn_state */
    uint8_t timer_kind; /* what `timer` is armed for */
    bool eof;           /* the client closed its side */
    bool continue_sent; /* 100 Continue went out for the current request */
    bool cert_known;    /* `cert` was looked up */
    bool in_ready;      /* on srv->ready */
    bool dead;          /* closed; on srv->dead */
    bool progress;      /* output was written in this run (re-arms T_WRITE) */
    bool chunked;       /* the stream is sent in chunks (else it ends with the connection) */
    bool stream_close;  /* close once the stream has ended */
    /* A streamed response in progress (http.h); NULL: none. */
    drv_err (*stream)(void *ud, drv_buf *out);
    void *stream_ud;               /* the producer's state */
    void (*stream_free)(void *ud); /* releases stream_ud (may be NULL) */
    drv_buf sbuf;                  /* the producer's output before framing; freed at the end */
    /* A hand-over waiting for its head to be written (http.h); NULL: none. */
    void (*takeover)(void *ud, int fd, drv_stream *st, const drv_peer *peer, const uint8_t *rest,
                     size_t nrest);
    void *takeover_ud;
    void (*takeover_free)(void *ud);
    /* A deferred request (http.h): valid while `deferred`. */
    drv_http_deferred dfr;
    bool deferred;     /* dfr waits for drv_http_complete or on_gone */
    bool defer_called; /* drv_http_defer ran in the current handler call */
    bool filling;      /* a deferred request's fill runs */
    bool fill_defer;   /* ... and called drv_http_defer (answered 500) */
} conn;

/* A function queued with drv_http_post. */
typedef struct post {
    struct post *next;    /* queue order */
    void (*fn)(void *ud); /* run on the API thread */
    void *ud;             /* passed to fn */
} post;

/* A connection handed over, waiting for the loop thread. */
typedef struct adopted {
    struct adopted *next; /* queue order */
    int fd;               /* the socket */
    drv_stream *st;       /* its transport stack, or NULL */
    drv_peer peer;        /* the client's address */
    size_t npre;          /* bytes in pre */
    uint8_t pre[];        /* bytes already read: the start of the first request */
} adopted;

struct drv_http_server {
    drv_http_config cfg;  /* the caller's config with defaults and clamps applied */
    size_t in_cap;        /* cap of each connection's `in` */
    size_t out_cap;       /* cap of each connection's `out` */
    drv_loop *loop;       /* the API thread's loop */
    pthread_t thread;     /* the API thread */
    bool thread_started;  /* `thread` needs joining */
    int wake_fd;          /* eventfd: adopted connections or posts queued, or stop */
    drv_io wake_io;       /* wake_fd on the loop */
    pthread_mutex_t lock; /* guards queue, queue_tail, posts, posts_tail, stopping */
    adopted *queue;       /* hand-overs not yet taken by the loop */
    adopted *queue_tail;  /* last of queue */
    post *posts;          /* drv_http_post calls not yet run */
    post *posts_tail;     /* last of posts */
    bool stopping;        /* drv_http_server_stop was called */
    conn *conns;          /* open connections (loop thread) */
    conn *dead;           /* closed connections, freed at turn end */
    conn *ready;          /* connections to run again at turn end */
    uint32_t nconns;      /* connections on `conns` */
    uint64_t date_s;      /* wall-clock second `date` was made for */
    char date[64];        /* IMF-fixdate of date_s */
    _Atomic uint64_t connections_open;
    _Atomic uint64_t connections_total;
    _Atomic uint64_t connections_refused;
    _Atomic uint64_t requests_total;
    _Atomic uint64_t bad_requests;
    _Atomic uint64_t responses_by_class[6];
};

static void conn_run(conn *c);
static void on_timer(void *ud);
static void mark_ready(conn *c);

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static void count(_Atomic uint64_t *a)
{
    atomic_fetch_add_explicit(a, 1, memory_order_relaxed);
}

static void count_response(drv_http_server *srv, int status)
{
    int cls = status / 100;
    if (cls >= 1 && cls <= 5)
        count(&srv->responses_by_class[cls]);
}

static bool is_field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7F);
}

static bool span_is(drv_span s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

static bool str_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a >= 'A' && *a <= 'Z' ? (char)(*a - 'A' + 'a') : *a;
        char y = *b >= 'A' && *b <= 'Z' ? (char)(*b - 'A' + 'a') : *b;
        if (x != y)
            return false;
    }
    return *a == *b;
}

/* Append printf output (short: server-made header lines) to b. */
static drv_err putf(drv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static drv_err putf(drv_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return DRV_INVAL;
    return drv_buf_append(b, tmp, (size_t)n);
}

/* The current time as an IMF-fixdate (RFC 9110 §5.6.7), made once a second. */
static const char *http_date(drv_http_server *srv)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    uint64_t now = drv_wall_s();
    if (now != srv->date_s || !srv->date[0]) {
        time_t t = (time_t)now;
        struct tm tm;
        if (!gmtime_r(&t, &tm))
            return srv->date[0] ? srv->date : "Thu, 01 Jan 1970 00:00:00 GMT";
        snprintf(srv->date, sizeof(srv->date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                 days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
                 tm.tm_hour, tm.tm_min, tm.tm_sec);
        srv->date_s = now;
    }
    return srv->date;
}

/* s as the inside of a JSON string (quotes, backslashes and controls escaped). */
static void json_escape(const char *s, char *out, size_t cap)
{
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
}

/* An RFC 9457 problem response, complete with head, into b. */
static drv_err problem(drv_http_server *srv, drv_buf *b, int status, const char *detail,
                       const char *extra_headers)
{
    char why[256], body[512];
    json_escape(detail ? detail : "", why, sizeof(why));
    int n = snprintf(body, sizeof(body),
                     "{\"type\":\"about:blank\",\"title\":\"%s\",\"status\":%d,\"detail\":\"%s\"}",
                     drv_http_reason(status), status, why);
    if (n < 0 || (size_t)n >= sizeof(body))
        return DRV_INVAL;
    drv_err e = putf(b,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/problem+json\r\n"
                     "Content-Length: %d\r\nConnection: close\r\n%s\r\n",
                     status, drv_http_reason(status), http_date(srv), n,
                     extra_headers ? extra_headers : "");
    if (e == DRV_OK)
        e = drv_buf_append(b, body, (size_t)n);
    count_response(srv, status);
    return e;
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                 */

drv_err drv_http_add_header(drv_http_response *resp, const char *name, const char *fmt, ...)
{
    static const char *const reserved[] = {"content-length", "transfer-encoding", "connection",
                                           "date"};
    size_t nl = strlen(name);
    if (nl == 0)
        return DRV_INVAL;
    for (size_t i = 0; i < nl; i++)
        if (!drv_is_tchar((unsigned char)name[i]))
            return DRV_INVAL;
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (str_ieq(name, reserved[i]))
            return DRV_INVAL;

    va_list ap;
    va_start(ap, fmt);
    int vn = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (vn < 0)
        return DRV_INVAL;
    /* name ": " value CRLF; vsnprintf's NUL lands where the CR goes. */
    size_t len = nl + 2 + (size_t)vn + 2;
    drv_err e;
    uint8_t *dst = drv_buf_reserve(&resp->headers, len, &e);
    if (!dst)
        return e;
    char *v = (char *)dst + nl + 2;
    va_start(ap, fmt);
    vsnprintf(v, (size_t)vn + 1, fmt, ap);
    va_end(ap);
    for (int i = 0; i < vn; i++)
        if (!is_field_byte((unsigned char)v[i]))
            return DRV_INVAL; /* nothing appended: len is unchanged */
    memcpy(dst, name, nl);
    memcpy(dst + nl, ": ", 2);
    memcpy(v + vn, "\r\n", 2);
    resp->headers.len += (uint32_t)len;
    return DRV_OK;
}

/* Append n bytes of a streamed body to `out`: one chunk (n > 0) when chunked. */
static drv_err put_chunk(conn *c, const uint8_t *p, size_t n)
{
    if (n == 0)
        return DRV_OK;
    if (!c->chunked)
        return drv_buf_append(&c->out, p, n);
    drv_err e = putf(&c->out, "%zx\r\n", n);
    if (e == DRV_OK)
        e = drv_buf_append(&c->out, p, n);
    if (e == DRV_OK)
        e = drv_buf_append(&c->out, "\r\n", 2);
    return e;
}

/* Serialise the handler's response into c->out.  *streamed in: the handler
 * asked for a streamed body (chunked unless c->chunked is false; `body` holds
 * its first bytes); out: the producer is to be called (not for HEAD, 204,
 * 304 or an invalid response). */
static drv_err write_response(conn *c, const req_info *req, drv_http_response *resp, bool close,
                              bool *streamed)
{
    drv_http_server *srv = c->srv;
    int status = resp->status;
    const char *ctype = resp->content_type;
    drv_buf *hdrs = &resp->headers, *body = &resp->body;
    bool takeover = resp->takeover != NULL;
    bool bad = (status < 200 && !(takeover && status == 101)) || status > 599;
    for (const char *s = ctype; s && *s && !bad; s++)
        bad = !is_field_byte((unsigned char)*s);
    if (bad) {
        char st[16];
        snprintf(st, sizeof(st), "%d", status);
        drv_error("http: invalid response from the handler, sent as 500", "status", st, "why",
                  status < 200 || status > 599 ? "status out of range"
                                               : "control character in content_type");
        status = 500;
        ctype = NULL;
        hdrs = NULL;
        body = NULL;
    }
    bool no_body = status == 204 || status == 304;
    takeover = takeover && !bad && !no_body && !req->head;
    size_t body_n = body && !no_body ? drv_buf_avail(body) : 0;
    bool stream_head = *streamed && !bad && !no_body; /* HEAD gets the head GET would */
    *streamed = stream_head && !req->head;

    drv_buf *o = &c->out;
    drv_err e =
        putf(o, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, drv_http_reason(status), http_date(srv));
    if (e == DRV_OK && ctype)
        e = drv_buf_append(o, "Content-Type: ", 14);
    if (e == DRV_OK && ctype)
        e = drv_buf_append(o, ctype, strlen(ctype));
    if (e == DRV_OK && ctype)
        e = drv_buf_append(o, "\r\n", 2);
    if (e == DRV_OK && takeover)
        e = putf(o, "Connection: %s\r\n", status == 101 ? "Upgrade" : "close");
    else if (e == DRV_OK && stream_head && c->chunked)
        e = drv_buf_append(o, "Transfer-Encoding: chunked\r\n", 28);
    else if (e == DRV_OK && !no_body && !stream_head)
        e = putf(o, "Content-Length: %zu\r\n", body_n);
    if (e == DRV_OK && takeover)
        ; /* said above */
    else if (e == DRV_OK && close)
        e = drv_buf_append(o, "Connection: close\r\n", 19);
    else if (e == DRV_OK && req->version_minor == 0)
        e = drv_buf_append(o, "Connection: keep-alive\r\n", 24);
    if (e == DRV_OK && hdrs && drv_buf_avail(hdrs))
        e = drv_buf_append(o, hdrs->data + hdrs->off, drv_buf_avail(hdrs));
    if (e == DRV_OK)
        e = drv_buf_append(o, "\r\n", 2);
    if (e == DRV_OK && body_n && takeover)
        e = drv_buf_append(o, body->data + body->off, body_n);
    else if (e == DRV_OK && body_n && !req->head)
        e = stream_head ? put_chunk(c, body->data + body->off, body_n)
                        : drv_buf_append(o, body->data + body->off, body_n);
    count_response(srv, status);
    if (takeover && e == DRV_OK) {
        c->takeover = resp->takeover;
        c->takeover_ud = resp->takeover_ud;
        c->takeover_free = resp->takeover_free;
        resp->takeover_free = NULL; /* the connection owns it now */
    }
    return e;
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */

static drv_err conn_read(conn *c, uint8_t *buf, size_t len, size_t *n)
{
    return c->st ? drv_stream_read(c->st, buf, len, n) : drv_read(c->io.fd, buf, len, n);
}

static drv_err conn_write(conn *c, const uint8_t *buf, size_t len, size_t *n)
{
    drv_err e = c->st ? drv_stream_write(c->st, buf, len, n) : drv_write(c->io.fd, buf, len, n);
    if (e == DRV_OK && *n == 0)
        e = DRV_AGAIN;
    return e;
}

/* The streamed response is over (ended, failed or abandoned): release the
 * producer's state, once. */
static void stream_drop(conn *c)
{
    void (*fr)(void *ud) = c->stream_free;
    void *ud = c->stream_ud;
    c->stream = NULL;
    c->stream_free = NULL;
    c->stream_ud = NULL;
    drv_buf_free(&c->sbuf);
    if (fr)
        fr(ud);
}

/* A hand-over that will not happen: release its state, once. */
static void takeover_drop(conn *c)
{
    void (*fr)(void *ud) = c->takeover_free;
    void *ud = c->takeover_ud;
    c->takeover = NULL;
    c->takeover_free = NULL;
    c->takeover_ud = NULL;
    if (fr)
        fr(ud);
}

/* A deferred request whose connection closed: tell its owner, once. */
static void defer_drop(conn *c)
{
    if (!c->deferred)
        return;
    c->deferred = false;
    drv_timer_stop(c->srv->loop, &c->dfr.timer);
    if (c->dfr.on_gone)
        c->dfr.on_gone(c->dfr.ud);
}

/* Hard close: stop everything now; the struct is freed at turn end. */
static void conn_close(conn *c)
{
    drv_http_server *srv = c->srv;
    if (c->dead)
        return;
    c->dead = true;
    stream_drop(c);
    takeover_drop(c);
    defer_drop(c);
    drv_timer_stop(srv->loop, &c->timer);
    if (c->io.fd >= 0) /* -1: handed over (hand_over) */
        drv_loop_del(srv->loop, &c->io);
    if (c->st)
        drv_stream_free(c->st, 0);
    c->st = NULL;
    drv_close(c->io.fd);
    drv_buf_free(&c->in);
    drv_buf_free(&c->out);
    drv_free(c->cert);
    c->cert = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = srv->dead;
    srv->dead = c;
    srv->nconns--;
    atomic_fetch_sub_explicit(&srv->connections_open, 1, memory_order_relaxed);
}

/*
 * Our side is done: shut it down (TLS close_notify, then FIN) and linger.
 * shutdown(2) is called here rather than through src/platform, which has no
 * half-close helper yet.
 */
static void conn_finish(conn *c)
{
    if (c->eof) {
        conn_close(c); /* the client already closed: nothing to linger for */
        return;
    }
    if (c->st)
        drv_stream_free(c->st, 0);
    c->st = NULL;
    shutdown(c->io.fd, SHUT_WR);
    drv_buf_free(&c->in);
    drv_buf_free(&c->out);
    c->state = C_LINGER;
    c->need = 0;
    c->timer_kind = T_LINGER;
    drv_timer_start(c->srv->loop, &c->timer, LINGER_MS, on_timer, c);
}

/* LINGER: drop what the client sends until it closes. */
static void linger_read(conn *c)
{
    uint8_t buf[4096];
    for (;;) {
        size_t k = 0;
        drv_err e = drv_read(c->io.fd, buf, sizeof(buf), &k);
        if (e == DRV_AGAIN)
            return;
        c->need += k;
        if (e != DRV_OK || c->need > LINGER_MAX) {
            conn_close(c);
            return;
        }
    }
}

/* Answer with a problem response, then close. */
static void respond_error(conn *c, int status, const char *why)
{
    if (drv_log_enabled(DRV_LOG_DEBUG)) {
        char peer[DRV_PEER_STRLEN], st[8];
        snprintf(st, sizeof(st), "%d", status);
        drv_debug("http: request refused", "peer", drv_peer_format(&c->peer, peer), "status", st,
                  "why", why);
    }
    c->state = C_CLOSING;
    if (problem(c->srv, &c->out, status, why, NULL) != DRV_OK)
        conn_close(c);
}

/* The cached client certificate of a TLS connection, looked up on first use. */
static const drv_peer_cert *conn_cert(conn *c)
{
    if (!c->st || c->cert_known)
        return c->cert;
    drv_peer_cert pc;
    c->cert_known = true; /* the handshake was done before the hand-over */
    if (drv_stream_peer_cert(c->st, &pc) && pc.present && pc.verified) {
        c->cert = drv_malloc(sizeof(pc));
        if (c->cert)
            *c->cert = pc;
        else
            c->cert_known = false; /* try again with the next request */
    }
    return c->cert;
}

/* A response as the handler gets it: empty capped buffers, status 200. */
static void resp_init(conn *c, drv_http_response *resp)
{
    memset(resp, 0, sizeof(*resp));
    resp->status = 200;
    drv_buf_init(&resp->headers, DRV_HTTP_MAX_RESPONSE_HEADERS);
    drv_buf_init(&resp->body, DRV_HTTP_MAX_RESPONSE_BODY);
    resp->srv_private = c;
}

/* A response that will not be sent: free its buffers, release its stream and
 * hand-over state. */
static void resp_discard(drv_http_response *resp)
{
    drv_buf_free(&resp->headers);
    drv_buf_free(&resp->body);
    if (resp->stream_free)
        resp->stream_free(resp->stream_ud);
    if (resp->takeover_free)
        resp->takeover_free(resp->takeover_ud);
    resp->stream = NULL;
    resp->stream_free = NULL;
    resp->takeover = NULL;
    resp->takeover_free = NULL;
}

/* Queue a filled response to the request `req` describes (from its handler,
 * or from a deferred request's fill) and take over its stream or hand-over. */
static void answer(conn *c, const req_info *req, drv_http_response *resp)
{
    bool close = resp->close || !req->keep_alive;
    bool streamed = resp->stream != NULL;
    /* HTTP/1.0 has no chunks: the body ends with the connection. */
    c->chunked = req->version_minor >= 1;
    if (streamed && !c->chunked)
        close = true;
    drv_err e = write_response(c, req, resp, close, &streamed);
    drv_buf_free(&resp->headers);
    drv_buf_free(&resp->body);
    if (resp->takeover_free && !c->takeover)
        resp->takeover_free(resp->takeover_ud); /* HEAD, invalid: no hand-over */
    /* From here the connection owns the producer (freed by stream_drop). */
    c->stream = resp->stream;
    c->stream_ud = resp->stream_ud;
    c->stream_free = resp->stream_free;
    if (e != DRV_OK) {
        drv_warn("http: response dropped", "error", drv_strerror(e));
        conn_close(c);
        return;
    }
    if (c->takeover)
        return; /* the hand-over follows once the head is written */
    if (!streamed) {
        stream_drop(c); /* no body goes out (HEAD, 204, 304, invalid): release it now */
    } else {
        drv_buf_init(&c->sbuf, DRV_HTTP_STREAM_MAX);
        c->stream_close = close;
        return; /* CLOSING, if at all, once the stream has ended */
    }
    if (close)
        c->state = C_CLOSING;
}

/* Call the handler for a complete request and queue its response, unless
 * the handler deferred it (the response then comes from drv_http_complete,
 * maybe already did). */
static void handle(conn *c, drv_http_request *req)
{
    drv_http_server *srv = c->srv;
    req->peer = &c->peer;
    req->tls = c->st != NULL && c->st->ops != &drv_tcp_ops;
    req->cert = conn_cert(c);
    req_info ri = {.head = span_is(req->method, "HEAD"),
                   .keep_alive = req->keep_alive,
                   .version_minor = req->version_minor};
    drv_http_response resp;
    resp_init(c, &resp);
    count(&srv->requests_total);
    c->dfr.req = ri; /* before the call: drv_http_complete may come from the handler */
    c->defer_called = false;
    srv->cfg.handler(srv->cfg.handler_ud, req, &resp);
    if (c->defer_called) {
        c->defer_called = false;
        resp_discard(&resp);
        return;
    }
    answer(c, &ri, &resp);
}

/* ------------------------------------------------------------------------ */
/* Deferred responses                                                        */

/* The fallback when a deferred response cannot be sent as filled. */
static void fill_500(void *ud, drv_http_response *resp)
{
    (void)ud;
    resp->status = 500;
}

static void on_defer_timer(void *ud)
{
    conn *c = ud;
    drv_http_deferred *d = &c->dfr;
    if (!c->deferred || c->dead)
        return;
    d->on_timeout(d->ud, d);
    if (c->deferred && !c->dead) {
        drv_error("http: on_timeout did not complete the deferred request, sent as 500");
        drv_http_complete(d, fill_500, NULL);
    }
}

drv_http_deferred *drv_http_defer(drv_http_response *resp, uint32_t timeout_ms,
                                  void (*on_timeout)(void *ud, drv_http_deferred *d),
                                  void (*on_gone)(void *ud), void *ud)
{
    conn *c = resp->srv_private;
    if (!c)
        return NULL; /* not a response the server made */
    if (c->filling) {
        c->fill_defer = true; /* a fill cannot defer again: answered 500 */
        return NULL;
    }
    assert(on_timeout && !c->defer_called && !c->deferred && !c->dead);
    c->defer_called = true;
    c->deferred = true;
    drv_http_deferred *d = &c->dfr;
    d->c = c;
    d->on_timeout = on_timeout;
    d->on_gone = on_gone;
    d->ud = ud;
    drv_timer_start(c->srv->loop, &d->timer, timeout_ms, on_defer_timer, c);
    return d;
}

void drv_http_complete(drv_http_deferred *d, void (*fill)(void *ud, drv_http_response *resp),
                       void *fill_ud)
{
    conn *c = d->c;
    assert(fill && c->deferred && !c->dead);
    c->deferred = false;
    drv_timer_stop(c->srv->loop, &d->timer);
    drv_http_response resp;
    resp_init(c, &resp);
    c->filling = true;
    c->fill_defer = false;
    fill(fill_ud, &resp);
    c->filling = false;
    if (resp.stream || resp.takeover || c->fill_defer) {
        drv_error("http: a deferred response cannot stream, hand over or defer, sent as 500");
        resp_discard(&resp);
        resp_init(c, &resp);
        resp.status = 500;
    }
    answer(c, &d->req, &resp);
    /* Write it, then take the requests that waited, from the end of this turn
     * (never from inside the caller, which may be this connection's handler). */
    if (!c->dead)
        mark_ready(c);
}

/*
 * One call of a streamed response's producer, its output framed into `out`.
 * At the end the last chunk follows and the connection takes requests again
 * (or closes); on a producer error it is closed, the body left unfinished.
 * false when the producer yielded (nothing appended, more to come).
 */
static bool produce(conn *c)
{
    drv_buf *sb = &c->sbuf;
    sb->off = sb->len = 0;
    drv_err r = c->stream(c->stream_ud, sb);
    size_t n = drv_buf_avail(sb);
    if (r != DRV_OK && r != DRV_AGAIN) {
        char peer[DRV_PEER_STRLEN];
        drv_warn("http: streamed response aborted", "peer", drv_peer_format(&c->peer, peer),
                 "error", drv_strerror(r));
        conn_close(c);
        return true;
    }
    drv_err e = n ? put_chunk(c, sb->data + sb->off, n) : DRV_OK;
    if (e == DRV_OK && r == DRV_OK && c->chunked)
        e = drv_buf_append(&c->out, "0\r\n\r\n", 5);
    if (e != DRV_OK) {
        drv_warn("http: streamed response dropped", "error", drv_strerror(e));
        conn_close(c);
        return true;
    }
    c->progress = true;
    if (r == DRV_OK) {
        stream_drop(c);
        if (c->stream_close)
            c->state = C_CLOSING;
        return true;
    }
    return n > 0;
}

/* Answer the complete requests in `in`, in order, while output is small;
 * true when it stopped because of the output. */
static bool process(conn *c)
{
    drv_http_server *srv = c->srv;
    for (;;) {
        if (c->state != C_OPEN || c->dead || c->stream || c->takeover || c->deferred)
            return false; /* a stream, hand-over or deferred response holds the requests behind it */
        if (drv_buf_avail(&c->out) >= OUT_LOW)
            return true;
        size_t avail = drv_buf_avail(&c->in);
        bool full = avail >= c->in.cap;
        if (avail == 0 || (avail < c->need && !full)) {
            if (c->eof)
                c->state = C_CLOSING; /* a partial request at EOF gets no answer */
            return false;
        }
        drv_http_request req;
        size_t used = 0;
        int status = 0;
        const char *why = NULL;
        char *p = (char *)c->in.data + c->in.off;
        drv_err e = drv_http_parse(p, avail, &srv->cfg.limits, &req, &used, &status, &why);
        if (e == DRV_AGAIN) {
            c->need = used;
            if (full) {
                respond_error(c, 413, "request too large");
            } else if (req.head_len && req.expect_continue && !c->continue_sent) {
                static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
                c->continue_sent = true;
                count_response(srv, 100);
                if (drv_buf_append(&c->out, cont, sizeof(cont) - 1) != DRV_OK)
                    conn_close(c);
            } else if (c->eof) {
                c->state = C_CLOSING;
            }
            return false;
        }
        if (e != DRV_OK) {
            count(&srv->bad_requests);
            respond_error(c, status, why);
            return false;
        }
        handle(c, &req);
        if (c->dead)
            return false;
        drv_buf_consume(&c->in, used);
        if (drv_buf_avail(&c->in) == 0)
            drv_buf_free(&c->in);
        c->need = 0;
        c->continue_sent = false;
        c->timer_kind = T_NONE; /* the next request gets its own deadline */
    }
}

/* Write `out`: DRV_OK once empty (and freed), DRV_AGAIN while some is left. */
static drv_err flush(conn *c)
{
    while (drv_buf_avail(&c->out) > 0) {
        size_t w = 0;
        drv_err e = conn_write(c, c->out.data + c->out.off, drv_buf_avail(&c->out), &w);
        if (e != DRV_OK)
            return e;
        c->progress = true;
        drv_buf_consume(&c->out, w);
    }
    drv_buf_free(&c->out);
    return DRV_OK;
}

static bool can_read(const conn *c)
{
    return c->state == C_OPEN && !c->eof && drv_buf_avail(&c->out) < OUT_LOW &&
           drv_buf_avail(&c->in) < c->in.cap;
}

/* One read into `in`. */
static drv_err read_some(conn *c)
{
    size_t avail = drv_buf_avail(&c->in);
    size_t room = c->in.cap - avail;
    size_t want = READ_CHUNK;
    if (c->need > avail && c->need - avail > want)
        want = c->need - avail < READ_CHUNK_MAX ? c->need - avail : READ_CHUNK_MAX;
    if (want > room)
        want = room;
    drv_err e;
    uint8_t *dst = drv_buf_reserve(&c->in, want, &e);
    if (!dst)
        return e;
    size_t k = 0;
    e = conn_read(c, dst, c->in.size - c->in.len, &k);
    if (e == DRV_OK)
        c->in.len += (uint32_t)k;
    else if (drv_buf_avail(&c->in) == 0)
        drv_buf_free(&c->in);
    return e;
}

static void update_events(conn *c)
{
    uint32_t ev = 0;
    if (c->state == C_LINGER) {
        ev = DRV_EV_READ;
    } else {
        bool reading = can_read(c);
        if (reading)
            ev |= DRV_EV_READ;
        if (drv_buf_avail(&c->out) > 0)
            ev |= DRV_EV_WRITE;
        /* A TLS read may need the socket writable first (transport.h). */
        if (reading && c->st && (drv_stream_wants(c->st) & DRV_EV_WRITE))
            ev |= DRV_EV_WRITE;
    }
    if (drv_loop_mod(c->srv->loop, &c->io, ev) != DRV_OK)
        conn_close(c);
}

static void update_timer(conn *c)
{
    drv_http_server *srv = c->srv;
    uint8_t kind;
    uint64_t ms;
    if (c->state == C_LINGER)
        return;
    if (drv_buf_avail(&c->out) > 0 || c->stream) {
        kind = T_WRITE;
        ms = srv->cfg.request_timeout_ms;
        if (c->timer_kind == kind && !c->progress)
            return;
    } else if (c->deferred) {
        /* Neither idle nor late: the deferral has its own deadline. */
        drv_timer_stop(srv->loop, &c->timer);
        c->timer_kind = T_NONE;
        return;
    } else if (drv_buf_avail(&c->in) > 0) {
        kind = T_REQUEST;
        ms = srv->cfg.request_timeout_ms;
        if (c->timer_kind == kind)
            return;
    } else {
        kind = T_IDLE;
        ms = srv->cfg.idle_timeout_ms;
        if (c->timer_kind == kind)
            return;
    }
    c->timer_kind = kind;
    drv_timer_start(srv->loop, &c->timer, ms, on_timer, c);
}

static void on_timer(void *ud)
{
    conn *c = ud;
    uint8_t kind = c->timer_kind;
    c->timer_kind = T_NONE;
    switch (kind) {
    case T_IDLE:
        c->state = C_CLOSING;
        break;
    case T_REQUEST:
        respond_error(c, 408, "request not completed in time");
        break;
    default: /* T_WRITE: the client does not read; T_LINGER: it does not close */
        conn_close(c);
        return;
    }
    if (!c->dead)
        conn_run(c);
}

/* The head of a hand-over is written: give the connection away. */
static void hand_over(conn *c)
{
    void (*fn)(void *, int, drv_stream *, const drv_peer *, const uint8_t *, size_t) = c->takeover;
    void *ud = c->takeover_ud;
    c->takeover = NULL;
    c->takeover_free = NULL; /* the receiver owns ud now */
    int fd = c->io.fd;
    drv_stream *st = c->st;
    drv_peer peer = c->peer;
    drv_buf rest = c->in;
    drv_buf_init(&c->in, 0);
    /* Close our side of the bookkeeping without touching the socket. */
    drv_loop_del(c->srv->loop, &c->io);
    c->io.fd = -1; /* conn_close leaves it alone */
    c->st = NULL;
    conn_close(c);
    fn(ud, fd, st, &peer, rest.data ? rest.data + rest.off : NULL, drv_buf_avail(&rest));
    drv_buf_free(&rest);
}

/* Run again at the end of this turn (another connection's turn first). */
static void mark_ready(conn *c)
{
    if (c->in_ready)
        return;
    c->in_ready = true;
    c->ready_next = c->srv->ready;
    c->srv->ready = c;
    drv_loop_poke(c->srv->loop);
}

/* Everything a connection can do now: answer, produce, write, read, in rounds. */
static void conn_run(conn *c)
{
    unsigned calls = 0; /* producer calls in this run */
    c->progress = false;
    for (unsigned round = 0;; round++) {
        if (c->state == C_LINGER) {
            linger_read(c);
            if (c->dead)
                return;
            break;
        }
        bool held = c->state == C_OPEN && process(c);
        if (c->dead)
            return;
        bool ended = false; /* a stream ended: requests behind it may wait in `in` */
        if (c->stream && drv_buf_avail(&c->out) < OUT_LOW) {
            if (calls == STREAM_CALLS || !produce(c)) {
                /* Others' turn (or a yield): go on at the end of this loop turn. */
                if (!c->dead)
                    mark_ready(c);
            } else {
                calls++;
                ended = !c->stream;
            }
            if (c->dead)
                return;
        }
        drv_err e = flush(c);
        if (e != DRV_OK && e != DRV_AGAIN) {
            conn_close(c);
            return;
        }
        if (c->takeover && e == DRV_OK) {
            hand_over(c);
            return;
        }
        if (c->deferred && c->eof) {
            conn_close(c); /* the client gave up waiting (as nginx sees it): on_gone */
            return;
        }
        /* requests wait in `in`, or the stream wants more */
        bool more =
            (held || ended || (c->stream && !c->in_ready)) && drv_buf_avail(&c->out) < OUT_LOW;
        if (c->state == C_CLOSING) {
            if (drv_buf_avail(&c->out) > 0)
                break;
            conn_finish(c);
            if (c->dead)
                return;
            continue;
        }
        if (!more && !can_read(c))
            break;
        if (round == ROUNDS) {
            mark_ready(c);
            break;
        }
        if (more)
            continue;
        e = read_some(c);
        if (e == DRV_AGAIN)
            break;
        if (e == DRV_CLOSED) {
            c->eof = true;
        } else if (e != DRV_OK) {
            conn_close(c);
            return;
        }
    }
    update_events(c);
    if (!c->dead)
        update_timer(c);
}

static void on_io(void *ud, uint32_t events)
{
    conn *c = ud;
    if (c->dead)
        return;
    /* Hang-up while deferred: gone, even when a full `in` stops reading (which
     * would otherwise see it), so the hang-up cannot wake the loop forever. */
    if (c->deferred && (events & DRV_EV_ERROR)) {
        conn_close(c);
        return;
    }
    conn_run(c);
}

/* ------------------------------------------------------------------------ */
/* Hand-over                                                                 */

static void discard(adopted *a)
{
    if (a->st)
        drv_stream_free(a->st, 0);
    drv_close(a->fd);
    drv_free(a);
}

/* Over max_connections: a best-effort 503 (one non-blocking write), then close. */
static void refuse(drv_http_server *srv, adopted *a)
{
    count(&srv->connections_refused);
    drv_buf b;
    drv_buf_init(&b, 2048);
    if (problem(srv, &b, 503, "too many connections", "Retry-After: 5\r\n") == DRV_OK) {
        size_t w = 0;
        if (a->st)
            (void)drv_stream_write(a->st, b.data, b.len, &w);
        else
            (void)drv_write(a->fd, b.data, b.len, &w);
    }
    drv_buf_free(&b);
    drv_debug("http: connection refused: max_connections reached");
    discard(a);
}

static void conn_open(drv_http_server *srv, adopted *a)
{
    if (srv->nconns >= srv->cfg.max_connections) {
        refuse(srv, a);
        return;
    }
    conn *c = drv_calloc(1, sizeof(*c));
    if (!c) {
        drv_warn("http: connection dropped", "error", drv_strerror(DRV_NOMEM));
        discard(a);
        return;
    }
    c->srv = srv;
    c->io.fd = a->fd;
    c->io.cb = on_io;
    c->io.ud = c;
    c->st = a->st;
    c->peer = a->peer;
    c->state = C_OPEN;
    drv_buf_init(&c->in, srv->in_cap);
    drv_buf_init(&c->out, srv->out_cap);
    drv_err e = a->npre ? drv_buf_append(&c->in, a->pre, a->npre) : DRV_OK;
    if (e == DRV_OK)
        e = drv_loop_add(srv->loop, &c->io, DRV_EV_READ);
    if (e != DRV_OK) {
        drv_warn("http: connection dropped", "error", drv_strerror(e));
        drv_buf_free(&c->in);
        drv_free(c);
        discard(a);
        return;
    }
    drv_free(a);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    count(&srv->connections_open);
    count(&srv->connections_total);
    conn_run(c);
}

static void wake(drv_http_server *srv)
{
    uint64_t one = 1;
    ssize_t r = write(srv->wake_fd, &one, sizeof(one));
    (void)r; /* the counter only fails when saturated: it is still readable */
}

/* The eventfd: take the queued hand-overs and posts, or stop. */
static void on_wake(void *ud, uint32_t events)
{
    drv_http_server *srv = ud;
    uint64_t v;
    size_t k;
    (void)events;
    (void)drv_read(srv->wake_fd, &v, sizeof(v), &k);
    pthread_mutex_lock(&srv->lock);
    bool stop = srv->stopping;
    adopted *q = stop ? NULL : srv->queue;
    post *p = stop ? NULL : srv->posts;
    if (!stop) {
        srv->queue = srv->queue_tail = NULL;
        srv->posts = srv->posts_tail = NULL;
    }
    pthread_mutex_unlock(&srv->lock);
    if (stop) {
        drv_loop_stop(srv->loop); /* stop() closes everything after the join */
        return;
    }
    while (q) {
        adopted *next = q->next;
        conn_open(srv, q);
        q = next;
    }
    /* Posts made while these run are queued anew: they run on the next wake. */
    while (p) {
        post *next = p->next;
        p->fn(p->ud);
        drv_free(p);
        p = next;
    }
}

drv_err drv_http_post(drv_http_server *srv, void (*fn)(void *ud), void *ud)
{
    post *p = drv_malloc(sizeof(*p));
    if (!p)
        return DRV_NOMEM;
    p->next = NULL;
    p->fn = fn;
    p->ud = ud;
    pthread_mutex_lock(&srv->lock);
    bool stopping = srv->stopping;
    if (!stopping) {
        if (srv->posts_tail)
            srv->posts_tail->next = p;
        else
            srv->posts = p;
        srv->posts_tail = p;
        /* Under the lock: once stop() has set `stopping`, no post touches the
         * eventfd it is about to close. */
        wake(srv);
    }
    pthread_mutex_unlock(&srv->lock);
    if (stopping) {
        drv_free(p);
        return DRV_CLOSED;
    }
    return DRV_OK;
}

void drv_http_adopt(drv_http_server *srv, int fd, drv_stream *st, const drv_peer *peer,
                    const uint8_t *pre, size_t npre)
{
    adopted *a = drv_malloc(sizeof(*a) + npre);
    if (!a) {
        drv_warn("http: connection dropped", "error", drv_strerror(DRV_NOMEM));
        if (st)
            drv_stream_free(st, 0);
        drv_close(fd);
        return;
    }
    a->next = NULL;
    a->fd = fd;
    a->st = st;
    if (peer)
        a->peer = *peer;
    else
        memset(&a->peer, 0, sizeof(a->peer));
    a->npre = npre;
    if (npre)
        memcpy(a->pre, pre, npre);
    pthread_mutex_lock(&srv->lock);
    bool stopping = srv->stopping;
    if (!stopping) {
        if (srv->queue_tail)
            srv->queue_tail->next = a;
        else
            srv->queue = a;
        srv->queue_tail = a;
    }
    pthread_mutex_unlock(&srv->lock);
    if (stopping)
        discard(a);
    else
        wake(srv);
}

/* ------------------------------------------------------------------------ */
/* The server                                                                */

static void free_dead(drv_http_server *srv)
{
    conn **pp = &srv->dead;
    while (*pp) {
        conn *c = *pp;
        if (c->in_ready) { /* still on `ready`: freed after that list is run */
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        drv_free(c);
    }
}

static void on_turn_end(void *ud)
{
    drv_http_server *srv = ud;
    conn *list = srv->ready;
    srv->ready = NULL;
    while (list) {
        conn *c = list;
        list = c->ready_next;
        c->in_ready = false;
        if (!c->dead)
            conn_run(c);
    }
    free_dead(srv);
}

static void *server_main(void *arg)
{
    drv_http_server *srv = arg;
    drv_loop_run(srv->loop, false);
    return NULL;
}

drv_err drv_http_server_start(const drv_http_config *cfg, drv_http_server **out)
{
    if (!cfg || !cfg->handler || !out)
        return DRV_INVAL;
    drv_http_server *srv = drv_calloc(1, sizeof(*srv));
    if (!srv)
        return DRV_NOMEM;
    srv->cfg = *cfg;
    drv_http_limits *lim = &srv->cfg.limits;
    if (!lim->max_head)
        lim->max_head = DEFAULT_MAX_HEAD;
    if (lim->max_head > MAX_HEAD_CLAMP)
        lim->max_head = MAX_HEAD_CLAMP;
    if (!lim->max_body)
        lim->max_body = DEFAULT_MAX_BODY;
    if (lim->max_body > MAX_BODY_CLAMP)
        lim->max_body = MAX_BODY_CLAMP;
    if (!srv->cfg.idle_timeout_ms)
        srv->cfg.idle_timeout_ms = DEFAULT_IDLE_MS;
    if (!srv->cfg.request_timeout_ms)
        srv->cfg.request_timeout_ms = DEFAULT_REQUEST_MS;
    if (!srv->cfg.max_connections)
        srv->cfg.max_connections = DEFAULT_MAX_CONNECTIONS;
    srv->in_cap = (size_t)lim->max_head + (size_t)lim->max_body + DRV_HTTP_CHUNK_SLACK + 1;
    srv->out_cap = (size_t)OUT_LOW + OUT_HEAD_ROOM + DRV_HTTP_MAX_RESPONSE_HEADERS +
                   DRV_HTTP_MAX_RESPONSE_BODY;
    srv->wake_fd = -1;

    drv_err e = DRV_NOMEM;
    if (pthread_mutex_init(&srv->lock, NULL) != 0)
        goto out_free;
    e = drv_loop_new(&srv->loop);
    if (e != DRV_OK)
        goto out_mutex;
    e = drv_eventfd(&srv->wake_fd);
    if (e != DRV_OK)
        goto out_loop;
    srv->wake_io.fd = srv->wake_fd;
    srv->wake_io.cb = on_wake;
    srv->wake_io.ud = srv;
    e = drv_loop_add(srv->loop, &srv->wake_io, DRV_EV_READ);
    if (e != DRV_OK)
        goto out_eventfd;
    drv_loop_set_turn_end(srv->loop, on_turn_end, srv);

    /* The API thread takes no signals: SIGINT/SIGTERM belong to the main loop's signalfd. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&srv->thread, NULL, server_main, srv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        e = DRV_NOMEM;
        goto out_del;
    }
    srv->thread_started = true;
    *out = srv;
    return DRV_OK;

out_del:
    drv_loop_del(srv->loop, &srv->wake_io);
out_eventfd:
    drv_close(srv->wake_fd);
out_loop:
    drv_loop_free(srv->loop);
out_mutex:
    pthread_mutex_destroy(&srv->lock);
out_free:
    drv_free(srv);
    return e;
}

void drv_http_server_stop(drv_http_server *srv)
{
    if (!srv)
        return;
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    adopted *q = srv->queue;
    srv->queue = srv->queue_tail = NULL;
    post *p = srv->posts;
    srv->posts = srv->posts_tail = NULL;
    pthread_mutex_unlock(&srv->lock);
    wake(srv);
    if (srv->thread_started)
        pthread_join(srv->thread, NULL);

    /* The loop thread is gone: everything below is single-threaded (but
     * drv_http_post may still be called, and refused). */
    while (q) {
        adopted *next = q->next;
        discard(q);
        q = next;
    }
    while (srv->conns)
        conn_close(srv->conns);
    for (conn *c = srv->ready; c; c = c->ready_next)
        c->in_ready = false;
    srv->ready = NULL;
    free_dead(srv);
    /* Posts still queued run here, on the stopping thread, once every
     * connection is gone (deferred requests had their on_gone), so that what
     * they carry is released by their own code (http.h). */
    while (p) {
        post *next = p->next;
        p->fn(p->ud);
        drv_free(p);
        p = next;
    }
    drv_loop_del(srv->loop, &srv->wake_io);
    drv_close(srv->wake_fd);
    drv_loop_free(srv->loop);
    pthread_mutex_destroy(&srv->lock);
    drv_free(srv);
}

void drv_http_server_stats(drv_http_server *srv, drv_http_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->connections_open = atomic_load_explicit(&srv->connections_open, memory_order_relaxed);
    out->connections_total = atomic_load_explicit(&srv->connections_total, memory_order_relaxed);
    out->connections_refused =
        atomic_load_explicit(&srv->connections_refused, memory_order_relaxed);
    out->requests_total = atomic_load_explicit(&srv->requests_total, memory_order_relaxed);
    out->bad_requests = atomic_load_explicit(&srv->bad_requests, memory_order_relaxed);
    for (int i = 0; i < 6; i++)
        out->responses_by_class[i] =
            atomic_load_explicit(&srv->responses_by_class[i], memory_order_relaxed);
}
