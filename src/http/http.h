/*
 * http.h — the HTTP/1.1 server under the REST API (and, later, SSE and the
 * live-stream WebSocket): request parsing, responses, and the API thread
 * that owns HTTP connections.
 *
 * Where connections come from: the HTTP listeners (8080, and 8443 over TLS)
 * belong to the MQTT workers, because `/mqtt` upgrades become broker
 * connections.  When the first request head on such a connection is for any
 * other path, the worker hands the connection — socket, transport stack and
 * the bytes it already read — to the HTTP server with drv_http_adopt().  From
 * then on one API thread owns it: it reads requests, calls the handler,
 * writes responses, keeps the connection alive between requests and closes
 * it on error, idle timeout or `Connection: close`.  Blocking work (SQLite,
 * password hashing) therefore never stalls device traffic, and the
 * hand-off costs one queue push per connection, not per request.
 *
 * Parsing is bounded (head size, header count, body size) and the parser is
 * fuzzed (fuzz/fuzz_http.c).  A malformed request gets the matching status
 * (400, 405-free: the router decides methods, 411, 413, 414, 431, 501, 505)
 * with an application/problem+json body, then the connection is closed.
 *
 * Requests on one connection are handled one at a time, in order
 * (pipelined requests wait in the input buffer, also behind a streamed
 * response until its end).  A handler may stream a body of any size
 * through a producer callback instead of buffering it (see
 * drv_http_response): exports now, server-sent events later.
 */
#ifndef DRV_HTTP_HTTP_H
#define DRV_HTTP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "core/span.h"
#include "net/transport.h"
#include "platform/net.h"

#define DRV_HTTP_MAX_HEADERS 64

typedef struct drv_http_header {
    drv_span name;  /* as sent; compare case-insensitively */
    drv_span value; /* leading and trailing whitespace removed */
} drv_http_header;

/* One parsed request.  The spans point into the connection's input buffer
 * and are valid until the handler returns. */
typedef struct drv_http_request {
    drv_span method; /* "GET", "POST", ... (case-sensitive, as RFC 9110 says) */
    drv_span target; /* as sent: path and query */
    /* target up to '?', still percent-encoded ("*" for OPTIONS *; the static
     * string "/" for an absolute-form target without a path) */
    drv_span path;
    drv_span query;        /* after '?', empty when none */
    uint8_t version_minor; /* HTTP/1.<minor>: 0 or 1 */
    bool keep_alive;       /* the connection stays open after the response */
    bool expect_continue;  /* "Expect: 100-continue" was sent */
    size_t nheaders;       /* entries used in headers */
    drv_http_header headers[DRV_HTTP_MAX_HEADERS]; /* in arrival order, repeats kept */
    drv_span body; /* whole body (Content-Length or de-chunked), empty if none */
    /* bytes of the request line and headers, final CRLF CRLF included (and
     * any empty lines before the request line) */
    size_t head_len;
    /* Set by the server, not the parser: */
    const drv_peer *peer;             /* the client's address */
    bool tls;                         /* arrived over TLS */
    const struct drv_peer_cert *cert; /* verified TLS client certificate, or NULL */
} drv_http_request;

/* Limits the parser enforces (0 in a field: the default).  The server keeps
 * a whole request in memory, so it clamps max_head to 1 MiB and max_body to
 * 1 GiB. */
typedef struct drv_http_limits {
    uint32_t max_head; /* request line + headers, default 16 KiB (→ 431; line alone → 414) */
    uint64_t max_body; /* default 64 MiB (→ 413) */
} drv_http_limits;

/* Bytes a chunked body may spend on framing (chunk-size lines, extensions,
 * CRLFs, trailers) on top of its data (→ 413), so a request never needs more
 * than max_head + max_body + DRV_HTTP_CHUNK_SLACK bytes of buffer. */
#define DRV_HTTP_CHUNK_SLACK (64u << 10)

