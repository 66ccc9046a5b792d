/*
 * cli_http.c — the blocking HTTP/1.1 client of the administrator
 * subcommands; see cli_http.h.
 *
 * The TCP connection comes from src/platform (drv_connect_tcp_blocking),
 * and plain reads and writes go through drv_read / drv_write.  Over HTTPS
 * OpenSSL drives the socket itself (SSL_set_fd, a socket BIO) as the bench
 * client does: this is a one-shot blocking tool, not server I/O, and the
 * socket BIO is the simplest correct way to run a blocking TLS client.
 *
 * The answer is parsed from scratch after every read until it is complete
 * (cli_http_parse_response): answers are small and reads are 64 KiB, so the
 * repeated scan costs nothing measurable and keeps the parser a pure
 * function the unit test drives byte by byte.
 */
#include "server/cli_http.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "platform/net.h"

#define DEFAULT_TIMEOUT_MS 30000
#define DEFAULT_MAX_RESPONSE (64u * 1024 * 1024)
#define MAX_HEAD (64u * 1024) /* status line and headers of one answer */

/* Put a sentence for the user into why (which may be NULL). */
static void say(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *why, size_t cap, const char *fmt, ...)
{
    if (!why || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
}

/* -- URLs ------------------------------------------------------------------------------------ */

drv_err cli_url_parse(const char *url, cli_url *out)
{
    memset(out, 0, sizeof(*out));
    const char *p;
    if (!strncasecmp(url, "http://", 7)) {
        p = url + 7;
    } else if (!strncasecmp(url, "https://", 8)) {
        p = url + 8;
        out->tls = true;
    } else {
        return DRV_INVAL;
    }
    size_t alen = strcspn(p, "/?#");
    const char *rest = p + alen;
    if (alen == 0 || alen >= sizeof(out->authority) || memchr(p, '@', alen) || *rest == '?' ||
        *rest == '#' || strpbrk(rest, "?# \t\r\n"))
        return DRV_INVAL;
    const char *port = NULL;
    size_t hlen;
    if (p[0] == '[') {
        const char *end = memchr(p, ']', alen);
        if (!end || end == p + 1)
            return DRV_INVAL;
        hlen = (size_t)(end - p - 1);
        memcpy(out->host, p + 1, hlen);
        if (end + 1 < p + alen) {
            if (end[1] != ':')
                return DRV_INVAL;
            port = end + 2;
        }
    } else {
        const char *colon = memchr(p, ':', alen);
        hlen = colon ? (size_t)(colon - p) : alen;
        if (hlen == 0 || hlen >= sizeof(out->host))
            return DRV_INVAL;
        memcpy(out->host, p, hlen);
        if (colon)
            port = colon + 1;
    }
    out->host[hlen] = '\0';
    if (port) {
        size_t plen = (size_t)(p + alen - port);
        long v = 0;
        if (plen == 0 || plen > 5)
            return DRV_INVAL;
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9')
                return DRV_INVAL;
            v = v * 10 + (port[i] - '0');
        }
        if (v < 1 || v > 65535)
            return DRV_INVAL;
        snprintf(out->port, sizeof(out->port), "%ld", v);
    } else {
        snprintf(out->port, sizeof(out->port), "%s", out->tls ? "443" : "80");
    }
    memcpy(out->authority, p, alen);
    out->authority[alen] = '\0';
    size_t rlen = strlen(rest);
    while (rlen > 0 && rest[rlen - 1] == '/')
        rlen--;
    if (rlen >= sizeof(out->prefix))
        return DRV_INVAL;
    memcpy(out->prefix, rest, rlen);
    out->prefix[rlen] = '\0';
    return DRV_OK;
}

/* -- parsing answers --------------------------------------------------------------------------- */

/* Where the line starting at i ends ('\n' included); 0 when there is no '\n' yet. */
static size_t line_end(const char *p, size_t n, size_t i)
{
    const char *nl = memchr(p + i, '\n', n - i);
    return nl ? (size_t)(nl - p) + 1 : 0;
}

/* The line [i, end) without its CR LF or LF. */
static size_t line_len(const char *p, size_t i, size_t end)
{
    size_t len = end - i - 1;
    if (len > 0 && p[i + len - 1] == '\r')
        len--;
    return len;
}

