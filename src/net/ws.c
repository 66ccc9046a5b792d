/*
 * ws.c — server-side WebSocket transport (RFC 6455) for MQTT over WebSocket;
 * see ws.h for what it does and how a caller drives it.
 *
 * States (read() drives the handshake):
 *
 *                 request head complete,
 *   HANDSHAKE ──── upgrade accepted ─────────────▶ OPEN ──┐ close frame received,
 *       │          (101 queued in `out`)             │     │ protocol error,
 *       │                                            │     │ EOF, shutdown()
 *       │ any other request (4xx/5xx queued),        │     ▼
 *       │ head over max_handshake (431)              └─▶ DONE: read returns `result`
 *       ▼                                                (CLOSED / PROTOCOL / IO ...)
 *   RESPONDING ── response written ──▶ DONE (result CLOSED)
 *
 * Invariants:
 *   - `out` holds only whole frames (or the whole HTTP response) minus the
 *     prefix the lower stream already took, so frames never interleave: new
 *     output goes behind it, and write() takes no new data until it is empty.
 *   - Reading parses in place: lower-stream bytes are read into the caller's
 *     buffer and each one yields at most one output byte (a payload byte is
 *     moved left over the headers and unmasked), so no input buffer exists
 *     after the handshake except for bytes the client sent right behind
 *     its request head (kept in `in` until drained).
 *   - Buffers are freed whenever they become empty (idle = no buffers).
 */
#include "net/ws.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/span.h"
#include "platform/loop.h"

enum {
    OP_CONTINUATION = 0x0,
    OP_TEXT = 0x1,
    OP_BINARY = 0x2,
    OP_CLOSE = 0x8,
    OP_PING = 0x9,
    OP_PONG = 0xA,
};

enum {
    CLOSE_NORMAL = 1000,
    CLOSE_PROTOCOL = 1002,
    CLOSE_UNSUPPORTED = 1003,
    CLOSE_TOO_BIG = 1009,
    CLOSE_INTERNAL = 1011,
};

/* Largest control frame payload (RFC 6455 §5.5). */
#define CONTROL_MAX 125
/* Room in `out` for control frames queued behind a partly written data frame. */
#define CONTROL_ROOM 4096
/* Frames up to this size (header included) are assembled on the stack and
 * handed to the lower stream in one write (one TLS record, one syscall). */
#define COALESCE_MAX 16384
/* Input read and discarded per read() call while an error response is written. */
#define DRAIN_MAX 65536

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

typedef enum {
    WS_HANDSHAKE,  /* reading the request head into `in` */
    WS_RESPONDING, /* a non-101 response is in `out`; the connection ends after it */
    WS_OPEN,       /* frames both ways */
    WS_DONE,       /* finished: read returns `result`, write DRV_CLOSED or `result` */
    WS_HANDOFF,    /* not for us: read returns DRV_DECLINED until drv_ws_detach */
} ws_state;

typedef struct ws {
    drv_stream base;          /* ops, lower, fd; first, so a drv_stream * is a ws * */
    const drv_ws_config *cfg; /* listener's config, outlives the stream */
    drv_buf in;               /* request head, then the bytes behind it; freed when empty */
    drv_buf out;              /* unsent tail of frames / HTTP response; freed when empty */
    uint64_t remaining;       /* payload bytes left in the current frame */
    uint64_t msg_len;         /* payload bytes of the current data message so far */
    uint8_t *ctl;             /* control frame payload (CONTROL_MAX), only while one arrives */
    uint32_t scan;            /* where the search for the head's end resumes in `in` */
    drv_err result;           /* what read returns in WS_DONE */
    uint8_t state;            /* ws_state */
    uint8_t hdr[14];          /* the current frame header as it arrives */
    uint8_t hdr_len;          /* bytes in hdr */
    uint8_t hdr_need;         /* header size once known from byte 2 (0 before) */
    uint8_t mask[4];          /* the current frame's masking key */
    uint8_t mask_pos;         /* index into mask of the next payload byte */
    uint8_t opcode;           /* the current frame's opcode */
    uint8_t ctl_len;          /* bytes in ctl */
    bool in_payload;          /* header complete, payload bytes arriving */
    bool fin;                 /* the current frame ends its message */
    bool in_message;          /* a fragmented data message is open (continuations expected) */
    bool close_sent;          /* a close frame was queued; nothing may follow it */
} ws;

/* ------------------------------------------------------------------------ */
/* Output                                                                    */

static uint32_t max_message(const ws *s)
{
    return s->cfg->max_message ? s->cfg->max_message : DRV_WS_DEFAULT_MAX_MESSAGE;
}

