/*
 * http_parse.c — the HTTP/1.1 request parser (RFC 9112) and the small
 * helpers over its result (headers, query, percent-decoding, reason
 * phrases); see http.h for the contract.
 *
 * The parser is stateless: each call starts again at the first byte of the
 * request and either finds the whole request, or says how far it got
 * (DRV_AGAIN with a hint of how many bytes it needs next), or refuses it
 * with an HTTP status.  Re-reading the head on every call costs at most
 * max_head bytes per read, and the server waits for the hinted length
 * before calling again, so a Content-Length body is not rescanned at all
 * and a chunked body only chunk header by chunk header.
 *
 * Invariants:
 *   - nothing at or after p+n is read, and nothing is written except when a
 *     complete chunked body is de-chunked (inside [p+head_len, p+*used));
 *   - a prefix of a valid request is never refused: a byte is only judged
 *     once the element it belongs to is complete, or when no continuation
 *     could make it valid;
 *   - a request never needs more than max_head + max_body +
 *     DRV_HTTP_CHUNK_SLACK bytes: each part is refused as soon as it
 *     passes its limit, not when it is complete.
 *
 * Not here: routing, method checks (the handler decides), decoding of
 * content codings (501 for any transfer coding but chunked).
 */
#include "http/http.h"

#include <string.h>

#define DEFAULT_MAX_HEAD (16u << 10)
#define DEFAULT_MAX_BODY (64ull << 20)
/* No buffer is that large; keeps size arithmetic far from overflow. */
#define MAX_BODY_LIMIT (1ull << 62)

/* ------------------------------------------------------------------------ */
/* Character classes and spans                                               */

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A field value byte: VCHAR, obs-text, SP or HTAB (no other control). */
static bool is_field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7F);
}

/* Next element of a comma-separated list, trimmed (may be empty); false at the end. */
static bool next_elem(drv_span *list, drv_span *el, bool *first)
{
    if (list->n == 0 && !*first)
        return false;
    *first = false;
    const char *comma = memchr(list->p, ',', list->n);
    size_t len = comma ? (size_t)(comma - list->p) : list->n;
    el->p = list->p;
    el->n = len;
    if (comma) {
        list->p += len + 1;
        list->n -= len + 1;
        if (list->n == 0)
            *first = true; /* a trailing comma leaves one (empty) element */
    } else {
        list->p += len;
        list->n = 0;
    }
    while (el->n && (el->p[0] == ' ' || el->p[0] == '\t')) {
        el->p++;
        el->n--;
    }
    while (el->n && (el->p[el->n - 1] == ' ' || el->p[el->n - 1] == '\t'))
        el->n--;
    return true;
}

/* ------------------------------------------------------------------------ */
/* The parser                                                                */

typedef struct parse_ctx {
    char *p;         /* the request's first byte */
    size_t n;        /* bytes available */
    size_t max_head; /* effective limits */
    uint64_t max_body;
    size_t *used; /* the caller's outputs */
    int *status;
    const char **why;
} parse_ctx;

static drv_err refuse(parse_ctx *x, int status, const char *why)
{
    *x->status = status;
    *x->why = why;
    *x->used = 0;
    return DRV_PROTOCOL;
}

/* Not enough bytes yet; the result cannot change before `need` are there. */
static drv_err more(parse_ctx *x, uint64_t need)
{
    if (need <= x->n)
        need = (uint64_t)x->n + 1;
    *x->used = need > SIZE_MAX ? SIZE_MAX : (size_t)need;
    return DRV_AGAIN;
}

/* The head ran out of bytes at head_n (= min(n, max_head)): more, or over the limit. */
static drv_err head_short(parse_ctx *x, size_t head_n, bool in_request_line)
{
    if (head_n < x->max_head)
        return more(x, head_n + 1);
    return in_request_line ? refuse(x, 414, "request line too long")
                           : refuse(x, 431, "request header fields too large");
}

