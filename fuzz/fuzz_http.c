/*
 * fuzz_http.c — libFuzzer harness for the HTTP/1.1 request parser
 * (src/http/http_parse.c) and the helpers over its result.
 *
 * Input: one flags byte, then a client's byte stream.
 *   byte 0  bits 0-1 limits: 0 defaults (16 KiB head, 64 MiB body),
 *           1 {256, 1024}, 2 {64, 16}, 3 {1024, 0 = default};
 *           bits 2-7 pick a prefix length for the prefix checks
 * The stream is parsed request after request (pipelining) from an
 * exact-size heap copy, so a read past the end is an ASan report.
 *
 * Checked (abort on violation):
 *   - results follow http.h: DRV_OK with 0 < *used <= n; DRV_AGAIN with a
 *     hint *used > n; DRV_PROTOCOL with one of the documented statuses and
 *     a reason; nothing else;
 *   - every span of a parsed request lies inside the buffer (path may be
 *     the static "/"), path and query inside the target, the body inside
 *     [head_len, *used) and within max_body, the head within max_head;
 *     methods and header names are tokens, header values trimmed and free
 *     of CR/LF; version_minor is 0 or 1;
 *   - the verdict depends only on the bytes it covers: the first *used
 *     bytes alone parse to the same request and body; every strict prefix
 *     of a complete request is DRV_AGAIN (never refused), with a hint no
 *     larger than the request; a prefix of an incomplete or refused input
 *     is never a complete request, and a prefix of an incomplete one is
 *     never refused;
 *   - drv_http_query_get and drv_http_pct_decode stay inside their buffers
 *     and NUL-terminate what they report.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

#include "fuzz.h"

static const drv_http_limits limit_sets[4] = {
    {0, 0},
    {256, 1024},
    {64, 16},
    {1024, 0},
};

static bool tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool inside(drv_span s, const char *p, size_t n)
{
    return s.p >= p && s.n <= n && (size_t)(s.p - p) <= n - s.n;
}

static bool within(drv_span in, drv_span outer)
{
    return in.p >= outer.p && in.n <= outer.n && (size_t)(in.p - outer.p) <= outer.n - in.n;
}

/* Parse an exact-size copy of s[0..n). */
static drv_err parse_copy(const uint8_t *s, size_t n, const drv_http_limits *lim,
                          drv_http_request *req, size_t *used, char **copy)
{
    int status;
    const char *why;
    *copy = malloc(n ? n : 1);
    FUZZ_ASSERT(*copy != NULL);
    if (n)
        memcpy(*copy, s, n);
    return drv_http_parse(*copy, n, lim, req, used, &status, &why);
}

/* The head fields of a request whose head is complete. */
static void check_head(const drv_http_request *req, const char *p, size_t n, size_t max_head)
{
    FUZZ_ASSERT(req->head_len >= 16 && req->head_len <= n && req->head_len <= max_head);
    FUZZ_ASSERT(req->method.n > 0 && inside(req->method, p, req->head_len));
    for (size_t i = 0; i < req->method.n; i++)
        FUZZ_ASSERT(tchar((unsigned char)req->method.p[i]));
    FUZZ_ASSERT(req->target.n > 0 && inside(req->target, p, req->head_len));
    for (size_t i = 0; i < req->target.n; i++)
        FUZZ_ASSERT(req->target.p[i] > 0x20 && req->target.p[i] < 0x7F);
    if (!(req->path.n == 1 && req->path.p[0] == '/' && !inside(req->path, p, n)))
        FUZZ_ASSERT(within(req->path, req->target));
    FUZZ_ASSERT(req->path.n > 0);
    FUZZ_ASSERT(within(req->query, req->target));
    FUZZ_ASSERT(req->version_minor <= 1);
    FUZZ_ASSERT(req->nheaders <= DRV_HTTP_MAX_HEADERS);
    size_t hosts = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        drv_span nm = req->headers[i].name, v = req->headers[i].value;
        FUZZ_ASSERT(nm.n > 0 && inside(nm, p, req->head_len) && inside(v, p, req->head_len));
        for (size_t k = 0; k < nm.n; k++)
            FUZZ_ASSERT(tchar((unsigned char)nm.p[k]));
        for (size_t k = 0; k < v.n; k++)
            FUZZ_ASSERT(v.p[k] != '\r' && v.p[k] != '\n' && v.p[k] != '\0');
        if (v.n)
            FUZZ_ASSERT(v.p[0] != ' ' && v.p[0] != '\t' && v.p[v.n - 1] != ' ' &&
                        v.p[v.n - 1] != '\t');
        if (nm.n == 4 && strncasecmp(nm.p, "host", 4) == 0)
            hosts++;
    }
    FUZZ_ASSERT(hosts <= 1 && (hosts == 1 || req->version_minor == 0));
    FUZZ_ASSERT(!req->expect_continue || req->version_minor == 1);
    FUZZ_ASSERT(memcmp(p + req->head_len - 2, "\r\n", 2) == 0);
}

