/*
 * http_test.c — unit tests for src/http: the request parser (table-driven:
 * valid requests, every error status, limits, keep-alive rules, every split
 * point of a request), the query and percent-decoding helpers, response
 * headers, and the API thread end to end over socketpairs and a loopback
 * TCP connection (keep-alive, pipelining, 100-continue, HEAD, large
 * responses, streamed responses (chunked, HTTP/1.0, HEAD, abort, yield,
 * pipelined requests behind a stream), problem+json errors, timeouts,
 * max_connections, the TLS fields through a fake transport, stop with open
 * connections).
 *
 * Every parse gets an exact-size heap copy of its input, so a read past the
 * end is an ASan report.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
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

/* ------------------------------------------------------------------------ */
/* Parser helpers                                                            */

/* One parse of an exact-size copy of s[0..n); the copy lives in *copy. */
typedef struct parsed {
    char *copy;
    drv_http_request req;
    size_t used;
    int status;
    const char *why;
    drv_err e;
} parsed;

static void parse_n(parsed *r, const char *s, size_t n, const drv_http_limits *lim)
{
    r->copy = drv_malloc(n ? n : 1);
    memcpy(r->copy, s, n);
    r->e = drv_http_parse(r->copy, n, lim, &r->req, &r->used, &r->status, &r->why);
}

static void parse(parsed *r, const char *s, const drv_http_limits *lim)
{
    parse_n(r, s, strlen(s), lim);
}

static void done(parsed *r)
{
    drv_free(r->copy);
    r->copy = NULL;
}