/* Path and query of the target; false for a form this server does not serve. */
static bool split_target(drv_http_request *req)
{
    drv_span t = req->target;
    if (memchr(t.p, '#', t.n))
        return false; /* a fragment is never sent (RFC 9112 §3.2) */
    if (t.n == 1 && t.p[0] == '*') {
        /* asterisk-form, for OPTIONS only */
        req->path = t;
        req->query = (drv_span){t.p + t.n, 0};
        return drv_span_eq(req->method, "OPTIONS");
    }
    drv_span path;
    if (t.p[0] == '/') {
        path = t;
    } else {
        /* absolute-form: scheme "://" authority, then the path */
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
        if (i == skip)
            return false; /* no authority */
        if (i < t.n && t.p[i] == '/') {
            path = (drv_span){t.p + i, t.n - i};
        } else {
            req->path = (drv_span){"/", 1};
            req->query = i < t.n ? (drv_span){t.p + i + 1, t.n - i - 1} : (drv_span){t.p + t.n, 0};
            return true;
        }
    }
    const char *q = memchr(path.p, '?', path.n);
    if (q) {
        req->path = (drv_span){path.p, (size_t)(q - path.p)};
        req->query = (drv_span){q + 1, path.n - req->path.n - 1};
    } else {
        req->path = path;
        req->query = (drv_span){path.p + path.n, 0};
    }
    return true;
}

/*
 * The request line from p[i]: method SP target SP HTTP/d.d CRLF.  On DRV_OK
 * *next is the first header byte.  head_n bounds what may be read.
 */
static drv_err request_line(parse_ctx *x, drv_http_request *req, size_t i, size_t head_n,
                            size_t *next)
{
    const unsigned char *p = (const unsigned char *)x->p;
    size_t m = i;
    while (m < head_n && drv_is_tchar(p[m]))
        m++;
    if (m == head_n)
        return head_short(x, head_n, true);
    if (m == i || p[m] != ' ')
        return refuse(x, 400, "malformed request line");
    req->method = (drv_span){x->p + i, m - i};

    size_t t = ++m;
    while (m < head_n && p[m] > 0x20 && p[m] < 0x7F)
        m++;
    if (m == head_n)
        return head_short(x, head_n, true);
    if (p[m] != ' ') {
        if (m == t)
            return refuse(x, 400, "malformed request line");
        if (p[m] == '\r' || p[m] == '\n')
            return refuse(x, 400, "no HTTP version in the request line");
        return refuse(x, 400, "invalid character in the request target");
    }
    if (m == t)
        return refuse(x, 400, "malformed request line");
    req->target = (drv_span){x->p + t, m - t};
    if (!split_target(req))
        return refuse(x, 400, "unsupported request target");

    /* "HTTP/" DIGIT "." DIGIT CRLF: judge each byte as it arrives. */
    static const char shape[] = "HTTP/0.0\r\n";
    size_t v = m + 1;
    for (size_t k = 0; k < 10; k++) {
        if (v + k == head_n)
            return head_short(x, head_n, true);
        unsigned char c = p[v + k];
        bool ok = shape[k] == '0' ? is_digit(c) : c == (unsigned char)shape[k];
        if (!ok)
            return refuse(x, 400,
                          k == 9 || (k == 8 && c == '\n') ? "request line not ended by CRLF"
                                                          : "malformed HTTP version");
    }
    if (p[v + 5] != '1')
        return refuse(x, 505, "only HTTP/1.x is supported");
    req->version_minor = p[v + 7] == '0' ? 0 : 1; /* 1.x with x > 1 is read as 1.1 */
    *next = v + 10;
    return DRV_OK;
}

/*
 * A field line (header or trailer) at p[h], bounded by lim.  On DRV_OK the
 * line is complete: name, value (trimmed) and *next after its CRLF.
 * DRV_AGAIN: the line is not complete within lim.  Else refused.
 */
static drv_err field_line(parse_ctx *x, size_t h, size_t lim, drv_span *name, drv_span *value,
                          size_t *next)
{
    const unsigned char *p = (const unsigned char *)x->p;
    if (p[h] == ' ' || p[h] == '\t')
        return refuse(x, 400, "obsolete line folding");
    size_t k = h;
    while (k < lim && drv_is_tchar(p[k]))
        k++;
    if (k == lim)
        return DRV_AGAIN;
    if (p[k] != ':') {
        if (k > h && (p[k] == ' ' || p[k] == '\t'))
            return refuse(x, 400, "whitespace before a header's colon");
        return refuse(x, 400, "malformed header field");
    }
    if (k == h)
        return refuse(x, 400, "empty header name");
    *name = (drv_span){x->p + h, k - h};
    size_t vs = ++k;
    while (k < lim && p[k] != '\r') {
        if (!is_field_byte(p[k]))
            return refuse(x, 400,
                          p[k] == '\n' ? "header line not ended by CRLF"
                                       : "control character in a header value");
        k++;
    }
    if (k + 1 >= lim)
        return DRV_AGAIN;
    if (p[k + 1] != '\n')
        return refuse(x, 400, "bare CR in a header line");
    size_t ve = k;
    while (vs < ve && (p[vs] == ' ' || p[vs] == '\t'))
        vs++;
    while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
        ve--;
    *value = (drv_span){x->p + vs, ve - vs};
    *next = k + 2;
    return DRV_OK;
}