static uint32_t max_handshake(const ws *s)
{
    return s->cfg->max_handshake ? s->cfg->max_handshake : DRV_WS_DEFAULT_MAX_HANDSHAKE;
}

/* Write `out` to the lower stream: DRV_OK once empty (and freed), DRV_AGAIN
 * while some is left, or the lower stream's error. */
static drv_err flush_out(ws *s)
{
    while (drv_buf_avail(&s->out) > 0) {
        size_t w = 0;
        drv_err e =
            drv_stream_write(s->base.lower, s->out.data + s->out.off, drv_buf_avail(&s->out), &w);
        if (e == DRV_OK && w == 0)
            e = DRV_AGAIN;
        if (e != DRV_OK)
            return e;
        drv_buf_consume(&s->out, w);
    }
    drv_buf_free(&s->out);
    return DRV_OK;
}

/* Write as much of p[0..len) as the lower stream takes now; *w gets the count. */
static drv_err write_lower(ws *s, const uint8_t *p, size_t len, size_t *w)
{
    *w = 0;
    while (*w < len) {
        size_t k = 0;
        drv_err e = drv_stream_write(s->base.lower, p + *w, len - *w, &k);
        if (e == DRV_AGAIN || (e == DRV_OK && k == 0))
            return DRV_OK;
        if (e != DRV_OK)
            return e;
        *w += k;
    }
    return DRV_OK;
}

