/*
 * cli_http.h — the small blocking HTTP/1.1 client under the administrator
 * subcommands (`drover tenant|device|token ...`, src/server/cli.c).
 *
 * One request per connection ("Connection: close"): the tool makes a
 * handful of calls and exits, so keep-alive would buy nothing.  Plain TCP
 * or HTTPS (OpenSSL; the server is verified against a CA file or the
 * system store, and must name the URL's host).  Answers framed by
 * Content-Length, chunked transfer coding or the end of the connection are
 * all read; the body is capped (max_response) so a wrong URL pointing at a
 * stream cannot fill the memory.
 *
 * Not here: redirects, proxies, compression, client certificates, HTTP/2.
 */
#ifndef DRV_SERVER_CLI_HTTP_H
#define DRV_SERVER_CLI_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

/* A base URL: http[s]://host[:port][/prefix]. */
typedef struct cli_url {
    bool tls;            /* https */
    char host[256];      /* name or address, IPv6 without brackets */
    char port[8];        /* decimal; 80 / 443 when the URL has none */
    char authority[300]; /* host[:port] as the Host header carries it */
    char prefix[512];    /* path before /api/v1 (a reverse proxy's), no trailing '/'; often "" */
} cli_url;

/*
 * Parse "http://127.0.0.1:8080", "https://drover.example/base/",
 * "http://[::1]:8080".  DRV_INVAL for another scheme, user info, an empty
 * host, a bad port, a query or fragment, or parts longer than cli_url holds.
 */
drv_err cli_url_parse(const char *url, cli_url *out);

/* One server to talk to.  Fill the first fields, zero the rest; call
 * cli_http_close when done. */
typedef struct cli_http {
    cli_url url;
    const char *token;   /* bearer token (not copied); NULL or "": none */
    const char *cacert;  /* PEM CA file for https (not copied); NULL: the system store */
    int timeout_ms;      /* connect, and each read or write; 0: 30 s */
    size_t max_response; /* largest decoded body accepted; 0: 64 MiB */
    void *ssl_ctx;       /* SSL_CTX, made by the first https request */
} cli_http;

/* An answer.  body is NUL-terminated (body[body_len] == '\0') and the
 * caller's: cli_http_resp_free. */
typedef struct cli_http_resp {
    int status;             /* 100-599 */
    char content_type[128]; /* as sent, "" when absent (longer values truncated) */
    int retry_after;        /* Retry-After in seconds, -1 when absent or a date */
    char *body;             /* drv_malloc'd, never NULL after a DRV_OK answer */
    size_t body_len;
} cli_http_resp;

/*
 * Send `method` to url.prefix + target (target: "/api/v1/...?query",
 * already percent-encoded) with an optional body of content type ctype and
 * wait for the whole answer.  Any HTTP status is DRV_OK (the caller reads
 * resp->status).  On failure *out holds nothing to free and why (may be
 * NULL) gets a sentence for the user: "cannot connect to 127.0.0.1:8080:
 * Connection refused", "the server's certificate is not trusted: ...".
 */
drv_err cli_http_request(cli_http *c, const char *method, const char *target, const char *ctype,
                         const void *body, size_t body_len, cli_http_resp *out, char *why,
                         size_t why_cap);

/* True when the answer is JSON (application/json or any +json type). */
bool cli_http_is_json(const cli_http_resp *r);

void cli_http_resp_free(cli_http_resp *r);

/* Free the TLS context, if one was made. */
void cli_http_close(cli_http *c);

/*
 * Parse the answer in p[0, n) — the whole input so far.  eof: the server
 * has closed the connection; head: the request was HEAD (no body follows).
 * DRV_AGAIN: more bytes are needed; DRV_PROTOCOL: not an HTTP/1.x answer
 * or a broken framing; DRV_CLOSED: the connection ended inside the
 * answer; DRV_TOOBIG: the body is over max_body.  Interim 1xx answers are
 * skipped.  On DRV_OK *out is filled as by cli_http_request.  Exposed for
 * the unit test (src/server/cli_test.c).
 */
drv_err cli_http_parse_response(const char *p, size_t n, bool eof, bool head, size_t max_body,
                                cli_http_resp *out);

#endif