/*
 * Walk a chunked body in p[0, n): *total gets the decoded length and, when
 * dst is given, the data is copied there.  DRV_AGAIN when incomplete.
 */
static drv_err walk_chunks(const char *p, size_t n, char *dst, size_t max, size_t *total)
{
    size_t i = 0, tot = 0;
    for (;;) {
        size_t end = line_end(p, n, i);
        if (!end)
            return n - i > 1024 ? DRV_PROTOCOL : DRV_AGAIN;
        size_t len = line_len(p, i, end), size = 0, k = 0;
        for (; k < len; k++) {
            char ch = p[i + k];
            int d = ch >= '0' && ch <= '9'   ? ch - '0'
                    : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                    : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                             : -1;
            if (d < 0)
                break;
            if (size > (SIZE_MAX >> 4))
                return DRV_PROTOCOL;
            size = size * 16 + (size_t)d;
        }
        if (k == 0 || (k < len && p[i + k] != ';' && p[i + k] != ' ' && p[i + k] != '\t'))
            return DRV_PROTOCOL;
        i = end;
        if (size == 0) {
            /* Trailer fields, ignored, up to an empty line. */
            for (;;) {
                end = line_end(p, n, i);
                if (!end)
                    return n - i > MAX_HEAD ? DRV_PROTOCOL : DRV_AGAIN;
                bool empty = line_len(p, i, end) == 0;
                i = end;
                if (empty) {
                    *total = tot;
                    return DRV_OK;
                }
            }
        }
        if (size > max || tot > max - size)
            return DRV_TOOBIG;
        if (n - i < size + 1)
            return DRV_AGAIN;
        if (dst)
            memcpy(dst + tot, p + i, size);
        tot += size;
        i += size;
        if (p[i] == '\r') {
            if (n - i < 2)
                return DRV_AGAIN;
            i++;
        }
        if (p[i] != '\n')
            return DRV_PROTOCOL;
        i++;
    }
}

static bool header_is(const char *p, size_t nlen, const char *name)
{
    return nlen == strlen(name) && strncasecmp(p, name, nlen) == 0;
}

/* The header's value, trimmed, as [*v, *v + *vlen). */
static void header_value(const char *p, size_t len, size_t colon, const char **v, size_t *vlen)
{
    size_t a = colon + 1, b = len;
    while (a < b && (p[a] == ' ' || p[a] == '\t'))
        a++;
    while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
        b--;
    *v = p + a;
    *vlen = b - a;
}

/* Whether the last transfer coding in a Transfer-Encoding value is "chunked". */
static bool last_coding_chunked(const char *v, size_t n)
{
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == ','))
        n--;
    size_t s = n;
    while (s > 0 && v[s - 1] != ',' && v[s - 1] != ' ' && v[s - 1] != '\t')
        s--;
    return n - s == 7 && strncasecmp(v + s, "chunked", 7) == 0;
}