/*
 * Parse one request from the start of `p` (n bytes).
 *   DRV_OK     — a complete request (head and body) is in req; *used is its
 *                total length on the wire (head + body, chunk framing
 *                included), so the next pipelined request starts at p+*used.
 *                A chunked body is de-chunked in place, so `p` is writable
 *                (and the same bytes cannot be parsed a second time).
 *   DRV_AGAIN  — not complete yet: read more and call again with the same
 *                start (the parser keeps no state between calls).  *used is
 *                a hint: the result cannot change before n reaches *used
 *                (> n).  Once the head is complete, req->head_len is set and
 *                the head fields of req are filled (expect_continue tells the
 *                server to send 100 Continue); before that head_len is 0.
 *   DRV_PROTOCOL — malformed or over a limit: *status is the HTTP status to
 *                answer (400, 411, 413, 414, 431, 501, 505) and *why a short
 *                static reason for the problem+json "detail".
 * A prefix of a valid request is never refused.  Strict where RFC 9112 lets
 * a server choose: lines must end in CRLF (a bare LF or bare CR is a 400),
 * no obsolete line folding, no whitespace before a header's colon, exactly
 * one Host in HTTP/1.1, Transfer-Encoding only "chunked" (else 501) and
 * never with Content-Length or in HTTP/1.0 (400).  HTTP/1.0 POST, PUT and
 * PATCH without Content-Length get 411; HTTP/1.x with x > 1 is read as 1.1,
 * other major versions get 505.  Trailer fields are checked and dropped.
 * Never reads beyond p+n; never allocates.
 */
drv_err drv_http_parse(char *p, size_t n, const drv_http_limits *lim, drv_http_request *req,
                       size_t *used, int *status, const char **why);

/* The value of header `name` (case-insensitive), or false when absent. */
bool drv_http_header_get(const drv_http_request *req, const char *name, drv_span *value);

/*
 * The value of query parameter `name` (the first one), percent-decoded ('+'
 * is a space) into buf (cap bytes, NUL-terminated).  Returns false when the
 * parameter is absent; true with *truncated set (truncated may be NULL) when
 * it did not fit.  Malformed escapes and "%00" are kept as sent, undecoded,
 * so the value never holds a NUL byte.
 */
bool drv_http_query_get(const drv_http_request *req, const char *name, char *buf, size_t cap,
                        bool *truncated);

/* Percent-decode a path segment into buf (NUL-terminated); false when it is
 * malformed, contains NUL or '/', or does not fit. */
bool drv_http_pct_decode(drv_span in, char *buf, size_t cap);

/* The standard reason phrase for a status code ("Not Found"), "" if unknown. */
const char *drv_http_reason(int status);

/* Caps of the response buffers the server gives the handler (appends beyond
 * them fail with DRV_TOOBIG). */
#define DRV_HTTP_MAX_RESPONSE_HEADERS (16u << 10)
#define DRV_HTTP_MAX_RESPONSE_BODY (64u << 20)

/* A streamed body's producer is asked for about this many bytes per call, and
 * the buffer it is given is capped at DRV_HTTP_STREAM_MAX (see below). */
#define DRV_HTTP_STREAM_SLICE (64u << 10)
#define DRV_HTTP_STREAM_MAX (1u << 20)

/*
 * A response the handler fills.  `headers` holds extra header lines, each
 * "Name: value\r\n" (use drv_http_add_header); the server adds the status
 * line, Content-Length, Date, Connection, and Content-Type when
 * content_type is set.  The server initialises both buffers (empty, capped
 * as above) before the call and frees them after.  A status outside
 * 200..599 is answered as 500; 204 and 304 are sent without a body; for
 * HEAD the body only sets Content-Length.
 *
 * Streamed bodies (exports, later SSE): a handler that sets `stream` hands
 * the body over to a producer instead of filling `body` whole.  The server
 * sends the head with "Transfer-Encoding: chunked" (HTTP/1.0: no length and
 * "Connection: close", the body ends with the connection), then whatever
 * `body` holds as the first bytes, then calls
 *     stream(stream_ud, out)
 * on the API thread each time less than DRV_HTTP_STREAM_SLICE of the
 * connection's output waits to be sent.  `out` is empty; the producer
 * appends about DRV_HTTP_STREAM_SLICE bytes (a little more is fine; appends
 * past DRV_HTTP_STREAM_MAX fail with DRV_TOOBIG) and returns
 *   DRV_AGAIN  more to come (with nothing appended: a yield, it is called
 *              again on the next loop turn — do not use it to wait),
 *   DRV_OK     done: what it appended is the end (the server writes the
 *              last chunk; the connection then goes on with the next request),
 *   an error   abort: the connection is closed without the last chunk, so
 *              the client sees a truncated body, never a complete wrong one.
 * Calls are made in slices between other connections' events, so one long
 * stream never holds the API thread; a client that stops reading stalls
 * only its own stream (and is closed after request_timeout_ms without
 * progress).  stream_free(stream_ud) (may be NULL) is called exactly once,
 * on the API thread or in drv_http_server_stop: after the end, an error, a
 * closed connection, or at once when no body is sent (HEAD, 204, 304, an
 * invalid response).  The producer must not touch the request: its spans
 * are gone once the handler returns.
 *
 * Hand-over (a WebSocket upgrade, a live event stream): a handler that sets
 * `takeover` answers with a head only — status 101 (the server adds
 * "Connection: Upgrade"; the handler adds Upgrade and Sec-WebSocket-Accept)
 * or 2xx (the server adds "Connection: close" and no length: the body is
 * whatever follows until the connection ends) — plus any `body` bytes as
 * the start of that body.  Once all of it is written the server gives the
 * connection away:
 *     takeover(takeover_ud, fd, st, peer, rest, nrest)
 * on the API thread, with the socket (non-blocking, no longer watched), its
 * transport stack (TLS, or NULL) and what the client sent after the request
 * (rest, valid during the call).  The receiver owns fd and st from then on.
 * If the connection fails first, or the request was HEAD, or the response
 * was invalid, takeover_free(takeover_ud) is called instead (exactly one of
 * the two is called).  No requests are read behind a hand-over.
 */