/* What the framing headers say. */
typedef struct framing {
    bool has_cl;       /* Content-Length seen */
    bool cl_too_big;   /* its value is over max_body (or overflows) */
    uint64_t cl;       /* its value */
    bool has_te;       /* Transfer-Encoding seen */
    unsigned chunked;  /* "chunked" codings */
    bool other_coding; /* a coding other than chunked */
    bool te_empty;     /* an empty coding */
    unsigned hosts;    /* Host fields */
    bool conn_close;   /* Connection: close */
    bool conn_keep;    /* Connection: keep-alive */
    bool expect_100;   /* Expect: 100-continue */
} framing;

/* One Content-Length field: a list of equal decimal numbers (RFC 9110 §8.6). */
static const char *content_length(framing *f, drv_span v, uint64_t max_body)
{
    drv_span el;
    bool first = true;
    while (next_elem(&v, &el, &first)) {
        if (el.n == 0)
            return "invalid Content-Length";
        uint64_t n = 0;
        bool big = false;
        for (size_t i = 0; i < el.n; i++) {
            if (!is_digit((unsigned char)el.p[i]))
                return "invalid Content-Length";
            unsigned d = (unsigned)(el.p[i] - '0');
            if (n > (UINT64_MAX - d) / 10) {
                big = true;
                n = UINT64_MAX;
            } else if (!big) {
                n = n * 10 + d;
            }
        }
        if (f->has_cl && n != f->cl)
            return "conflicting Content-Length values";
        f->has_cl = true;
        f->cl = n;
        f->cl_too_big = big || n > max_body;
    }
    return NULL;
}

static void transfer_encoding(framing *f, drv_span v)
{
    drv_span el;
    bool first = true;
    f->has_te = true;
    while (next_elem(&v, &el, &first)) {
        if (el.n == 0)
            f->te_empty = true;
        else if (drv_span_ieq(el, "chunked"))
            f->chunked++;
        else
            f->other_coding = true; /* with parameters too: "chunked;x=1" is not chunked */
    }
}

static void connection_options(framing *f, drv_span v)
{
    drv_span el;
    bool first = true;
    while (next_elem(&v, &el, &first)) {
        if (drv_span_ieq(el, "close"))
            f->conn_close = true;
        else if (drv_span_ieq(el, "keep-alive"))
            f->conn_keep = true;
    }
}