drv_err cli_http_parse_response(const char *p, size_t n, bool eof, bool head, size_t max_body,
                                cli_http_resp *out)
{
    memset(out, 0, sizeof(*out));
    out->retry_after = -1;
    if (n == 0)
        return eof ? DRV_CLOSED : DRV_AGAIN;
    size_t i = 0;
    int status;
    bool chunked, has_cl;
    size_t cl;
    for (;;) {
        /* One answer head: the status line, then header lines up to an empty one. */
        size_t end = line_end(p, n, i);
        if (!end)
            goto incomplete_head;
        size_t len = line_len(p, i, end);
        const char *s = p + i;
        if (len < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[7] < '0' || s[7] > '9' || s[8] != ' ' ||
            s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9' ||
            (len > 12 && s[12] != ' '))
            return DRV_PROTOCOL;
        status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
        i = end;
        chunked = has_cl = false;
        cl = 0;
        out->content_type[0] = '\0';
        out->retry_after = -1;
        for (;;) {
            end = line_end(p, n, i);
            if (!end)
                goto incomplete_head;
            len = line_len(p, i, end);
            const char *h = p + i;
            i = end;
            if (len == 0)
                break;
            const char *colon = memchr(h, ':', len);
            if (!colon || colon == h)
                return DRV_PROTOCOL;
            size_t nlen = (size_t)(colon - h);
            const char *v;
            size_t vlen;
            header_value(h, len, nlen, &v, &vlen);
            if (header_is(h, nlen, "content-length")) {
                size_t x = 0;
                if (vlen == 0 || vlen > 15)
                    return DRV_PROTOCOL;
                for (size_t k = 0; k < vlen; k++) {
                    if (v[k] < '0' || v[k] > '9')
                        return DRV_PROTOCOL;
                    x = x * 10 + (size_t)(v[k] - '0');
                }
                if (has_cl && x != cl) /* two different lengths: no way to know which is true */
                    return DRV_PROTOCOL;
                has_cl = true;
                cl = x;
            } else if (header_is(h, nlen, "transfer-encoding")) {
                chunked = last_coding_chunked(v, vlen);
                if (!chunked)
                    has_cl = false; /* another coding: the body runs to the end of the connection */
            } else if (header_is(h, nlen, "content-type")) {
                size_t k = vlen < sizeof(out->content_type) ? vlen : sizeof(out->content_type) - 1;
                memcpy(out->content_type, v, k);
                out->content_type[k] = '\0';
            } else if (header_is(h, nlen, "retry-after")) {
                int x = 0;
                size_t k = 0;
                for (; k < vlen && k < 6 && v[k] >= '0' && v[k] <= '9'; k++)
                    x = x * 10 + (v[k] - '0');
                out->retry_after = k > 0 && k == vlen ? x : -1;
            }
        }
        if (status >= 200 || status == 101)
            break;
        /* An interim answer (100 Continue, 103 Early Hints): the real one follows. */
    }
    out->status = status;

    const char *b = p + i;
    size_t avail = n - i, body_len;
    if (head || status == 204 || status == 304 || status < 200) {
        body_len = 0;
    } else if (chunked) {
        drv_err e = walk_chunks(b, avail, NULL, max_body, &body_len);
        if (e == DRV_AGAIN && eof)
            return DRV_CLOSED;
        if (e)
            return e;
    } else if (has_cl) {
        if (cl > max_body)
            return DRV_TOOBIG;
        if (avail < cl)
            return eof ? DRV_CLOSED : DRV_AGAIN;
        body_len = cl;
    } else {
        if (avail > max_body)
            return DRV_TOOBIG;
        if (!eof)
            return DRV_AGAIN;
        body_len = avail;
    }
    out->body = drv_malloc(body_len + 1);
    if (!out->body)
        return DRV_NOMEM;
    if (chunked && body_len > 0)
        walk_chunks(b, avail, out->body, max_body, &body_len);
    else if (body_len > 0)
        memcpy(out->body, b, body_len);
    out->body[body_len] = '\0';
    out->body_len = body_len;
    return DRV_OK;

incomplete_head:
    if (n - i > MAX_HEAD)
        return DRV_PROTOCOL;
    return eof ? DRV_CLOSED : DRV_AGAIN;
}

bool cli_http_is_json(const cli_http_resp *r)
{
    const char *ct = r->content_type;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return (n == 16 && !strncasecmp(ct, "application/json", 16)) ||
           (n >= 5 && !strncasecmp(ct + n - 5, "+json", 5));
}

void cli_http_resp_free(cli_http_resp *r)
{
    drv_free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

/* -- connections ------------------------------------------------------------------------------ */

typedef struct conn {
    int fd;   /* the blocking socket */
    SSL *ssl; /* over it, for https; NULL for http */
} conn;

static bool is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

static drv_err tls_ctx(cli_http *c, char *why, size_t cap)
{
    if (c->ssl_ctx)
        return DRV_OK;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        say(why, cap, "cannot set up TLS");
        return DRV_NOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* A server that closes without close_notify after a complete answer is not an attack
     * on us: the framing (Content-Length, chunked) already says whether all of it came. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = c->cacert ? SSL_CTX_load_verify_locations(ctx, c->cacert, NULL)
                       : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        ERR_clear_error();
        SSL_CTX_free(ctx);
        say(why, cap, "cannot load the CA certificates%s%s", c->cacert ? " from " : "",
            c->cacert ? c->cacert : "");
        return DRV_CONFIG;
    }
    c->ssl_ctx = ctx;
    return DRV_OK;
}