/* The helpers over a parsed request. */
static void check_helpers(const drv_http_request *req, uint8_t sel)
{
    char buf[17];
    size_t cap = sel % sizeof(buf);
    bool cut = false;
    static const char *const names[] = {"a", "id", "x y", ""};
    for (size_t i = 0; i < 4; i++) {
        memset(buf, 'Z', sizeof(buf));
        if (drv_http_query_get(req, names[i], buf, cap, &cut)) {
            FUZZ_ASSERT(cap == 0 ? cut : strnlen(buf, cap) < cap);
            FUZZ_ASSERT(cap == 0 || !cut || strnlen(buf, cap) == cap - 1); /* filled up */
        }
        for (size_t k = cap; k < sizeof(buf); k++)
            FUZZ_ASSERT(buf[k] == 'Z');
    }
    memset(buf, 'Z', sizeof(buf));
    if (drv_http_pct_decode(req->path, buf, cap)) {
        size_t len = strnlen(buf, cap);
        FUZZ_ASSERT(cap > 0 && len < cap && memchr(buf, '/', len) == NULL);
    }
    for (size_t k = cap; k < sizeof(buf); k++)
        FUZZ_ASSERT(buf[k] == 'Z');
    drv_span v;
    if (drv_http_header_get(req, "host", &v))
        FUZZ_ASSERT(v.p != NULL);
    (void)drv_http_reason(req->nheaders * 100 / 8);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    const uint8_t flags = data[0];
    const drv_http_limits *lim = &limit_sets[flags & 3];
    const size_t max_head = lim->max_head ? lim->max_head : 16384;
    const uint64_t max_body = lim->max_body ? lim->max_body : 64u << 20;
    const uint8_t *stream = data + 1;
    const size_t n = size - 1;

    char *p = malloc(n ? n : 1);
    FUZZ_ASSERT(p != NULL);
    if (n)
        memcpy(p, stream, n);

    size_t off = 0;
    for (int k = 0; k < 64; k++) {
        const size_t rem = n - off;
        drv_http_request req;
        size_t used = 12345;
        int status = -1;
        const char *why = (const char *)1;
        drv_err e = drv_http_parse(p + off, rem, lim, &req, &used, &status, &why);
        const uint8_t *orig = stream + off;
        /* A prefix length to check against this verdict. */
        size_t pre = rem ? (size_t)(flags >> 2) * rem / 64 : 0;

        if (e == DRV_OK) {
            FUZZ_ASSERT(used > 0 && used <= rem && status == 0 && why == NULL);
            check_head(&req, p + off, rem, max_head);
            FUZZ_ASSERT(req.head_len <= used);
            FUZZ_ASSERT(req.body.n <= max_body);
            FUZZ_ASSERT(req.body.p == p + off + req.head_len && req.body.n <= used - req.head_len);
            check_helpers(&req, (uint8_t)(flags ^ k));

            /* The first `used` bytes alone: the same request and body. */
            drv_http_request r2;
            size_t u2;
            char *c2;
            FUZZ_ASSERT(parse_copy(orig, used, lim, &r2, &u2, &c2) == DRV_OK);
            FUZZ_ASSERT(u2 == used && r2.head_len == req.head_len && r2.body.n == req.body.n);
            FUZZ_ASSERT(req.body.n == 0 || memcmp(r2.body.p, req.body.p, req.body.n) == 0);
            FUZZ_ASSERT(r2.nheaders == req.nheaders && r2.keep_alive == req.keep_alive);
            free(c2);
            /* Strict prefixes: not yet, never refused. */
            size_t cuts[2] = {used - 1, pre < used ? pre : used / 2};
            for (int i = 0; i < 2; i++) {
                drv_err e3 = parse_copy(orig, cuts[i], lim, &r2, &u2, &c2);
                FUZZ_ASSERT(e3 == DRV_AGAIN && u2 > cuts[i] && u2 <= used);
                if (r2.head_len)
                    FUZZ_ASSERT(r2.head_len == req.head_len);
                free(c2);
            }
            off += used;
            continue;
        }
        if (e == DRV_AGAIN) {
            FUZZ_ASSERT(used > rem && status == 0 && why == NULL);
            if (req.head_len) {
                check_head(&req, p + off, rem, max_head);
                FUZZ_ASSERT(used <= req.head_len + max_body + DRV_HTTP_CHUNK_SLACK + 2);
            } else {
                FUZZ_ASSERT(used == rem + 1 && rem < max_head);
            }
            /* A prefix of an incomplete request is incomplete too. */
            drv_http_request r2;
            size_t u2;
            char *c2;
            FUZZ_ASSERT(parse_copy(orig, pre, lim, &r2, &u2, &c2) == DRV_AGAIN);
            free(c2);
        } else {
            FUZZ_ASSERT(e == DRV_PROTOCOL);
            FUZZ_ASSERT(status == 400 || status == 411 || status == 413 || status == 414 ||
                        status == 431 || status == 501 || status == 505);
            FUZZ_ASSERT(why != NULL && why[0] != '\0' && used == 0);
            /* A prefix of a refused input is never a whole request. */
            drv_http_request r2;
            size_t u2;
            char *c2;
            FUZZ_ASSERT(parse_copy(orig, pre, lim, &r2, &u2, &c2) != DRV_OK);
            free(c2);
        }
        break;
    }
    free(p);
    return 0;
}