/* Decide framing, keep-alive and expectations from the complete head. */
static drv_err head_semantics(parse_ctx *x, drv_http_request *req, uint64_t *body_len)
{
    framing f = {0};
    for (size_t i = 0; i < req->nheaders; i++) {
        drv_span nm = req->headers[i].name, v = req->headers[i].value;
        if (drv_span_ieq(nm, "content-length")) {
            const char *why = content_length(&f, v, x->max_body);
            if (why)
                return refuse(x, 400, why);
        } else if (drv_span_ieq(nm, "transfer-encoding")) {
            transfer_encoding(&f, v);
        } else if (drv_span_ieq(nm, "host")) {
            f.hosts++;
        } else if (drv_span_ieq(nm, "connection")) {
            connection_options(&f, v);
        } else if (drv_span_ieq(nm, "expect")) {
            if (drv_span_ieq(v, "100-continue"))
                f.expect_100 = true;
        }
    }
    if (f.hosts > 1)
        return refuse(x, 400, "more than one Host header");
    if (f.hosts == 0 && req->version_minor == 1)
        return refuse(x, 400, "missing Host header");
    if (f.has_te) {
        /* Smuggling guards (RFC 9112 §6.1, §6.3). */
        if (req->version_minor == 0)
            return refuse(x, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (f.has_cl)
            return refuse(x, 400, "both Transfer-Encoding and Content-Length");
        if (f.te_empty)
            return refuse(x, 400, "empty transfer coding");
        if (f.other_coding)
            return refuse(x, 501, "transfer coding not supported (only chunked)");
        if (f.chunked != 1)
            return refuse(x, 400, "chunked applied more than once");
    }
    if (f.cl_too_big)
        return refuse(x, 413, "request body too large");
    if (!f.has_te && !f.has_cl && req->version_minor == 0 &&
        (drv_span_eq(req->method, "POST") || drv_span_eq(req->method, "PUT") ||
         drv_span_eq(req->method, "PATCH")))
        return refuse(x, 411, "Content-Length required");

    if (req->version_minor == 1)
        req->keep_alive = !f.conn_close;
    else
        req->keep_alive = f.conn_keep && !f.conn_close;
    /* An HTTP/1.0 client does not know 100-continue (RFC 9110 §10.1.1). */
    req->expect_continue = f.expect_100 && req->version_minor == 1;
    *body_len = f.has_te ? UINT64_MAX : f.has_cl ? f.cl : 0;
    return DRV_OK;
}

/* The chunk-size line [s, e) (CRLF excluded): size and extensions. */
static const char *chunk_size_line(const unsigned char *p, size_t s, size_t e, uint64_t room,
                                   uint64_t *size, bool *too_big)
{
    size_t i = s;
    uint64_t v = 0;
    *too_big = false;
    while (i < e && hex_val(p[i]) >= 0) {
        if (v > room >> 4) {
            *too_big = true;
            return NULL;
        }
        v = v << 4 | (uint64_t)hex_val(p[i]);
        i++;
    }
    if (i == s)
        return "malformed chunk size";
    if (v > room) {
        *too_big = true;
        return NULL;
    }
    *size = v;
    /* chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ) */
    for (;;) {
        while (i < e && (p[i] == ' ' || p[i] == '\t'))
            i++;
        if (i == e)
            return NULL;
        if (p[i] != ';')
            return "malformed chunk size line";
        i++;
        while (i < e && (p[i] == ' ' || p[i] == '\t'))
            i++;
        size_t ns = i;
        while (i < e && drv_is_tchar(p[i]))
            i++;
        if (i == ns)
            return "malformed chunk extension";
        while (i < e && (p[i] == ' ' || p[i] == '\t'))
            i++;
        if (i == e || p[i] != '=')
            continue;
        i++;
        while (i < e && (p[i] == ' ' || p[i] == '\t'))
            i++;
        if (i < e && p[i] == '"') {
            for (i++;; i++) {
                if (i == e)
                    return "unterminated quoted string in a chunk extension";
                if (p[i] == '"')
                    break;
                if (p[i] == '\\') {
                    if (++i == e || !is_field_byte(p[i]))
                        return "malformed chunk extension";
                } else if (!is_field_byte(p[i])) {
                    return "malformed chunk extension";
                }
            }
            i++;
        } else {
            size_t vs = i;
            while (i < e && drv_is_tchar(p[i]))
                i++;
            if (i == vs)
                return "malformed chunk extension";
        }
    }
}

/*
 * Walk a chunked body from p[at] without changing it.  DRV_OK: *data_len
 * bytes of data, the body ends at *end.  DRV_AGAIN (hint set) or refused.
 */
static drv_err chunked_walk(parse_ctx *x, size_t at, uint64_t *data_len, size_t *end)
{
    const unsigned char *p = (const unsigned char *)x->p;
    size_t n = x->n, pos = at;
    uint64_t data = 0;
    bool last = false;

    for (;;) {
        /* Framing so far (data excluded), a partial line included. */
        size_t line_end = pos;
        while (line_end < n && p[line_end] != '\r' && p[line_end] != '\n')
            line_end++;
        size_t seen = n - line_end < 2 ? n : line_end + 2;
        if ((uint64_t)(seen - at) - data > DRV_HTTP_CHUNK_SLACK)
            return refuse(x, 413, "too much chunk framing");
        if (line_end == n)
            return more(x, n + 1);
        if (p[line_end] == '\n')
            return refuse(x, 400, "chunked framing line not ended by CRLF");
        if (line_end + 1 == n)
            return more(x, n + 1);
        if (p[line_end + 1] != '\n')
            return refuse(x, 400, "bare CR in chunked framing");

        if (last) {
            /* Trailer section: field lines, then an empty line. */
            if (line_end == pos) {
                *data_len = data;
                *end = pos + 2;
                return DRV_OK;
            }
            drv_span nm, v;
            size_t next;
            drv_err e = field_line(x, pos, line_end + 2, &nm, &v, &next);
            if (e == DRV_PROTOCOL)
                return e;
            pos = line_end + 2;
            continue;
        }

        uint64_t size = 0;
        bool too_big = false;
        const char *why = chunk_size_line(p, pos, line_end, x->max_body - data, &size, &too_big);
        if (too_big)
            return refuse(x, 413, "request body too large");
        if (why)
            return refuse(x, 400, why);
        pos = line_end + 2;
        if (size == 0) {
            last = true;
            continue;
        }
        if (n - pos < size + 2) {
            /* Wait for the data before looking again (the CRLF after it is checked then). */
            if (n - pos < size)
                return more(x, pos + size);
            return more(x, pos + size + 2);
        }
        pos += (size_t)size;
        data += size;
        if (p[pos] != '\r' || p[pos + 1] != '\n')
            return refuse(x, 400, "chunk data not followed by CRLF");
        pos += 2;
    }
}

/* Move the data of a walked (valid, complete) chunked body to p[at..). */
static void dechunk(char *p, size_t at)
{
    size_t pos = at, dst = at;
    for (;;) {
        uint64_t size = 0;
        int d;
        while ((d = hex_val((unsigned char)p[pos])) >= 0) {
            size = size << 4 | (uint64_t)d;
            pos++;
        }
        while (p[pos] != '\n')
            pos++;
        pos++;
        if (size == 0)
            return;
        memmove(p + dst, p + pos, (size_t)size);
        dst += (size_t)size;
        pos += (size_t)size + 2;
    }
}

drv_err drv_http_parse(char *p, size_t n, const drv_http_limits *lim, drv_http_request *req,
                       size_t *used, int *status, const char **why)
{
    parse_ctx x = {
        .p = p,
        .n = n,
        .max_head = lim && lim->max_head ? lim->max_head : DEFAULT_MAX_HEAD,
        .max_body = lim && lim->max_body ? lim->max_body : DEFAULT_MAX_BODY,
        .used = used,
        .status = status,
        .why = why,
    };
    memset(req, 0, offsetof(drv_http_request, headers));
    req->body = (drv_span){p, 0};
    req->head_len = 0;
    req->peer = NULL;
    req->tls = false;
    req->cert = NULL;
    *used = 0;
    *status = 0;
    *why = NULL;
    if (x.max_body > MAX_BODY_LIMIT)
        x.max_body = MAX_BODY_LIMIT; /* sizes and hints below never overflow */

    const size_t head_n = n < x.max_head ? n : x.max_head;
    size_t i = 0;
    /* RFC 9112 §2.2: ignore empty lines before the request line. */
    while (i < head_n && p[i] == '\r') {
        if (i + 1 == head_n)
            return head_short(&x, head_n, true);
        if (p[i + 1] != '\n')
            return refuse(&x, 400, "bare CR before the request line");
        i += 2;
    }
    if (i == head_n)
        return head_short(&x, head_n, true);

    size_t h;
    drv_err e = request_line(&x, req, i, head_n, &h);
    if (e != DRV_OK)
        return e;

    /* Header lines up to the empty one. */
    for (;;) {
        if (h == head_n)
            return head_short(&x, head_n, false);
        if (p[h] == '\r') {
            if (h + 1 == head_n)
                return head_short(&x, head_n, false);
            if (p[h + 1] != '\n')
                return refuse(&x, 400, "bare CR in the header section");
            h += 2;
            break;
        }
        drv_span nm, v;
        size_t next;
        e = field_line(&x, h, head_n, &nm, &v, &next);
        if (e == DRV_AGAIN)
            return head_short(&x, head_n, false);
        if (e != DRV_OK)
            return e;
        if (req->nheaders == DRV_HTTP_MAX_HEADERS)
            return refuse(&x, 431, "too many header fields");
        req->headers[req->nheaders++] = (drv_http_header){nm, v};
        h = next;
    }

    uint64_t body_len;
    e = head_semantics(&x, req, &body_len);
    if (e != DRV_OK)
        return e;
    req->head_len = h;
    req->body = (drv_span){p + h, 0};

    if (body_len != UINT64_MAX) {
        /* Content-Length (≤ max_body, checked) or no body. */
        if (n - h < body_len)
            return more(&x, h + body_len);
        req->body.n = (size_t)body_len;
        *used = h + (size_t)body_len;
        return DRV_OK;
    }
    uint64_t data_len;
    size_t end;
    e = chunked_walk(&x, h, &data_len, &end);
    if (e != DRV_OK)
        return e;
    dechunk(p, h);
    req->body.n = (size_t)data_len;
    *used = end;
    return DRV_OK;
}

/* ------------------------------------------------------------------------ */
/* Helpers over a parsed request                                             */

bool drv_http_header_get(const drv_http_request *req, const char *name, drv_span *value)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (drv_span_ieq(req->headers[i].name, name)) {
            *value = req->headers[i].value;
            return true;
        }
    return false;
}