static drv_err conn_open(cli_http *c, conn *k, char *why, size_t cap)
{
    k->fd = -1;
    k->ssl = NULL;
    char reason[160];
    drv_err e = drv_connect_tcp_blocking(c->url.host, c->url.port, c->timeout_ms, &k->fd, reason,
                                         sizeof(reason));
    if (e) {
        if (why && cap)
            snprintf(why, cap, "cannot connect to %s: %s", c->url.authority, reason);
        return e;
    }
    if (!c->url.tls)
        return DRV_OK;
    e = tls_ctx(c, why, cap);
    if (e)
        goto fail;
    SSL *ssl = SSL_new(c->ssl_ctx);
    k->ssl = ssl;
    bool ok = ssl && SSL_set_fd(ssl, k->fd) == 1;
    if (ok && is_ip(c->url.host))
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->url.host) == 1;
    else if (ok)
        ok = SSL_set_tlsext_host_name(ssl, c->url.host) == 1 && SSL_set1_host(ssl, c->url.host);
    if (!ok) {
        say(why, cap, "cannot set up TLS");
        e = DRV_NOMEM;
        goto fail;
    }
    ERR_clear_error();
    if (SSL_connect(ssl) != 1) {
        long vr = SSL_get_verify_result(ssl);
        if (vr != X509_V_OK)
            say(why, cap, "the server's certificate is not trusted: %s%s",
                X509_verify_cert_error_string(vr),
                c->cacert ? "" : " (give the server's CA with --cacert)");
        else
            say(why, cap, "TLS handshake with %s failed (is it an https listener?)",
                c->url.authority);
        ERR_clear_error();
        e = DRV_DENIED;
        goto fail;
    }
    return DRV_OK;
fail:
    SSL_free(k->ssl);
    k->ssl = NULL;
    drv_close(k->fd);
    k->fd = -1;
    return e;
}

static void conn_close(conn *k)
{
    if (k->ssl) {
        SSL_shutdown(k->ssl); /* best effort close_notify; the answer is already complete */
        SSL_free(k->ssl);
        ERR_clear_error();
    }
    drv_close(k->fd);
}

static drv_err conn_write_all(conn *k, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        size_t w = 0;
        drv_err e;
        if (k->ssl) {
            ERR_clear_error();
            e = SSL_write_ex(k->ssl, s, n, &w) == 1 ? DRV_OK : DRV_IO;
        } else {
            e = drv_write(k->fd, s, n, &w);
        }
        if (e)
            return e;
        s += w;
        n -= w;
    }
    return DRV_OK;
}

/* Up to cap bytes into buf: DRV_OK with *n > 0, DRV_CLOSED at the end, DRV_AGAIN on a
 * timeout (plain TCP), DRV_IO otherwise. */
static drv_err conn_read(conn *k, void *buf, size_t cap, size_t *n)
{
    if (!k->ssl)
        return drv_read(k->fd, buf, cap, n);
    ERR_clear_error();
    if (SSL_read_ex(k->ssl, buf, cap, n) == 1)
        return DRV_OK;
    *n = 0;
    return SSL_get_error(k->ssl, 0) == SSL_ERROR_ZERO_RETURN ? DRV_CLOSED : DRV_IO;
}

/* -- requests --------------------------------------------------------------------------------- */