size_t drv_ws_frame_header(uint8_t h[10], uint8_t opcode, uint64_t len)
{
    h[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

/*
 * Send one unmasked frame: behind whatever `out` holds, or straight to the
 * lower stream with the unsent tail kept in `out`.  DRV_OK when the whole
 * frame is written or queued; DRV_TOOBIG when it cannot be queued (nothing
 * of it was written); DRV_NOMEM or a lower-stream error otherwise (the
 * stream is then unusable: part of a frame may be on the wire).
 */
static drv_err send_frame(ws *s, uint8_t opcode, const uint8_t *p, size_t len)
{
    uint8_t hdr[10];
    size_t hl = drv_ws_frame_header(hdr, opcode, len);
    drv_err e;

    if (drv_buf_avail(&s->out) > 0) {
        if (hl + len > s->out.cap - drv_buf_avail(&s->out))
            return DRV_TOOBIG;
        uint8_t *dst = drv_buf_reserve(&s->out, hl + len, &e);
        if (!dst)
            return e;
        memcpy(dst, hdr, hl);
        if (len)
            memcpy(dst + hl, p, len);
        s->out.len += hl + len;
        e = flush_out(s);
        return e == DRV_AGAIN ? DRV_OK : e;
    }

    /* Nothing pending: write directly, in one piece when small. */
    uint8_t tmp[COALESCE_MAX];
    const uint8_t *seg[2] = {hdr, p};
    size_t seg_len[2] = {hl, len};
    int nseg = 2;
    if (hl + len <= sizeof(tmp)) {
        memcpy(tmp, hdr, hl);
        if (len)
            memcpy(tmp + hl, p, len);
        seg[0] = tmp;
        seg_len[0] = hl + len;
        nseg = 1;
    }
    for (int i = 0; i < nseg; i++) {
        size_t w;
        e = write_lower(s, seg[i], seg_len[i], &w);
        if (e != DRV_OK)
            return e;
        if (w == seg_len[i])
            continue;
        /* The lower stream is full: keep the rest of this frame, in order. */
        size_t rest = seg_len[i] - w;
        for (int j = i + 1; j < nseg; j++)
            rest += seg_len[j];
        uint8_t *dst = drv_buf_reserve(&s->out, rest, &e);
        if (!dst)
            return e;
        memcpy(dst, seg[i] + w, seg_len[i] - w);
        dst += seg_len[i] - w;
        for (int j = i + 1; j < nseg; j++) {
            if (seg_len[j])
                memcpy(dst, seg[j], seg_len[j]);
            dst += seg_len[j];
        }
        s->out.len += rest;
        return DRV_OK;
    }
    return DRV_OK;
}

/* End the stream with `result` (read returns it from now on). */
static void finish(ws *s, drv_err result)
{
    s->state = WS_DONE;
    s->result = result;
    drv_free(s->ctl);
    s->ctl = NULL;
    drv_buf_free(&s->in);
}

/* Queue a close frame with `code` (once), best effort. */
static void send_close(ws *s, uint16_t code)
{
    if (s->close_sent)
        return;
    s->close_sent = true;
    uint8_t payload[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    drv_err e = send_frame(s, OP_CLOSE, payload, sizeof(payload));
    if (e != DRV_OK)
        drv_debug("ws: close frame not sent", "error", drv_errname(e));
}

/* The peer broke RFC 6455: close with `code`, and read returns DRV_PROTOCOL. */
static void fail(ws *s, uint16_t code, const char *why)
{
    if (drv_log_enabled(DRV_LOG_DEBUG)) {
        char c[8];
        snprintf(c, sizeof(c), "%u", (unsigned)code);
        drv_debug("ws: closing connection", "code", c, "reason", why);
    }
    send_close(s, code);
    finish(s, DRV_PROTOCOL);
}

/* ------------------------------------------------------------------------ */
/* Handshake                                                                 */

/* What the upgrade decision needs from a request head. */
typedef struct request {
    drv_span method;         /* request method */
    drv_span target;         /* request target as sent */
    drv_span path;           /* path part of the target (no query) */
    int hosts;               /* Host header lines */
    int keys;                /* Sec-WebSocket-Key header lines */
    drv_span key;            /* the (last) key value */
    int versions;            /* Sec-WebSocket-Version header lines */
    drv_span version;        /* the (last) version value */
    bool upgrade_websocket;  /* an Upgrade token is "websocket" */
    bool connection_upgrade; /* a Connection token is "upgrade" */
    bool has_protocol;       /* a Sec-WebSocket-Protocol header was sent */
    drv_span protocol;       /* chosen subprotocol as the client spelled it */
    int protocol_rank;       /* 0 none acceptable, 1 "mqttv3.1", 2 "mqtt" */
} request;

/* Next non-empty element of a comma-separated list, trimmed; false at the end. */
static bool next_token(drv_span *list, drv_span *tok)
{
    while (list->n > 0) {
        const char *comma = memchr(list->p, ',', list->n);
        size_t len = comma ? (size_t)(comma - list->p) : list->n;
        tok->p = list->p;
        tok->n = len;
        list->p += comma ? len + 1 : len;
        list->n -= comma ? len + 1 : len;
        while (tok->n && (tok->p[0] == ' ' || tok->p[0] == '\t')) {
            tok->p++;
            tok->n--;
        }
        while (tok->n && (tok->p[tok->n - 1] == ' ' || tok->p[tok->n - 1] == '\t'))
            tok->n--;
        if (tok->n)
            return true;
    }
    return false;
}

static bool list_has(drv_span list, const char *lit)
{
    drv_span tok;
    while (next_token(&list, &tok))
        if (drv_span_ieq(tok, lit))
            return true;
    return false;
}

/* The path part of a request target, origin-form or absolute-form; false if neither. */
static bool target_path(drv_span t, drv_span *path)
{
    if (t.n >= 1 && t.p[0] == '/') {
        *path = t;
    } else {
        size_t skip;
        if (t.n > 7 && drv_span_ieq((drv_span){t.p, 7}, "http://"))
            skip = 7;
        else if (t.n > 8 && drv_span_ieq((drv_span){t.p, 8}, "https://"))
            skip = 8;
        else
            return false;
        size_t i = skip;
        while (i < t.n && t.p[i] != '/' && t.p[i] != '?')
            i++;
        if (i < t.n && t.p[i] == '/') {
            *path = (drv_span){t.p + i, t.n - i};
        } else {
            *path = (drv_span){"/", 1};
            return true;
        }
    }
    for (size_t i = 0; i < path->n; i++)
        if (path->p[i] == '?' || path->p[i] == '#') {
            path->n = i;
            break;
        }
    return true;
}

static void take_protocols(request *r, drv_span list)
{
    drv_span tok;
    r->has_protocol = true;
    while (next_token(&list, &tok)) {
        int rank = drv_span_ieq(tok, "mqtt") ? 2 : drv_span_ieq(tok, "mqttv3.1") ? 1 : 0;
        if (rank > r->protocol_rank) {
            r->protocol_rank = rank;
            r->protocol = tok;
        }
    }
}

/*
 * Parse head[0..n) (ending in CRLF CRLF) into r.  Returns NULL, or why the
 * request is malformed (→ 400).  Strict where RFC 9112 says a server must
 * reject: no whitespace before a header's colon, no obsolete line folding,
 * no control characters.
 */
static const char *parse_head(const char *head, size_t n, request *r)
{
    memset(r, 0, sizeof(*r));
    const char *end = head + n - 2; /* the final CRLF ends the header block */
    const char *eol = memchr(head, '\r', (size_t)(end - head));
    if (!eol || eol[1] != '\n')
        return "malformed request line";

    /* Request line: method SP target SP HTTP/1.1 */
    const char *p = head;
    while (p < eol && drv_is_tchar((unsigned char)*p))
        p++;
    if (p == head || p == eol || *p != ' ')
        return "malformed request line";
    r->method = (drv_span){head, (size_t)(p - head)};
    const char *t = ++p;
    while (p < eol && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7F)
        p++;
    if (p == t || p == eol || *p != ' ')
        return "malformed request line";
    r->target = (drv_span){t, (size_t)(p - t)};
    p++;
    if (!drv_span_eq((drv_span){p, (size_t)(eol - p)}, "HTTP/1.1"))
        return "HTTP/1.1 required";
    if (!target_path(r->target, &r->path))
        return "unsupported request target";

    /* Header lines up to the empty one. */
    for (p = eol + 2; p < end; p = eol + 2) {
        eol = memchr(p, '\r', (size_t)(end - p + 1));
        if (!eol || eol[1] != '\n')
            return "malformed header line";
        if (*p == ' ' || *p == '\t')
            return "obsolete header line folding";
        const char *name = p;
        while (p < eol && drv_is_tchar((unsigned char)*p))
            p++;
        if (p == name || p == eol || *p != ':')
            return "malformed header line";
        drv_span nm = {name, (size_t)(p - name)};
        for (const char *q = ++p; q < eol; q++) {
            unsigned char c = (unsigned char)*q;
            if ((c < 0x20 && c != '\t') || c == 0x7F)
                return "control character in a header";
        }
        while (p < eol && (*p == ' ' || *p == '\t'))
            p++;
        const char *ve = eol;
        while (ve > p && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        drv_span v = {p, (size_t)(ve - p)};

        if (drv_span_ieq(nm, "host")) {
            r->hosts++;
        } else if (drv_span_ieq(nm, "upgrade")) {
            r->upgrade_websocket = r->upgrade_websocket || list_has(v, "websocket");
        } else if (drv_span_ieq(nm, "connection")) {
            r->connection_upgrade = r->connection_upgrade || list_has(v, "upgrade");
        } else if (drv_span_ieq(nm, "sec-websocket-key")) {
            r->keys++;
            r->key = v;
        } else if (drv_span_ieq(nm, "sec-websocket-version")) {
            r->versions++;
            r->version = v;
        } else if (drv_span_ieq(nm, "sec-websocket-protocol")) {
            take_protocols(r, v);
        }
    }
    return NULL;
}

/* A Sec-WebSocket-Key is base64 of 16 bytes: 22 characters and "==". */
static bool key_valid(drv_span k)
{
    if (k.n != 24 || k.p[22] != '=' || k.p[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++) {
        char c = k.p[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return false;
    }
    return true;
}

bool drv_ws_accept_key(const char *key, size_t n, char out[29])
{
    drv_span k = {key, n};
    if (!key || !key_valid(k))
        return false;
    char in[24 + sizeof(WS_GUID) - 1];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    memcpy(in, key, 24);
    memcpy(in + 24, WS_GUID, sizeof(WS_GUID) - 1);
    if (!EVP_Digest(in, sizeof(in), md, &md_len, EVP_sha1(), NULL) || md_len != 20)
        return false;
    return EVP_EncodeBlock((unsigned char *)out, md, 20) == 28;
}

/* Queue an error response and end the connection after it. */
static drv_err respond_error(ws *s, int status, const char *extra, const char *body)
{
    const char *reason = status == 400   ? "Bad Request"
                         : status == 404 ? "Not Found"
                         : status == 405 ? "Method Not Allowed"
                         : status == 426 ? "Upgrade Required"
                         : status == 431 ? "Request Header Fields Too Large"
                                         : "Internal Server Error";
    char resp[1024];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\n"
                     "Connection: close\r\n"
                     "%s"
                     "\r\n"
                     "%s",
                     status, reason, strlen(body), extra ? extra : "", body);
    assert(n > 0 && (size_t)n < sizeof(resp));
    drv_buf_free(&s->in);
    drv_buf_free(&s->out);
    s->state = WS_RESPONDING;
    drv_err e = drv_buf_append(&s->out, resp, (size_t)n);
    if (e != DRV_OK)
        finish(s, e);
    return e;
}

/* Decide on a complete request head of head_len bytes at the start of `in`. */
static drv_err answer(ws *s, size_t head_len)
{
    const char *head = (const char *)s->in.data + s->in.off;
    request r;
    const char *bad = parse_head(head, head_len, &r);
    char body[512];

    if (s->cfg->handoff && (bad || !drv_span_eq(r.path, s->cfg->path))) {
        /* Another path (or a head only an HTTP server can judge): the HTTP server
         * takes the connection with the bytes read so far (drv_ws_detach). */
        s->state = WS_HANDOFF;
        return DRV_DECLINED;
    }
    if (bad) {
        snprintf(body, sizeof(body), "bad request: %s\n", bad);
        return respond_error(s, 400, NULL, body);
    }
    if (!drv_span_eq(r.path, s->cfg->path)) {
        if (s->cfg->on_http) {
            /* HOOK: the REST API answers other paths (ws.h). */
            drv_ws_http_request req = {
                .method = r.method.p,
                .method_len = r.method.n,
                .target = r.target.p,
                .target_len = r.target.n,
                .head = head,
                .head_len = head_len,
            };
            drv_buf_free(&s->out);
            drv_err e = s->cfg->on_http(s->cfg->on_http_ud, &req, &s->out);
            if (e == DRV_OK && drv_buf_avail(&s->out) > 0) {
                drv_buf_free(&s->in);
                s->state = WS_RESPONDING;
                return DRV_OK;
            }
            if (e != DRV_DECLINED && e != DRV_OK)
                return respond_error(s, 500, NULL, "internal error\n");
        }
        snprintf(body, sizeof(body), "not found; MQTT over WebSocket is served at %.200s\n",
                 s->cfg->path);
        return respond_error(s, 404, NULL, body);
    }
    if (!drv_span_eq(r.method, "GET"))
        return respond_error(s, 405, "Allow: GET\r\n", "only GET upgrades to WebSocket\n");
    if (!r.upgrade_websocket)
        return respond_error(s, 426, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
                             "this is an MQTT over WebSocket endpoint: connect with a WebSocket "
                             "client, subprotocol mqtt\n");
    if (!r.connection_upgrade)
        return respond_error(s, 400, NULL, "bad request: Connection must include Upgrade\n");
    if (r.versions != 1 || !drv_span_eq(r.version, "13"))
        return respond_error(s, 426, "Sec-WebSocket-Version: 13\r\n",
                             "WebSocket version 13 required\n");
    if (r.keys != 1 || !key_valid(r.key))
        return respond_error(s, 400, NULL, "bad request: invalid Sec-WebSocket-Key\n");
    if (r.hosts != 1)
        return respond_error(s, 400, NULL, "bad request: exactly one Host header required\n");
    /* Some clients send no subprotocol at all: accept them without one. */
    if (r.has_protocol && r.protocol_rank == 0)
        return respond_error(s, 400, NULL,
                             "bad request: subprotocol mqtt required (Sec-WebSocket-Protocol)\n");

    char accept[29];
    if (!drv_ws_accept_key(r.key.p, r.key.n, accept))
        return respond_error(s, 500, NULL, "internal error\n");
    char resp[256];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n"
                     "%s%.*s%s"
                     "\r\n",
                     accept, r.protocol_rank ? "Sec-WebSocket-Protocol: " : "", (int)r.protocol.n,
                     r.protocol_rank ? r.protocol.p : "", r.protocol_rank ? "\r\n" : "");
    assert(n > 0 && (size_t)n < sizeof(resp));
    drv_err e = drv_buf_append(&s->out, resp, (size_t)n);
    if (e != DRV_OK) {
        finish(s, e);
        return e;
    }
    /* Keep only what the client sent behind the head: its first frames. */
    drv_buf_consume(&s->in, head_len);
    if (drv_buf_avail(&s->in) == 0)
        drv_buf_free(&s->in);
    s->state = WS_OPEN;
    e = flush_out(s);
    if (e != DRV_OK && e != DRV_AGAIN) {
        finish(s, e);
        return e;
    }
    return DRV_OK;
}

/* Find CRLF CRLF in `in`, resuming at `scan`; the head's length or 0. */
static size_t head_end(ws *s)
{
    const uint8_t *d = s->in.data + s->in.off;
    size_t n = drv_buf_avail(&s->in);
    for (size_t i = s->scan; i + 4 <= n; i++)
        if (d[i] == '\r' && d[i + 1] == '\n' && d[i + 2] == '\r' && d[i + 3] == '\n')
            return i + 4;
    s->scan = (uint32_t)(n >= 3 ? n - 3 : 0);
    return 0;
}

/* Read the request head; DRV_OK once answered (state changed), else why not. */
static drv_err handshake_read(ws *s)
{
    for (;;) {
        size_t room = s->in.cap - s->in.len;
        if (room == 0)
            return respond_error(s, 431, NULL, "request head too large\n");
        drv_err e;
        uint8_t *dst = drv_buf_reserve(&s->in, room < 1024 ? room : 1024, &e);
        if (!dst) {
            finish(s, e);
            return e;
        }
        size_t k = 0;
        e = drv_stream_read(s->base.lower, dst, s->in.size - s->in.len, &k);
        if (e == DRV_AGAIN)
            return e;
        if (e != DRV_OK) {
            finish(s, e);
            return e;
        }
        s->in.len += k;
        size_t head_len = head_end(s);
        if (head_len)
            return answer(s, head_len);
    }
}

/* ------------------------------------------------------------------------ */
/* Frames from the client                                                    */

static void unmask(ws *s, uint8_t *p, size_t n)
{
    size_t i = 0;
    if (n >= 16) {
        uint8_t m8[8];
        for (int j = 0; j < 8; j++)
            m8[j] = s->mask[(s->mask_pos + j) & 3];
        uint64_t m;
        memcpy(&m, m8, 8);
        for (; i + 8 <= n; i += 8) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            v ^= m;
            memcpy(p + i, &v, 8);
        }
    }
    for (; i < n; i++)
        p[i] ^= s->mask[(s->mask_pos + i) & 3];
    s->mask_pos = (uint8_t)((s->mask_pos + n) & 3);
}

static bool close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

/* A complete control frame (payload in ctl). */
static void control_frame(ws *s)
{
    switch (s->opcode) {
    case OP_PING: {
        drv_err e = send_frame(s, OP_PONG, s->ctl, s->ctl_len);
        if (e == DRV_TOOBIG)
            drv_debug("ws: pong dropped, output full"); /* a ping flood without reading */
        else if (e != DRV_OK)
            finish(s, e);
        break;
    }
    case OP_PONG:
        break;
    case OP_CLOSE: {
        uint16_t code = CLOSE_NORMAL;
        if (s->ctl_len == 1) {
            fail(s, CLOSE_PROTOCOL, "close frame with a 1-byte payload");
            return;
        }
        if (s->ctl_len >= 2) {
            code = (uint16_t)(s->ctl[0] << 8 | s->ctl[1]);
            if (!close_code_valid(code)) {
                fail(s, CLOSE_PROTOCOL, "invalid close code");
                return;
            }
        }
        send_close(s, code);
        finish(s, DRV_CLOSED);
        return;
    }
    }
    drv_free(s->ctl);
    s->ctl = NULL;
    s->ctl_len = 0;
}

static void frame_end(ws *s)
{
    s->in_payload = false;
    s->hdr_len = 0;
    s->hdr_need = 0;
    if (s->opcode & 0x8) {
        control_frame(s);
        return;
    }
    s->in_message = !s->fin;
    if (s->fin)
        s->msg_len = 0;
}

/* The first header byte arrived: check what it alone decides. */
static void header_byte0(ws *s)
{
    uint8_t b = s->hdr[0];
    s->fin = b & 0x80;
    s->opcode = b & 0x0F;
    if (b & 0x70) {
        fail(s, CLOSE_PROTOCOL, "reserved bits set");
        return;
    }
    switch (s->opcode) {
    case OP_CONTINUATION:
        if (!s->in_message)
            fail(s, CLOSE_PROTOCOL, "continuation frame without a message");
        return;
    case OP_TEXT:
    case OP_BINARY:
        if (s->in_message)
            fail(s, CLOSE_PROTOCOL, "data frame inside a fragmented message");
        else if (s->opcode == OP_TEXT)
            fail(s, CLOSE_UNSUPPORTED, "text frame (MQTT needs binary)");
        return;
    case OP_CLOSE:
    case OP_PING:
    case OP_PONG:
        if (!s->fin)
            fail(s, CLOSE_PROTOCOL, "fragmented control frame");
        return;
    default:
        fail(s, CLOSE_PROTOCOL, "reserved opcode");
    }
}

/* The second header byte arrived: mask bit and length form. */
static void header_byte1(ws *s)
{
    uint8_t b = s->hdr[1];
    uint8_t len7 = b & 0x7F;
    if (!(b & 0x80)) {
        fail(s, CLOSE_PROTOCOL, "unmasked client frame");
        return;
    }
    if ((s->opcode & 0x8) && len7 > CONTROL_MAX) {
        fail(s, CLOSE_PROTOCOL, "control frame payload over 125 bytes");
        return;
    }
    s->hdr_need = (uint8_t)(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4);
}

/* The whole header arrived: length, limits, masking key. */
static void header_done(ws *s)
{
    uint8_t len7 = s->hdr[1] & 0x7F;
    uint64_t len = len7;
    size_t at = 2;
    if (len7 == 126) {
        len = (uint64_t)s->hdr[2] << 8 | s->hdr[3];
        at = 4;
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | s->hdr[2 + i];
        at = 10;
        if (len >> 63) {
            fail(s, CLOSE_PROTOCOL, "64-bit length with the high bit set");
            return;
        }
    }
    if (!(s->opcode & 0x8)) {
        if (s->opcode == OP_BINARY)
            s->msg_len = 0;
        if (len > (uint64_t)max_message(s) - s->msg_len) {
            fail(s, CLOSE_TOO_BIG, "message over max_message");
            return;
        }
        s->msg_len += len;
    } else if (len > 0) {
        s->ctl = drv_malloc(CONTROL_MAX);
        if (!s->ctl) {
            send_close(s, CLOSE_INTERNAL);
            finish(s, DRV_NOMEM);
            return;
        }
        s->ctl_len = 0;
    }
    memcpy(s->mask, s->hdr + at, 4);
    s->mask_pos = 0;
    s->remaining = len;
    s->in_payload = true;
    if (len == 0)
        frame_end(s);
}

/*
 * Parse p[0..n) of client bytes in place: data payload is unmasked and
 * moved to the front of p, headers and control frames are consumed.
 * Returns the payload bytes now at p[0..).  Stops early when the stream
 * leaves WS_OPEN (close or error); the rest of the input is dropped.
 */
static size_t parse(ws *s, uint8_t *p, size_t n)
{
    size_t i = 0, o = 0;
    while (i < n && s->state == WS_OPEN) {
        if (!s->in_payload) {
            s->hdr[s->hdr_len++] = p[i++];
            if (s->hdr_len == 1)
                header_byte0(s);
            else if (s->hdr_len == 2)
                header_byte1(s);
            if (s->state == WS_OPEN && s->hdr_len == s->hdr_need)
                header_done(s);
            continue;
        }
        size_t k = n - i;
        if (k > s->remaining)
            k = (size_t)s->remaining;
        if (s->opcode & 0x8) {
            memcpy(s->ctl + s->ctl_len, p + i, k);
            unmask(s, s->ctl + s->ctl_len, k);
            s->ctl_len = (uint8_t)(s->ctl_len + k);
        } else {
            memmove(p + o, p + i, k);
            unmask(s, p + o, k);
            o += k;
        }
        i += k;
        s->remaining -= k;
        if (s->remaining == 0)
            frame_end(s);
    }
    return o;
}

static drv_err read_frames(ws *s, uint8_t *buf, size_t len, size_t *n)
{
    drv_err e = DRV_OK;
    size_t got = 0;

    if (drv_buf_avail(&s->out) > 0) {
        e = flush_out(s);
        if (e != DRV_OK && e != DRV_AGAIN) {
            finish(s, e);
            return e;
        }
    }
    while (got == 0 && s->state == WS_OPEN) {
        size_t k = 0;
        if (drv_buf_avail(&s->in) > 0) {
            /* Frames that arrived together with the request head. */
            k = drv_buf_avail(&s->in) < len ? drv_buf_avail(&s->in) : len;
            memcpy(buf, s->in.data + s->in.off, k);
            drv_buf_consume(&s->in, k);
            if (drv_buf_avail(&s->in) == 0)
                drv_buf_free(&s->in);
        } else {
            e = drv_stream_read(s->base.lower, buf, len, &k);
            if (e != DRV_OK)
                break;
        }
        got = parse(s, buf, k);
    }
    /* Pongs and close frames queued while parsing. */
    if (drv_buf_avail(&s->out) > 0) {
        drv_err fe = flush_out(s);
        if (fe != DRV_OK && fe != DRV_AGAIN && s->state == WS_OPEN)
            finish(s, fe);
    }
    if (got > 0) {
        *n = got;
        return DRV_OK;
    }
    if (s->state != WS_OPEN)
        return s->result;
    if (e != DRV_AGAIN)
        finish(s, e); /* EOF without a close frame, or a lower-stream error */
    return e;
}

/* ------------------------------------------------------------------------ */
/* Transport ops                                                             */

static drv_err ws_read(drv_stream *st, uint8_t *buf, size_t len, size_t *n)
{
    ws *s = (ws *)st;
    *n = 0;
    assert(len > 0);
    for (;;) {
        drv_err e;
        switch ((ws_state)s->state) {
        case WS_HANDSHAKE:
            e = handshake_read(s);
            if (e != DRV_OK)
                return e;
            continue;
        case WS_RESPONDING:
            e = flush_out(s);
            if (e == DRV_AGAIN) {
                /* Discard what the client sends meanwhile (no busy loop on a
                 * readable socket, no reset that could eat the response). */
                for (size_t drained = 0; drained < DRAIN_MAX;) {
                    size_t k = 0;
                    drv_err re = drv_stream_read(s->base.lower, buf, len, &k);
                    if (re == DRV_AGAIN)
                        return DRV_AGAIN;
                    if (re != DRV_OK) {
                        finish(s, DRV_CLOSED);
                        return DRV_CLOSED;
                    }
                    drained += k;
                }
                return DRV_AGAIN;
            }
            finish(s, DRV_CLOSED);
            return DRV_CLOSED;
        case WS_OPEN:
            return read_frames(s, buf, len, n);
        case WS_DONE:
            return s->result;
        case WS_HANDOFF:
            return DRV_DECLINED;
        }
    }
}

static drv_err ws_write(drv_stream *st, const uint8_t *buf, size_t len, size_t *n)
{
    ws *s = (ws *)st;
    *n = 0;
    if (s->state == WS_HANDSHAKE)
        return DRV_AGAIN;
    if (s->state != WS_OPEN)
        return s->state == WS_DONE ? s->result : DRV_CLOSED;
    drv_err e = flush_out(s);
    if (e != DRV_OK) {
        if (e != DRV_AGAIN)
            finish(s, e);
        return e;
    }
    if (len == 0)
        return DRV_OK;
    if (len > DRV_WS_MAX_WRITE)
        len = DRV_WS_MAX_WRITE;
    e = send_frame(s, OP_BINARY, buf, len);
    if (e != DRV_OK) {
        finish(s, e);
        return e;
    }
    *n = len;
    return DRV_OK;
}

static uint32_t ws_wants(drv_stream *st)
{
    ws *s = (ws *)st;
    uint32_t ev = drv_stream_wants(s->base.lower);
    if (drv_buf_avail(&s->out) > 0) {
        drv_err e = flush_out(s);
        if (e == DRV_AGAIN)
            ev |= DRV_EV_WRITE;
        else if (e != DRV_OK && s->state != WS_DONE)
            finish(s, e);
    }
    return ev;
}

static void ws_shutdown(drv_stream *st, uint16_t code)
{
    ws *s = (ws *)st;
    if (s->state == WS_OPEN) {
        if (code == 0 || !close_code_valid(code))
            code = CLOSE_NORMAL;
        send_close(s, code);
        finish(s, DRV_CLOSED);
    }
    if (drv_buf_avail(&s->out) > 0)
        (void)flush_out(s); /* best effort: the caller closes the fd next */
}

static void ws_free(drv_stream *st)
{
    ws *s = (ws *)st;
    drv_buf_free(&s->in);
    drv_buf_free(&s->out);
    drv_free(s->ctl);
    drv_free(s);
}

drv_err drv_ws_detach(drv_stream *st, drv_stream **lower, drv_buf *read_so_far)
{
    ws *s = (ws *)st;
    if (st->ops != &drv_ws_ops || s->state != WS_HANDOFF)
        return DRV_INVAL;
    *lower = s->base.lower;
    *read_so_far = s->in; /* ownership moves: the caller frees it */
    drv_buf_init(&s->in, 0);
    s->base.lower = NULL;
    ws_free(st);
    return DRV_OK;
}

const drv_transport_ops drv_ws_ops = {
    .name = "ws",
    .read = ws_read,
    .write = ws_write,
    .wants = ws_wants,
    .shutdown = ws_shutdown,
    .free = ws_free,
};

drv_err drv_ws_stream_new(const drv_ws_config *cfg, drv_stream *lower, drv_stream **out)
{
    if (!cfg || !cfg->path || cfg->path[0] != '/' || !lower)
        return DRV_INVAL;
    ws *s = drv_calloc(1, sizeof(*s));
    if (!s)
        return DRV_NOMEM;
    s->base.ops = &drv_ws_ops;
    s->base.lower = lower;
    s->base.fd = lower->fd;
    s->cfg = cfg;
    s->state = WS_HANDSHAKE;
    drv_buf_init(&s->in, max_handshake(s));
    drv_buf_init(&s->out, (size_t)DRV_WS_MAX_WRITE + 14 + CONTROL_ROOM);
    *out = &s->base;
    return DRV_OK;
}