/* The byte "%XY" at s[i] stands for, or -1 when it is not an escape to decode. */
static int pct_byte(const char *s, size_t n, size_t i)
{
    if (s[i] != '%' || n - i < 3)
        return -1;
    int hi = hex_val((unsigned char)s[i + 1]), lo = hex_val((unsigned char)s[i + 2]);
    if (hi < 0 || lo < 0)
        return -1;
    return hi << 4 | lo;
}

/* Whether the query key k (still encoded) decodes to name. */
static bool key_matches(drv_span k, const char *name)
{
    size_t j = 0;
    for (size_t i = 0; i < k.n; j++) {
        int c = pct_byte(k.p, k.n, i);
        if (c > 0) {
            i += 3;
        } else {
            c = k.p[i] == '+' ? ' ' : (unsigned char)k.p[i];
            i++;
        }
        if (name[j] == '\0' || (unsigned char)name[j] != c)
            return false;
    }
    return name[j] == '\0';
}

bool drv_http_query_get(const drv_http_request *req, const char *name, char *buf, size_t cap,
                        bool *truncated)
{
    drv_span q = req->query;
    if (truncated)
        *truncated = false;
    while (q.n > 0) {
        const char *amp = memchr(q.p, '&', q.n);
        drv_span pair = {q.p, amp ? (size_t)(amp - q.p) : q.n};
        q.p += amp ? pair.n + 1 : pair.n;
        q.n -= amp ? pair.n + 1 : pair.n;
        const char *eq = memchr(pair.p, '=', pair.n);
        drv_span k = {pair.p, eq ? (size_t)(eq - pair.p) : pair.n};
        if (!key_matches(k, name))
            continue;
        drv_span v = eq ? (drv_span){eq + 1, pair.n - k.n - 1} : (drv_span){pair.p + pair.n, 0};
        size_t o = 0;
        bool cut = cap == 0;
        for (size_t i = 0; i < v.n && !cut;) {
            int c = pct_byte(v.p, v.n, i);
            size_t adv = 3;
            if (c <= 0) { /* not an escape, or %00: kept as sent */
                c = v.p[i] == '+' ? ' ' : (unsigned char)v.p[i];
                adv = 1;
            }
            if (o + 1 >= cap) {
                cut = true;
                break;
            }
            buf[o++] = (char)c;
            i += adv;
        }
        if (cap > 0)
            buf[o] = '\0';
        if (truncated)
            *truncated = cut;
        return true;
    }
    return false;
}

bool drv_http_pct_decode(drv_span in, char *buf, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < in.n;) {
        int c;
        if (in.p[i] == '%') {
            c = pct_byte(in.p, in.n, i);
            if (c < 0)
                return false;
            i += 3;
        } else {
            c = (unsigned char)in.p[i++];
        }
        if (c == 0 || c == '/' || o + 1 >= cap)
            return false;
        buf[o++] = (char)c;
    }
    if (cap == 0)
        return false;
    buf[o] = '\0';
    return true;
}

/* Reason phrases (RFC 9110 §15), by status code. */
static const struct {
    int status;
    const char *reason;
} reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {206, "Partial Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {422, "Unprocessable Content"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
};

const char *drv_http_reason(int status)
{
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    return "";
}