drv_err cli_http_request(cli_http *c, const char *method, const char *target, const char *ctype,
                         const void *body, size_t body_len, cli_http_resp *out, char *why,
                         size_t why_cap)
{
    memset(out, 0, sizeof(*out));
    if (!c->timeout_ms)
        c->timeout_ms = DEFAULT_TIMEOUT_MS;
    size_t max = c->max_response ? c->max_response : DEFAULT_MAX_RESPONSE;
    /* A token with CR or LF would smuggle header lines into the request. */
    if (c->token && strpbrk(c->token, "\r\n")) {
        say(why, why_cap, "the token contains a line break");
        return DRV_INVAL;
    }
    drv_buf req, in;
    drv_buf_init(&req, 64 * 1024 + body_len);
    /* The raw answer: the body plus generous room for heads and chunk framing. */
    drv_buf_init(&in, max + max / 4 + 2 * MAX_HEAD);
    char length[32];
    snprintf(length, sizeof(length), "%zu", body_len);
    bool auth = c->token && c->token[0], has_body = body || ctype;
    const char *parts[] = {
        method,
        " ",
        c->url.prefix,
        target,
        " HTTP/1.1\r\nHost: ",
        c->url.authority,
        "\r\nUser-Agent: drover/" DROVER_VERSION
        "\r\nAccept: application/json, application/problem+json\r\nConnection: close\r\n",
        auth ? "Authorization: Bearer " : "",
        auth ? c->token : "",
        auth ? "\r\n" : "",
        has_body ? "Content-Type: " : "",
        has_body ? (ctype ? ctype : "application/json") : "",
        has_body ? "\r\nContent-Length: " : "",
        has_body ? length : "",
        has_body ? "\r\n" : "",
        "\r\n"};
    drv_err e = DRV_OK;
    for (size_t i = 0; !e && i < sizeof(parts) / sizeof(parts[0]); i++)
        e = drv_buf_append(&req, parts[i], strlen(parts[i]));
    if (!e && body_len)
        e = drv_buf_append(&req, body, body_len);
    if (e) {
        say(why, why_cap, "the request is too large (%s)", drv_strerror(e));
        goto out_bufs;
    }

    conn k;
    e = conn_open(c, &k, why, why_cap);
    if (e)
        goto out_bufs;
    /* A server may answer early and close (413 for a body over its limit): when sending
     * fails, still read what it said before giving up. */
    drv_err we = conn_write_all(&k, req.data, req.len);
    bool head = !strcmp(method, "HEAD");
    char chunk[64 * 1024];
    for (;;) {
        size_t n = 0;
        drv_err r = conn_read(&k, chunk, sizeof(chunk), &n);
        if (r == DRV_OK)
            r = drv_buf_append(&in, chunk, n);
        if (r != DRV_OK && r != DRV_CLOSED) {
            if (we)
                say(why, why_cap, "cannot send the request to %s: %s", c->url.authority,
                    we == DRV_AGAIN ? "timed out" : "the connection broke");
            else if (r == DRV_TOOBIG)
                say(why, why_cap, "the answer of %s is too large", c->url.authority);
            else
                say(why, why_cap, "no complete answer from %s: %s", c->url.authority,
                    r == DRV_AGAIN ? "timed out" : "the connection broke");
            e = r;
            goto out_conn;
        }
        e = cli_http_parse_response((const char *)in.data, in.len, r == DRV_CLOSED, head, max, out);
        if (e != DRV_AGAIN)
            break;
        if (r == DRV_CLOSED) { /* the parser said AGAIN at the end: cannot happen, but stop */
            e = DRV_CLOSED;
            break;
        }
    }
    if (e && we)
        say(why, why_cap, "cannot send the request to %s: %s", c->url.authority,
            we == DRV_AGAIN ? "timed out" : "the connection broke");
    else if (e == DRV_CLOSED && in.len == 0)
        say(why, why_cap, "%s closed the connection without answering%s", c->url.authority,
            c->url.tls ? "" : " (if it is an https listener, use https://)");
    else if (e == DRV_CLOSED)
        say(why, why_cap, "%s closed the connection before the whole answer came",
            c->url.authority);
    else if (e == DRV_TOOBIG)
        say(why, why_cap, "the answer of %s is too large", c->url.authority);
    else if (e)
        say(why, why_cap, "%s did not answer in HTTP/1.1%s", c->url.authority,
            c->url.tls ? "" : " (is it the server's HTTP port?)");
out_conn:
    conn_close(&k);
out_bufs:
    drv_buf_free(&req);
    drv_buf_free(&in);
    if (e)
        cli_http_resp_free(out);
    return e;
}

void cli_http_close(cli_http *c)
{
    SSL_CTX_free(c->ssl_ctx);
    c->ssl_ctx = NULL;
}