typedef struct drv_http_response {
    int status;               /* 200 unless set */
    const char *content_type; /* static string, e.g. "application/json"; NULL: none */
    drv_buf headers;          /* extra header lines, "Name: value\r\n" each */
    drv_buf body;             /* the content (for HEAD: only its length is sent) */
    bool close;               /* close the connection after this response */
    /* Streamed body (see above); NULL: `body` is the whole content. */
    drv_err (*stream)(void *ud, drv_buf *out);
    void *stream_ud;               /* the producer's state, passed to both calls */
    void (*stream_free)(void *ud); /* releases stream_ud; NULL: nothing to release */
    /* Hand-over (see below); NULL: the connection stays with the server. */
    void (*takeover)(void *ud, int fd, drv_stream *st, const drv_peer *peer, const uint8_t *rest,
                     size_t nrest);
    void *takeover_ud;
    void (*takeover_free)(void *ud); /* the hand-over did not happen; NULL: nothing to release */
    /* The server's (it finds the connection through it for drv_http_defer); do
     * not touch.  NULL in a response the server did not make. */
    void *srv_private;
} drv_http_response;

/* Append "name: value\r\n" (value formatted like printf); DRV_INVAL when
 * name is not a token, is one the server sets itself (Content-Length,
 * Transfer-Encoding, Connection, Date), or the value contains CR, LF or
 * another control character; DRV_TOOBIG past the headers' cap. */