static bool span_is(drv_span s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

static bool header_is(const drv_http_request *req, const char *name, const char *value)
{
    drv_span v;
    return drv_http_header_get(req, name, &v) && span_is(v, value);
}

/* ------------------------------------------------------------------------ */
/* Parser                                                                    */

static void test_simple_get(void)
{
    parsed r;
    const char *s = "GET /devices/d1?limit=10 HTTP/1.1\r\n"
                    "Host: example.com\r\n"
                    "User-Agent:  curl/8.0 \r\n"
                    "Accept:\t*/*\r\n"
                    "X-Empty:\r\n"
                    "\r\n";
    parse(&r, s, NULL);
    CHECK(r.e == DRV_OK);
    CHECK(r.used == strlen(s));
    CHECK(r.req.head_len == strlen(s));
    CHECK(span_is(r.req.method, "GET"));
    CHECK(span_is(r.req.target, "/devices/d1?limit=10"));
    CHECK(span_is(r.req.path, "/devices/d1"));
    CHECK(span_is(r.req.query, "limit=10"));
    CHECK(r.req.version_minor == 1);
    CHECK(r.req.keep_alive);
    CHECK(!r.req.expect_continue);
    CHECK(r.req.nheaders == 4);
    CHECK(header_is(&r.req, "host", "example.com"));
    CHECK(header_is(&r.req, "USER-AGENT", "curl/8.0")); /* trimmed */
    CHECK(header_is(&r.req, "Accept", "*/*"));
    CHECK(header_is(&r.req, "x-empty", ""));
    drv_span v;
    CHECK(!drv_http_header_get(&r.req, "Cookie", &v));
    CHECK(r.req.body.n == 0);
    CHECK(r.req.peer == NULL && !r.req.tls && r.req.cert == NULL);
    done(&r);

    /* No query; empty lines before the request line are skipped. */
    s = "\r\n\r\nDELETE /x HTTP/1.1\r\nHost: h\r\n\r\n";
    parse(&r, s, NULL);
    CHECK(r.e == DRV_OK && r.used == strlen(s) && r.req.head_len == strlen(s));
    CHECK(span_is(r.req.method, "DELETE") && span_is(r.req.path, "/x") && r.req.query.n == 0);
    done(&r);

    /* Absolute-form and asterisk-form targets. */
    parse(&r, "GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: example.com\r\n\r\n", NULL);
    CHECK(r.e == DRV_OK && span_is(r.req.path, "/a/b") && span_is(r.req.query, "c=d"));
    done(&r);
    parse(&r, "GET HTTPS://example.com?c=d HTTP/1.1\r\nHost: example.com\r\n\r\n", NULL);
    CHECK(r.e == DRV_OK && span_is(r.req.path, "/") && span_is(r.req.query, "c=d"));
    done(&r);
    parse(&r, "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", NULL);
    CHECK(r.e == DRV_OK && span_is(r.req.path, "*") && r.req.query.p && r.req.query.n == 0);
    done(&r);
    /* A query with an empty value and a trailing '?' */
    parse(&r, "GET /a? HTTP/1.1\r\nHost: h\r\n\r\n", NULL);
    CHECK(r.e == DRV_OK && span_is(r.req.path, "/a") && r.req.query.n == 0);
    done(&r);
    /* HTTP/1.x with x > 1 is read as 1.1. */
    parse(&r, "GET / HTTP/1.7\r\nHost: h\r\n\r\n", NULL);
    CHECK(r.e == DRV_OK && r.req.version_minor == 1);
    done(&r);
}

static void test_query(void)
{
    parsed r;
    parse(&r,
          "GET /a/b%20c?x=1&name=J%C3%B6rg+M&empty=&flag&pct=%zz%00%4&x=2&n%61me2=v&sp+ace=ok "
          "HTTP/1.1\r\nHost: h\r\n\r\n",
          NULL);
    CHECK(r.e == DRV_OK);
    char buf[64];
    bool cut = true;
    CHECK(drv_http_query_get(&r.req, "x", buf, sizeof(buf), &cut) && strcmp(buf, "1") == 0 && !cut);
    CHECK(drv_http_query_get(&r.req, "name", buf, sizeof(buf), &cut) &&
          strcmp(buf, "J\xC3\xB6rg M") == 0 && !cut);
    CHECK(drv_http_query_get(&r.req, "empty", buf, sizeof(buf), &cut) && buf[0] == '\0');
    CHECK(drv_http_query_get(&r.req, "flag", buf, sizeof(buf), NULL) && buf[0] == '\0');
    CHECK(drv_http_query_get(&r.req, "pct", buf, sizeof(buf), NULL) &&
          strcmp(buf, "%zz%00%4") == 0);
    CHECK(drv_http_query_get(&r.req, "name2", buf, sizeof(buf), NULL) && strcmp(buf, "v") == 0);
    CHECK(drv_http_query_get(&r.req, "sp ace", buf, sizeof(buf), NULL) && strcmp(buf, "ok") == 0);
    CHECK(!drv_http_query_get(&r.req, "missing", buf, sizeof(buf), &cut));
    CHECK(!drv_http_query_get(&r.req, "nam", buf, sizeof(buf), &cut));
    /* Truncation: what fits, NUL-terminated. */
    CHECK(drv_http_query_get(&r.req, "name", buf, 4, &cut) && cut && strcmp(buf, "J\xC3\xB6") == 0);
    CHECK(drv_http_query_get(&r.req, "x", buf, 2, &cut) && !cut && strcmp(buf, "1") == 0);
    CHECK(drv_http_query_get(&r.req, "x", buf, 1, &cut) && cut && buf[0] == '\0');
    CHECK(drv_http_query_get(&r.req, "x", buf, 0, &cut) && cut);

    /* Path segments. */
    CHECK(drv_http_pct_decode((drv_span){"b%20c", 5}, buf, sizeof(buf)) && strcmp(buf, "b c") == 0);
    CHECK(drv_http_pct_decode((drv_span){"a+b", 3}, buf, sizeof(buf)) && strcmp(buf, "a+b") == 0);
    CHECK(drv_http_pct_decode((drv_span){"", 0}, buf, sizeof(buf)) && buf[0] == '\0');
    CHECK(!drv_http_pct_decode((drv_span){"a%2Fb", 5}, buf, sizeof(buf)));
    CHECK(!drv_http_pct_decode((drv_span){"a/b", 3}, buf, sizeof(buf)));
    CHECK(!drv_http_pct_decode((drv_span){"a%00", 4}, buf, sizeof(buf)));
    CHECK(!drv_http_pct_decode((drv_span){"a%g1", 4}, buf, sizeof(buf)));
    CHECK(!drv_http_pct_decode((drv_span){"a%2", 3}, buf, sizeof(buf)));
    CHECK(drv_http_pct_decode((drv_span){"abc", 3}, buf, 4) && strcmp(buf, "abc") == 0);
    CHECK(!drv_http_pct_decode((drv_span){"abcd", 4}, buf, 4));
    CHECK(!drv_http_pct_decode((drv_span){"", 0}, buf, 0));
    done(&r);
}

static void test_pipelined(void)
{
    const char *s = "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
                    "POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                    "GET /three HTTP/1.1\r\nHost: h\r\n\r\nGET /fo";
    size_t n = strlen(s);
    char *copy = drv_malloc(n);
    memcpy(copy, s, n);
    drv_http_request req;
    size_t used, off = 0;
    int status;
    const char *why;
    static const char *const paths[] = {"/one", "/two", "/three"};
    for (int i = 0; i < 3; i++) {
        CHECK(drv_http_parse(copy + off, n - off, NULL, &req, &used, &status, &why) == DRV_OK);
        CHECK_CASE(span_is(req.path, paths[i]), paths[i]);
        off += used;
    }
    CHECK(span_is(req.path, "/three"));
    CHECK(drv_http_parse(copy + off, n - off, NULL, &req, &used, &status, &why) == DRV_AGAIN);
    CHECK(off + 7 == n);
    drv_free(copy);
}

static void test_bodies(void)
{
    parsed r;
    const char *s = "PUT /d HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello worldGET";
    parse(&r, s, NULL);
    CHECK(r.e == DRV_OK && r.used == strlen(s) - 3);
    CHECK(span_is(r.req.body, "hello world"));
    CHECK(r.req.body.p == r.copy + r.req.head_len);
    done(&r);

    /* Equal repeated values are one length (RFC 9110 §8.6). */
    parse(&r, "PUT /d HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok",
          NULL);
    CHECK(r.e == DRV_OK && span_is(r.req.body, "ok"));
    done(&r);

    /* Chunked, with extensions and trailers, de-chunked in place. */
    s = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n"
        "4;a=b ; c=\"d \\\"e\\\"\"\r\nWiki\r\n"
        "5\r\npedia\r\n"
        "00E\r\n in\r\n\r\nchunks.\r\n"
        "0;last\r\nX-Trailer: yes\r\nX-Other: 1\r\n\r\n"
        "NEXT";
    parse(&r, s, NULL);
    CHECK(r.e == DRV_OK);
    CHECK(r.used == strlen(s) - 4);
    CHECK(span_is(r.req.body, "Wikipedia in\r\n\r\nchunks."));
    CHECK(r.req.body.p == r.copy + r.req.head_len);
    CHECK(memcmp(r.copy + r.used, "NEXT", 4) == 0); /* the next request is untouched */
    done(&r);

    /* An empty chunked body. */
    parse(&r, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", NULL);
    CHECK(r.e == DRV_OK && r.req.body.n == 0);
    done(&r);
}

/* Every split point of a valid request: DRV_AGAIN with a sane hint, then DRV_OK. */
static void check_splits(const char *name, const char *s, size_t head_len)
{
    size_t n = strlen(s);
    bool ok = true;
    for (size_t k = 0; k < n && ok; k++) {
        parsed r;
        parse_n(&r, s, k, NULL);
        ok = r.e == DRV_AGAIN && r.used > k && r.used <= n &&
             (r.req.head_len == (k >= head_len ? head_len : 0));
        if (!ok)
            fprintf(stderr, "%s: split at %zu: e=%d used=%zu head_len=%zu\n", name, k, r.e, r.used,
                    r.req.head_len);
        done(&r);
    }
    CHECK_CASE(ok, name);
    parsed r;
    parse(&r, s, NULL);
    CHECK_CASE(r.e == DRV_OK && r.used == n && r.req.head_len == head_len, name);
    done(&r);
}

static void test_partial(void)
{
    const char *get = "\r\nGET /a?b=c HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n";
    check_splits("get", get, strlen(get));
    const char *head = "POST /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                       "Content-Length: 10\r\n\r\n";
    char buf[512];
    snprintf(buf, sizeof(buf), "%s0123456789", head);
    check_splits("content-length", buf, strlen(head));
    const char *chead = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    snprintf(buf, sizeof(buf), "%s%s", chead,
             "3;x=\"q\\\"s\"\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n");
    check_splits("chunked", buf, strlen(chead));

    /* The hint for a Content-Length body is the whole request. */
    parsed r;
    parse(&r, "POST /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
          NULL);
    CHECK(r.e == DRV_AGAIN && r.req.head_len > 0 && r.used == r.req.head_len + 1000);
    CHECK(r.req.expect_continue);
    done(&r);
    /* HTTP/1.0 ignores 100-continue. */
    parse(&r, "POST /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n", NULL);
    CHECK(r.e == DRV_AGAIN && r.req.head_len > 0 && !r.req.expect_continue);
    done(&r);
}

typedef struct bad_case {
    const char *name;
    const char *req;
    int status;
} bad_case;

static void test_errors(void)
{
    static const bad_case cases[] = {
        {"TE gzip", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
        {"TE gzip, chunked",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"TE identity", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 501},
        {"TE twice chunked",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
         "chunked\r\n\r\n",
         400},
        {"TE empty", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n", 400},
        {"TE and CL",
         "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
         400},
        {"TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"CL differ",
         "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
        {"CL list differ", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", 400},
        {"CL alpha", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n", 400},
        {"CL sign", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400},
        {"CL negative", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400},
        {"CL empty", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400},
        {"CL huge", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
         413},
        {"CL over max_body", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 67108865\r\n\r\n", 413},
        {"space before colon", "GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400},
        {"tab before colon", "GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400},
        {"obs-fold", "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  b\r\n\r\n", 400},
        {"space first line", "GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400},
        {"no colon", "GET / HTTP/1.1\r\nHost h\r\n\r\n", 400},
        {"empty name", "GET / HTTP/1.1\r\n: h\r\n\r\n", 400},
        {"ctl in value", "GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n", 400},
        {"ctl in target", "GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"8bit in target", "GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"tab in target", "GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"fragment", "GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"bare LF", "GET / HTTP/1.1\nHost: h\n\n", 400},
        {"bare LF header", "GET / HTTP/1.1\r\nHost: h\n\r\n", 400},
        {"bare CR header", "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400},
        {"bare CR end", "GET / HTTP/1.1\r\nHost: h\r\n\rX", 400},
        {"bare CR lead", "\rGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
        {"HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 505},
        {"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400}, /* '*' is for OPTIONS only */
        {"lower-case version", "GET / http/1.1\r\nHost: h\r\n\r\n", 400},
        {"long version", "GET / HTTP/1.10\r\nHost: h\r\n\r\n", 400},
        {"no version", "GET /\r\nHost: h\r\n\r\n", 400},
        {"two spaces", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"no method", " / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"method char", "GE(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"TLS hello", "\x16\x03\x01\x02\x00\x01", 400},
        {"star not OPTIONS", "GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"authority form", "CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"no authority", "GET http:///a HTTP/1.1\r\nHost: h\r\n\r\n", 400},
        {"missing Host", "GET / HTTP/1.1\r\n\r\n", 400},
        {"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"two Hosts 1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n", 400},
        {"1.0 POST no CL", "POST / HTTP/1.0\r\n\r\n", 411},
        {"1.0 PUT no CL", "PUT / HTTP/1.0\r\n\r\n", 411},
        {"chunk size junk",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
        {"chunk size 0x", "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n",
         400},
        {"chunk size space",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\n", 400},
        {"chunk no CRLF after data",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400},
        {"chunk bare LF",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n", 400},
        {"chunk ext junk",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;=x\r\nabc\r\n", 400},
        {"chunk ext unterminated",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"x\r\nabc\r\n", 400},
        {"chunk ext ctl",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"\x01\"\r\nabc\r\n",
         400},
        {"chunk too big",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4000001\r\n", 413},
        {"chunk overflow",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
         413},
        {"trailer fold",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n c\r\n\r\n",
         400},
        {"trailer no colon",
         "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nAb\r\n\r\n", 400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const bad_case *c = &cases[i];
        parsed r;
        parse(&r, c->req, NULL);
        CHECK_CASE(r.e == DRV_PROTOCOL && r.status == c->status && r.why && r.why[0], c->name);
        if (r.e != DRV_PROTOCOL || r.status != c->status)
            fprintf(stderr, "  %s: e=%d status=%d why=%s\n", c->name, r.e, r.status,
                    r.why ? r.why : "-");
        done(&r);
    }
    /* A NUL in a header value (the table's strings cannot hold one). */
    static const char nul[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n";
    parsed r;
    parse_n(&r, nul, sizeof(nul) - 1, NULL);
    CHECK(r.e == DRV_PROTOCOL && r.status == 400);
    done(&r);
}

static void test_limits(void)
{
    drv_http_limits small = {.max_head = 64, .max_body = 10};
    parsed r;
    char buf[8192];

    /* A request line that does not end within max_head: 414, even before it ends. */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "GET /", 5);
    parse_n(&r, buf, 64, &small);
    CHECK(r.e == DRV_PROTOCOL && r.status == 414);
    done(&r);
    parse_n(&r, buf, 63, &small);
    CHECK(r.e == DRV_AGAIN);
    done(&r);

    /* Headers that do not end within max_head: 431. */
    parse(&r, "GET / HTTP/1.1\r\nHost: h\r\nX-Long: 0123456789012345678901234567890\r\n\r\n",
          &small);
    CHECK(r.e == DRV_PROTOCOL && r.status == 431);
    done(&r);
    /* A head of exactly max_head bytes is fine. */
    const char *exact = "GET / HTTP/1.1\r\nHost: h\r\nX: 01234567890123456789012345678901\r\n\r\n";
    CHECK(strlen(exact) == 64);
    parse(&r, exact, &small);
    CHECK(r.e == DRV_OK);
    done(&r);

    /* Bodies over max_body: Content-Length at once, chunked once the sizes add up. */
    parse(&r, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", &small);
    CHECK(r.e == DRV_PROTOCOL && r.status == 413);
    done(&r);
    parse(&r, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", &small);
    CHECK(r.e == DRV_OK && r.req.body.n == 10);
    done(&r);
    parse(&r,
          "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\n",
          &small);
    CHECK(r.e == DRV_PROTOCOL && r.status == 413);
    done(&r);

    /* 64 header fields are fine, 65 are not. */
    int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 1; i < DRV_HTTP_MAX_HEADERS; i++)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "X-%d: v\r\n", i);
    snprintf(buf + n, sizeof(buf) - (size_t)n, "\r\n");
    parse(&r, buf, NULL);
    CHECK(r.e == DRV_OK && r.req.nheaders == DRV_HTTP_MAX_HEADERS);
    done(&r);
    snprintf(buf + n, sizeof(buf) - (size_t)n, "X-last: v\r\n\r\n");
    parse(&r, buf, NULL);
    CHECK(r.e == DRV_PROTOCOL && r.status == 431);
    done(&r);

    /* Chunk framing beyond DRV_HTTP_CHUNK_SLACK: 413, also for one endless extension. */
    size_t cap = 200000;
    char *big = drv_malloc(cap);
    size_t len = (size_t)snprintf(big, cap,
                                  "POST / HTTP/1.1\r\nHost: h\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n");
    while (len + 6 < cap) {
        memcpy(big + len, "1\r\nx\r\n", 6);
        len += 6;
    }
    parse_n(&r, big, len, NULL);
    CHECK(r.e == DRV_PROTOCOL && r.status == 413);
    done(&r);
    len = (size_t)snprintf(big, cap,
                           "POST / HTTP/1.1\r\nHost: h\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n1;a=");
    memset(big + len, 'b', cap - len);
    parse_n(&r, big, cap, NULL);
    CHECK(r.e == DRV_PROTOCOL && r.status == 413);
    done(&r);
    parse_n(&r, big, len + 1000, NULL);
    CHECK(r.e == DRV_AGAIN);
    done(&r);
    drv_free(big);
}

typedef struct ka_case {
    const char *req;
    bool keep_alive;
} ka_case;

static void test_keep_alive(void)
{
    static const ka_case cases[] = {
        {"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n", true},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: foo\r\n\r\n", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        parsed r;
        parse(&r, cases[i].req, NULL);
        CHECK_CASE(r.e == DRV_OK && r.req.keep_alive == cases[i].keep_alive, cases[i].req);
        done(&r);
    }
    parsed r;
    parse(&r, "POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", NULL);
    CHECK(r.e == DRV_OK && r.req.version_minor == 0 && span_is(r.req.body, "hi"));
    done(&r);
}

static void test_reason_and_headers(void)
{
    CHECK(strcmp(drv_http_reason(200), "OK") == 0);
    CHECK(strcmp(drv_http_reason(404), "Not Found") == 0);
    CHECK(strcmp(drv_http_reason(413), "Content Too Large") == 0);
    CHECK(strcmp(drv_http_reason(431), "Request Header Fields Too Large") == 0);
    CHECK(strcmp(drv_http_reason(505), "HTTP Version Not Supported") == 0);
    CHECK(strcmp(drv_http_reason(299), "") == 0);

    drv_http_response resp = {.status = 200};
    drv_buf_init(&resp.headers, 64);
    CHECK(drv_http_add_header(&resp, "X-Count", "%d items", 42) == DRV_OK);
    CHECK(drv_http_add_header(&resp, "Location", "%s", "/a\r\nSet-Cookie: x") == DRV_INVAL);
    CHECK(drv_http_add_header(&resp, "X-Bad Name", "v") == DRV_INVAL);
    CHECK(drv_http_add_header(&resp, "", "v") == DRV_INVAL);
    CHECK(drv_http_add_header(&resp, "content-length", "5") == DRV_INVAL);
    CHECK(drv_http_add_header(&resp, "Connection", "close") == DRV_INVAL);
    CHECK(drv_http_add_header(&resp, "X-Tab", "a\tb") == DRV_OK);
    const char *want = "X-Count: 42 items\r\nX-Tab: a\tb\r\n";
    CHECK(resp.headers.len == strlen(want) && memcmp(resp.headers.data, want, strlen(want)) == 0);
    CHECK(drv_http_add_header(&resp, "X-Long", "%s", "0123456789012345678901234567890123456") ==
          DRV_TOOBIG);
    CHECK(resp.headers.len == strlen(want));
    drv_buf_free(&resp.headers);
}

/* ------------------------------------------------------------------------ */
/* Server                                                                    */

/* A streamed body: `total` bytes of 'a'..'z' in slices; fails after
 * `fail_after` calls (0: never); yields (appends nothing) on every third call. */
typedef struct streamer {
    size_t total, sent;
    unsigned calls, fail_after;
    bool yield;
} streamer;

static _Atomic int streams_freed; /* written on the API thread */

static drv_err stream_fn(void *ud, drv_buf *out)
{
    streamer *s = ud;
    s->calls++;
    if (s->fail_after && s->calls > s->fail_after)
        return DRV_IO;
    if (s->yield && s->calls % 3 == 0)
        return DRV_AGAIN;
    char slice[DRV_HTTP_STREAM_SLICE];
    size_t n = s->total - s->sent < sizeof(slice) ? s->total - s->sent : sizeof(slice);
    for (size_t i = 0; i < n; i++)
        slice[i] = (char)('a' + (s->sent + i) % 26);
    if (drv_buf_append(out, slice, n) != DRV_OK)
        return DRV_NOMEM;
    s->sent += n;
    return s->sent == s->total ? DRV_OK : DRV_AGAIN;
}

static void stream_free_fn(void *ud)
{
    streams_freed++;
    drv_free(ud);
}

/* The test application. */
static void app(void *ud, const drv_http_request *req, drv_http_response *resp)
{
    (void)ud;
    char path[128];
    snprintf(path, sizeof(path), "%.*s", (int)req->path.n, req->path.p);
    resp->content_type = "text/plain";
    if (strcmp(path, "/hello") == 0) {
        drv_buf_append(&resp->body, "hello", 5);
    } else if (strcmp(path, "/echo") == 0) {
        drv_http_add_header(resp, "X-Method", "%.*s", (int)req->method.n, req->method.p);
        drv_buf_append(&resp->body, req->body.p, req->body.n);
    } else if (strcmp(path, "/close") == 0) {
        resp->close = true;
        drv_buf_append(&resp->body, "bye", 3);
    } else if (strcmp(path, "/big") == 0) {
        static char big[1 << 20];
        for (size_t i = 0; i < sizeof(big); i++)
            big[i] = (char)('a' + i % 26);
        drv_buf_append(&resp->body, big, sizeof(big));
    } else if (strcmp(path, "/info") == 0) {
        char b[512];
        int n = snprintf(b, sizeof(b), "tls=%d cert=%s loopback=%d", req->tls,
                         req->cert ? req->cert->subject : "-", req->peer && req->peer->loopback);
        drv_buf_append(&resp->body, b, (size_t)n);
    } else if (strcmp(path, "/nocontent") == 0) {
        resp->status = 204;
        drv_buf_append(&resp->body, "dropped", 7);
    } else if (strcmp(path, "/bad") == 0) {
        resp->status = 42;
    } else if (strncmp(path, "/stream", 7) == 0) {
        streamer *st = drv_calloc(1, sizeof(*st));
        st->total = strcmp(path, "/stream-small") == 0   ? 10
                    : strcmp(path, "/stream-empty") == 0 ? 0
                                                         : 1500000;
        st->fail_after = strcmp(path, "/stream-fail") == 0 ? 3 : 0;
        st->yield = strcmp(path, "/stream-yield") == 0;
        drv_buf_append(&resp->body, "[", 1); /* the first bytes come from the body */
        resp->stream = stream_fn;
        resp->stream_ud = st;
        resp->stream_free = stream_free_fn;
    } else {
        resp->status = 404;
        resp->content_type = "application/json";
        drv_buf_append(&resp->body, "{}", 2);
    }
}

/* The client side of a test connection. */
typedef struct client {
    int fd;
    char buf[3 << 20]; /* bytes read and not yet taken */
    size_t len;
} client;

typedef struct response {
    int status;
    char head[4096]; /* status line and headers, NUL-terminated */
    char *body;      /* into a static buffer */
    size_t body_len;
} response;

static void client_send(client *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void client_say(client *c, const char *s)
{
    client_send(c, s, strlen(s));
}

/* Read more within 5 s; false on EOF, error or timeout. */
static bool client_fill(client *c)
{
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (poll(&pfd, 1, 5000) <= 0)
        return false;
    ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
    if (r <= 0)
        return false;
    c->len += (size_t)r;
    return true;
}

/* The status code at the start of s ("200 OK"), or -1. */
static int status_of(const char *s)
{
    int v = 0;
    for (int i = 0; i < 3; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* One response (the body is taken unless head_only). */
static bool client_response(client *c, response *r, bool head_only)
{
    static char body[3 << 20];
    for (;;) {
        char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end) {
            size_t hl = (size_t)(end + 4 - c->buf);
            if (hl >= sizeof(r->head))
                return false;
            memcpy(r->head, c->buf, hl);
            r->head[hl] = '\0';
            r->status = status_of(r->head + 9);
            size_t cl = 0;
            char *p = strstr(r->head, "Content-Length: ");
            if (p && !head_only)
                cl = (size_t)strtoul(p + 16, NULL, 10);
            while (c->len < hl + cl)
                if (!client_fill(c))
                    return false;
            memcpy(body, c->buf + hl, cl);
            r->body = body;
            r->body_len = cl;
            memmove(c->buf, c->buf + hl + cl, c->len - hl - cl);
            c->len -= hl + cl;
            return true;
        }
        if (!client_fill(c))
            return false;
    }
}

/* A chunked body (after its head, taken by client_response with head_only)
 * into a static buffer; false when malformed or cut short. */
static bool client_chunked(client *c, char **body, size_t *len)
{
    static char data[3 << 20];
    size_t n = 0;
    for (;;) {
        char *eol;
        while (!(eol = memmem(c->buf, c->len, "\r\n", 2)))
            if (!client_fill(c))
                return false;
        size_t size = (size_t)strtoul(c->buf, NULL, 16);
        size_t hl = (size_t)(eol + 2 - c->buf);
        while (c->len < hl + size + 2)
            if (!client_fill(c))
                return false;
        if (n + size > sizeof(data) || memcmp(c->buf + hl + size, "\r\n", 2) != 0)
            return false;
        memcpy(data + n, c->buf + hl, size);
        n += size;
        memmove(c->buf, c->buf + hl + size + 2, c->len - hl - size - 2);
        c->len -= hl + size + 2;
        if (size == 0) {
            *body = data;
            *len = n;
            return true;
        }
    }
}

/* body[1..len) is the streamer's pattern, body[0] the handler's '['. */
static bool stream_body_ok(const char *body, size_t len, size_t total)
{
    if (len != total + 1 || body[0] != '[')
        return false;
    for (size_t i = 0; i < total; i++)
        if (body[i + 1] != (char)('a' + i % 26))
            return false;
    return true;
}

/* The server closed the connection (EOF within 5 s, nothing else sent). */
static bool client_eof(client *c)
{
    if (c->len > 0)
        return false;
    struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
    if (poll(&pfd, 1, 5000) <= 0)
        return false;
    char b[64];
    return read(c->fd, b, sizeof(b)) <= 0;
}

static bool has(const response *r, const char *s)
{
    return strstr(r->head, s) != NULL;
}

static bool body_is(const response *r, const char *s)
{
    return r->body_len == strlen(s) && memcmp(r->body, s, r->body_len) == 0;
}

/* A fake TLS transport over a socket: plain bytes, but it has a client certificate. */
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
    drv_free(st);
}

static bool fake_peer_cert(drv_stream *st, drv_peer_cert *out)
{
    (void)st;
    memset(out, 0, sizeof(*out));
    out->present = true;
    out->verified = true; /* the HTTP server keeps verified certificates only */
    snprintf(out->subject, sizeof(out->subject), "CN=dev1");
    return true;
}

static const drv_transport_ops fake_tls_ops = {
    .name = "tls",
    .read = fake_read,
    .write = fake_write,
    .free = fake_free,
    .peer_cert = fake_peer_cert,
};

static int set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* A socketpair: the client end in c, the server end adopted (with pre bytes). */
static void open_conn(drv_http_server *srv, client *c, bool tls, const char *pre)
{
    int sv[2];
    c->len = 0;
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
    drv_http_adopt(srv, sv[1], st, &peer, (const uint8_t *)pre, pre ? strlen(pre) : 0);
}

static void close_conn(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static client cl, cl2;
static response rs;

static void test_server_keep_alive(drv_http_server *srv)
{
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false));
    CHECK(rs.status == 200 && body_is(&rs, "hello"));
    CHECK(strncmp(rs.head, "HTTP/1.1 200 OK\r\n", 17) == 0);
    CHECK(has(&rs, "\r\nContent-Length: 5\r\n") && has(&rs, "\r\nContent-Type: text/plain\r\n"));
    CHECK(has(&rs, "\r\nDate: ") && has(&rs, " GMT\r\n") && !has(&rs, "Connection"));

    client_say(&cl, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nping");
    CHECK(client_response(&cl, &rs, false));
    CHECK(rs.status == 200 && body_is(&rs, "ping") && has(&rs, "\r\nX-Method: POST\r\n"));

    client_say(&cl, "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n");
    CHECK(client_response(&cl, &rs, false));
    CHECK(rs.status == 200 && body_is(&rs, "abcde"));

    client_say(&cl,
               "GET /nocontent HTTP/1.1\r\nHost: h\r\n\r\nGET /bad HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false));
    CHECK(rs.status == 204 && !has(&rs, "Content-Length") && rs.body_len == 0);
    CHECK(client_response(&cl, &rs, false));
    CHECK(rs.status == 500 && has(&rs, "Content-Length: 0\r\n"));

    client_say(&cl, "GET /close HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false));
    CHECK(rs.status == 200 && body_is(&rs, "bye") && has(&rs, "\r\nConnection: close\r\n"));
    CHECK(client_eof(&cl));
    close_conn(&cl);
}

static void test_server_pipelining(drv_http_server *srv)
{
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n"
                    "PUT /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz"
                    "GET /nothing HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 200 && body_is(&rs, "hello"));
    CHECK(client_response(&cl, &rs, false) && rs.status == 200 && body_is(&rs, "xyz"));
    CHECK(client_response(&cl, &rs, false) && rs.status == 404 && body_is(&rs, "{}"));
    CHECK(has(&rs, "Content-Type: application/json\r\n"));

    /* Many small requests in one write. */
    char buf[4096];
    size_t n = 0;
    for (int i = 0; i < 60; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    client_send(&cl, buf, n);
    bool ok = true;
    for (int i = 0; i < 60 && ok; i++)
        ok = client_response(&cl, &rs, false) && rs.status == 200 && body_is(&rs, "hello");
    CHECK(ok);

    /* Large responses to pipelined requests while the client does not read yet. */
    client_say(&cl, "GET /big HTTP/1.1\r\nHost: h\r\n\r\nGET /big HTTP/1.1\r\nHost: h\r\n\r\n"
                    "HEAD /big HTTP/1.1\r\nHost: h\r\n\r\nGET /big HTTP/1.1\r\nHost: h\r\n\r\n");
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    for (int i = 0; i < 4; i++) {
        bool head = i == 2;
        ok = client_response(&cl, &rs, head) && rs.status == 200 &&
             has(&rs, "Content-Length: 1048576\r\n");
        for (size_t j = 0; ok && !head && j < rs.body_len; j++)
            ok = rs.body[j] == (char)('a' + j % 26);
        ok = ok && rs.body_len == (head ? 0 : 1048576u);
        CHECK_CASE(ok, head ? "HEAD /big" : "GET /big");
    }
    /* HEAD then GET: no body after the HEAD response. */
    client_say(&cl,
               "HEAD /hello HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, true) && rs.status == 200 && has(&rs, "Content-Length: 5\r\n"));
    CHECK(client_response(&cl, &rs, false) && rs.status == 200 && body_is(&rs, "hello"));
    close_conn(&cl);
}

static void test_server_continue(drv_http_server *srv)
{
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                    "Content-Length: 5\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 100);
    CHECK(strcmp(rs.head, "HTTP/1.1 100 Continue\r\n\r\n") == 0);
    client_say(&cl, "hello");
    CHECK(client_response(&cl, &rs, false) && rs.status == 200 && body_is(&rs, "hello"));
    /* The body already there: no 100. */
    client_say(&cl, "POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                    "Content-Length: 2\r\n\r\nhi");
    CHECK(client_response(&cl, &rs, false) && rs.status == 200 && body_is(&rs, "hi"));
    /* Too large: 413 at once, never 100. */
    client_say(&cl, "POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                    "Content-Length: 999999999999\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 413);
    CHECK(has(&rs, "Content-Type: application/problem+json\r\n"));
    CHECK(client_eof(&cl));
    close_conn(&cl);
}

static void test_server_errors(drv_http_server *srv)
{
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET / HTTP/1.1\r\nHost : h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 400);
    CHECK(strncmp(rs.head, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    CHECK(has(&rs, "\r\nContent-Type: application/problem+json\r\n"));
    CHECK(has(&rs, "\r\nConnection: close\r\n"));
    char json[512];
    snprintf(json, sizeof(json), "%.*s", (int)rs.body_len, rs.body);
    CHECK(strncmp(json, "{\"type\":\"about:blank\",\"title\":\"Bad Request\",\"status\":400,",
                  56) == 0);
    CHECK(strstr(json, "\"detail\":\"whitespace before a header's colon\"}") != NULL);
    CHECK(client_eof(&cl));
    close_conn(&cl);

    /* A good request, then a bad one behind it: 200, 400, close. */
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/2.0\r\nHost: h\r\n\r\n"
                    "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 200);
    CHECK(client_response(&cl, &rs, false) && rs.status == 505);
    CHECK(client_eof(&cl));
    close_conn(&cl);

    /* Garbage (a TLS ClientHello on the plain port): 400 without waiting for more. */
    open_conn(srv, &cl, false, NULL);
    client_send(&cl, "\x16\x03\x01\x00\xa5\x01\x00", 7);
    CHECK(client_response(&cl, &rs, false) && rs.status == 400);
    CHECK(client_eof(&cl));
    close_conn(&cl);
}

static void test_server_http10(drv_http_server *srv)
{
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 200 && body_is(&rs, "hello"));
    CHECK(has(&rs, "\r\nConnection: keep-alive\r\n"));
    client_say(&cl, "GET /hello HTTP/1.0\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 200);
    CHECK(has(&rs, "\r\nConnection: close\r\n"));
    CHECK(client_eof(&cl));
    close_conn(&cl);
}

static void test_server_stream(drv_http_server *srv)
{
    int freed = streams_freed;
    char *body;
    size_t len;
    /* Chunked, with requests pipelined behind it; the client reads late. */
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /stream HTTP/1.1\r\nHost: h\r\n\r\n"
                    "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n"
                    "GET /stream-yield HTTP/1.1\r\nHost: h\r\n\r\n"
                    "HEAD /stream HTTP/1.1\r\nHost: h\r\n\r\n"
                    "GET /stream-small HTTP/1.1\r\nHost: h\r\n\r\n"
                    "GET /stream-empty HTTP/1.1\r\nHost: h\r\n\r\n");
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK(client_response(&cl, &rs, true) && rs.status == 200);
    CHECK(has(&rs, "\r\nTransfer-Encoding: chunked\r\n") && !has(&rs, "Content-Length"));
    CHECK(client_chunked(&cl, &body, &len) && stream_body_ok(body, len, 1500000));
    CHECK(client_response(&cl, &rs, false) && rs.status == 200 && body_is(&rs, "hello"));
    CHECK(client_response(&cl, &rs, true) && rs.status == 200);
    CHECK(client_chunked(&cl, &body, &len) && stream_body_ok(body, len, 1500000));
    CHECK(client_response(&cl, &rs, true) && rs.status == 200); /* HEAD: the head alone */
    CHECK(has(&rs, "\r\nTransfer-Encoding: chunked\r\n"));
    CHECK(client_response(&cl, &rs, true) && rs.status == 200);
    CHECK(client_chunked(&cl, &body, &len) && stream_body_ok(body, len, 10));
    CHECK(client_response(&cl, &rs, true) && rs.status == 200); /* nothing but the body's '[' */
    CHECK(client_chunked(&cl, &body, &len) && stream_body_ok(body, len, 0));
    close_conn(&cl);

    /* HTTP/1.0: no chunks; the body ends with the connection. */
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(client_response(&cl, &rs, true) && rs.status == 200);
    CHECK(has(&rs, "\r\nConnection: close\r\n") && !has(&rs, "Transfer-Encoding"));
    while (client_fill(&cl))
        ;
    CHECK(stream_body_ok(cl.buf, cl.len, 1500000));
    cl.len = 0;
    close_conn(&cl);

    /* A producer error: the body is cut short (no last chunk), the connection closed. */
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /stream-fail HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, true) && rs.status == 200);
    CHECK(!client_chunked(&cl, &body, &len));
    close_conn(&cl);

    /* The client goes away in the middle: the producer's state is still freed. */
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /stream HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, true) && rs.status == 200);
    close_conn(&cl);
    for (int i = 0; i < 100 && streams_freed < freed + 8; i++)
        nanosleep(&ts, NULL);
    CHECK(streams_freed == freed + 8);
}

static void test_server_pre_and_tls(drv_http_server *srv)
{
    /* Bytes the worker already read start the first request. */
    open_conn(srv, &cl, false, "GET /hel");
    client_say(&cl, "lo HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 200 && body_is(&rs, "hello"));
    client_say(&cl, "GET /info HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && body_is(&rs, "tls=0 cert=- loopback=1"));
    close_conn(&cl);

    /* A whole request in the pre bytes, over a transport with a client certificate. */
    open_conn(srv, &cl, true, "GET /info HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && body_is(&rs, "tls=1 cert=CN=dev1 loopback=1"));
    client_say(&cl, "GET /info HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && body_is(&rs, "tls=1 cert=CN=dev1 loopback=1"));
    CHECK(client_eof(&cl));
    close_conn(&cl);
}

static void test_server_tcp(drv_http_server *srv)
{
    int lfd, port;
    if (drv_listen_tcp("127.0.0.1:0", 16, false, &lfd, &port) != DRV_OK) {
        CHECK(!"listen");
        return;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    int sfd = -1;
    drv_peer peer;
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    poll(&pfd, 1, 5000);
    CHECK(drv_accept(lfd, &sfd, &peer) == DRV_OK);
    CHECK(peer.family == 4 && peer.loopback);
    drv_close(lfd);
    drv_http_adopt(srv, sfd, NULL, &peer, NULL, 0);
    cl.fd = fd;
    cl.len = 0;
    client_say(&cl, "GET /info HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && body_is(&rs, "tls=0 cert=- loopback=1"));
    /* A rejected upload still sending: the 400 arrives before the close. */
    client_say(&cl, "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n");
    static char junk[65536];
    memset(junk, 'j', sizeof(junk));
    client_send(&cl, junk, sizeof(junk));
    CHECK(client_response(&cl, &rs, false) && rs.status == 400);
    CHECK(client_eof(&cl));
    close_conn(&cl);
}

static void test_server_timeouts(void)
{
    drv_http_config cfg = {
        .handler = app, .idle_timeout_ms = 300, .request_timeout_ms = 300, .max_connections = 2};
    drv_http_server *srv = NULL;
    CHECK(drv_http_server_start(&cfg, &srv) == DRV_OK);
    if (!srv)
        return;
    /* A request that never completes: 408, close. */
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /hello HT");
    CHECK(client_response(&cl, &rs, false) && rs.status == 408);
    CHECK(has(&rs, "application/problem+json"));
    CHECK(client_eof(&cl));
    close_conn(&cl);
    /* An idle keep-alive connection: closed without a word. */
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 200);
    CHECK(client_eof(&cl));
    close_conn(&cl);
    drv_http_server_stop(srv);
}

static void test_server_max_connections(void)
{
    drv_http_config cfg = {.handler = app, .max_connections = 1};
    drv_http_server *srv = NULL;
    CHECK(drv_http_server_start(&cfg, &srv) == DRV_OK);
    if (!srv)
        return;
    open_conn(srv, &cl, false, NULL);
    client_say(&cl, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 200);
    open_conn(srv, &cl2, false, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl2, &rs, false) && rs.status == 503);
    CHECK(has(&rs, "Retry-After: 5\r\n") && has(&rs, "Connection: close\r\n"));
    CHECK(client_eof(&cl2));
    close_conn(&cl2);
    drv_http_stats st;
    drv_http_server_stats(srv, &st);
    CHECK(st.connections_refused == 1 && st.connections_open == 1 && st.connections_total == 1);
    /* The first connection still works. */
    client_say(&cl, "GET /hello HTTP/1.1\r\nHost: h\r\n\r\n");
    CHECK(client_response(&cl, &rs, false) && rs.status == 200);
    /* Stop with it open: the client sees the close. */
    drv_http_server_stop(srv);
    CHECK(client_eof(&cl));
    close_conn(&cl);
}

static void test_server(void)
{
    size_t base = drv_mem_used();
    drv_http_config cfg = {.handler = app};
    drv_http_server *srv = NULL;
    CHECK(drv_http_server_start(&cfg, &srv) == DRV_OK);
    if (!srv)
        return;
    test_server_keep_alive(srv);
    test_server_pipelining(srv);
    test_server_continue(srv);
    test_server_errors(srv);
    test_server_http10(srv);
    test_server_stream(srv);
    test_server_pre_and_tls(srv);
    test_server_tcp(srv);

    drv_http_stats st;
    drv_http_server_stats(srv, &st);
    CHECK(st.connections_total >= 10);
    CHECK(st.requests_total >= 80);
    CHECK(st.bad_requests >= 5);
    CHECK(st.responses_by_class[1] >= 1 && st.responses_by_class[2] >= 80);
    CHECK(st.responses_by_class[4] >= 5 && st.responses_by_class[5] >= 2);

    /* Stop with a connection half-way through a request. */
    open_conn(srv, &cl, false, "GET /hello HTTP/1.1\r\n");
    drv_http_server_stop(srv);
    CHECK(client_eof(&cl));
    close_conn(&cl);
    CHECK(drv_mem_used() == base);

    CHECK(drv_http_server_start(&(drv_http_config){0}, &srv) == DRV_INVAL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    drv_log_set_level(DRV_LOG_ERROR);
    test_simple_get();
    test_query();
    test_pipelined();
    test_bodies();
    test_partial();
    test_errors();
    test_limits();
    test_keep_alive();
    test_reason_and_headers();
    test_server();
    test_server_timeouts();
    test_server_max_connections();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