drv_err drv_http_add_header(drv_http_response *resp, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The application: called on the API thread for each complete request (it
 * may block: that stalls HTTP connections only, never device traffic). */
typedef void (*drv_http_handler)(void *ud, const drv_http_request *req, drv_http_response *resp);

/*
 * Deferred responses (a command waited for synchronously, a long poll): a
 * handler must not block the API thread to wait for another thread's result,
 * so it parks the request with drv_http_defer and answers it later with
 * drv_http_complete, on the API thread, typically from a function the other
 * thread queued with drv_http_post.  While a request is deferred its
 * connection reads no further requests (pipelined ones wait, as behind a
 * stream) and the idle and request timeouts do not apply; the deferral's own
 * timeout does.  A client that closes its side (EOF) while a request is
 * deferred counts as gone, as in nginx: on_gone runs and the work behind the
 * request can be abandoned.
 *
 *                 drv_http_defer                 drv_http_complete
 *   handler runs ────────────────▶ DEFERRED ─────────────────────▶ answered, the
 *                                   │    │    (a post, on_timeout,   next request
 *                        timeout_ms │    │     any API-thread code)  is read
 *                                   ▼    │ connection closed: client EOF or
 *                 on_timeout(ud, d):     │ gone, write error or stall,
 *                 must complete          │ server stop
 *                                        ▼
 *                                 on_gone(ud); d is invalid
 */
typedef struct drv_http_deferred drv_http_deferred;

/*
 * In a handler only: answer this request later.  The server sends nothing
 * for it and reads no further requests on the connection (pipelined ones
 * wait) until drv_http_complete(d, ...) is called on the API thread.  If
 * that has not happened after timeout_ms, on_timeout(ud, d) is called on
 * the API thread and must complete d (required; if it does not, the request
 * is answered 500).  If the connection closes first (client gone, write
 * error, server stopping), on_gone(ud) is called instead, exactly once, and
 * d is invalid from then on (on_gone may be NULL; it runs on the API thread,
 * or in drv_http_server_stop).  Exactly one of drv_http_complete (possibly
 * from on_timeout) or on_gone ends a deferred request.  Whatever the handler
 * put in resp is ignored (a stream_free or takeover_free it set is called at
 * once).  drv_http_complete may be called before the handler returns.
 * Returns NULL when the request cannot be deferred: out of memory, a
 * response the server did not make, or a call from a fill (see below); the
 * handler then answers normally, e.g. 503.  At most one call per request.
 */
drv_http_deferred *drv_http_defer(drv_http_response *resp, uint32_t timeout_ms,
                                  void (*on_timeout)(void *ud, drv_http_deferred *d),
                                  void (*on_gone)(void *ud), void *ud);

/* API thread only: answer a deferred request now.  fill(fill_ud, resp) fills
 * resp exactly as a handler would (status, content_type, headers, body,
 * close; a stream, takeover or another defer from fill is answered 500).
 * The response is written as if the handler had returned it (HEAD, keep-alive
 * and HTTP/1.0 rules of the original request apply), then the connection
 * goes on with pipelined requests.  d is invalid after the call. */
void drv_http_complete(drv_http_deferred *d, void (*fill)(void *ud, drv_http_response *resp),
                       void *fill_ud);

typedef struct drv_http_config {
    drv_http_limits limits;   /* parser limits (0 fields: defaults) */
    uint32_t idle_timeout_ms; /* keep-alive connection with no request: closed (default 60 s) */
    /* a started request must be complete within (→ 408), and pending output
     * must make progress within (default 30 s) */
    uint32_t request_timeout_ms;
    uint32_t max_connections; /* beyond this, adopted connections are closed (default 10000) */
    drv_http_handler handler; /* required */
    void *handler_ud;         /* passed to handler */
} drv_http_config;

typedef struct drv_http_server drv_http_server;

/* Create the server and start its thread (one event loop).  cfg is copied. */
drv_err drv_http_server_start(const drv_http_config *cfg, drv_http_server **out);

/*
 * Any thread: hand over a connection.  `fd` is the connected, non-blocking
 * socket, no longer watched by the caller's loop; `st` its transport stack
 * (NULL for plain TCP, else a TLS stream whose handshake is done);
 * `pre`/`npre` the bytes already read from it (the start of the first
 * request), copied.  The server owns fd and st from here, also on failure.
 * Over max_connections the connection gets a best-effort 503 and is closed.
 */
void drv_http_adopt(drv_http_server *srv, int fd, drv_stream *st, const drv_peer *peer,
                    const uint8_t *pre, size_t npre);

/* Stop the thread, close every connection, free the server.  No
 * drv_http_adopt may run during or after the call.  Deferred requests get
 * their on_gone; posts still queued then run on the stopping thread. */
void drv_http_server_stop(drv_http_server *srv);

/* Any thread: run fn(ud) on the API thread soon (queued, woken through the
 * eventfd; posts run in order).  DRV_NOMEM; DRV_CLOSED when the server is
 * stopping (fn is not called).  Posts queued when the server stops run in
 * drv_http_server_stop, on the stopping thread, after every connection is
 * closed (every deferred request has had its on_gone), so fn always runs
 * once for an accepted post and can release ud.  May race with
 * drv_http_server_stop, but must not start after it has returned (the
 * server is gone). */
drv_err drv_http_post(drv_http_server *srv, void (*fn)(void *ud), void *ud);

/* Counters for /metrics (read with relaxed atomics: approximate). */
typedef struct drv_http_stats {
    uint64_t connections_open;
    uint64_t connections_total;
    uint64_t requests_total;
    uint64_t responses_by_class[6]; /* index status/100: 1xx .. 5xx */
    uint64_t bad_requests;          /* refused by the parser */
    uint64_t connections_refused;   /* closed on arrival: over max_connections */
} drv_http_stats;
void drv_http_server_stats(drv_http_server *srv, drv_http_stats *out);

#endif
