/*
 * bench_tls.c — the TLS client side of `drover bench` (--tls), on OpenSSL 3.
 *
 * One SSL_CTX per run, shared read-only by the client threads (creating an
 * SSL from it is thread-safe).  Every connection gets a new SSL: sessions
 * are never cached or offered (SSL_OP_NO_TICKET, SSL_SESS_CACHE_OFF), so
 * every connect is a full handshake.  The server is verified against
 * --cafile and its certificate must name --servername (a DNS name, or an IP
 * address checked against the certificate's IP SANs).
 *
 * The sockets are non-blocking and belong to the calling thread's epoll
 * loop: every call here returns at once, DRV_AGAIN plus the socket event
 * OpenSSL needs (WANT_READ / WANT_WRITE) when it cannot progress.  OpenSSL
 * reads and writes the socket itself (socket BIO) — this is a load
 * generator; the server side (src/net/tls.c) routes I/O through
 * src/platform instead.
 */
#include "bench/bench_int.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

#include "platform/loop.h"

static bool is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

drv_err bench_tls_ctx_new(const char *cafile, void **out)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return DRV_NOMEM;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1) {
        fprintf(stderr, "drover bench: cannot load CA file %s\n", cafile);
        ERR_print_errors_fp(stderr);
        SSL_CTX_free(ctx);
        return DRV_INVAL;
    }
    *out = ctx;
    return DRV_OK;
}

void bench_tls_ctx_free(void *ctx)
{
    SSL_CTX_free(ctx);
}

drv_err bench_tls_new(void *ctx, const char *servername, int fd, bench_tls **out)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return DRV_NOMEM;
    bool ok = SSL_set_fd(ssl, fd) == 1;
    if (ok && is_ip(servername)) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), servername) == 1;
    } else if (ok) {
        ok = SSL_set_tlsext_host_name(ssl, servername) == 1 && SSL_set1_host(ssl, servername) == 1;
    }
    if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return DRV_NOMEM;
    }
    SSL_set_connect_state(ssl);
    *out = (bench_tls *)ssl;
    return DRV_OK;
}

void bench_tls_free(bench_tls *tls)
{
    SSL_free((SSL *)tls);
}

/* Map the outcome of an SSL call that returned ret. */
static drv_err outcome(SSL *ssl, int ret, uint32_t *want)
{
    switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_WANT_READ:
        *want = DRV_EV_READ;
        return DRV_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        *want = DRV_EV_WRITE;
        return DRV_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return DRV_CLOSED;
    default:
        return DRV_IO;
    }
}

drv_err bench_tls_handshake(bench_tls *tls, uint32_t *want)
{
    SSL *ssl = (SSL *)tls;
    ERR_clear_error();
    int r = SSL_do_handshake(ssl);
    return r == 1 ? DRV_OK : outcome(ssl, r, want);
}

drv_err bench_tls_read(bench_tls *tls, void *buf, size_t len, size_t *n, uint32_t *want)
{
    SSL *ssl = (SSL *)tls;
    ERR_clear_error();
    int r = SSL_read_ex(ssl, buf, len, n);
    return r == 1 ? DRV_OK : outcome(ssl, r, want);
}

drv_err bench_tls_write(bench_tls *tls, const void *buf, size_t len, size_t *n, uint32_t *want)
{
    SSL *ssl = (SSL *)tls;
    ERR_clear_error();
    int r = SSL_write_ex(ssl, buf, len, n);
    return r == 1 ? DRV_OK : outcome(ssl, r, want);
}

bool bench_tls_pending(bench_tls *tls)
{
    return SSL_has_pending((SSL *)tls) == 1;
}

void bench_tls_describe(bench_tls *tls, char *buf, size_t len)
{
    SSL *ssl = (SSL *)tls;
    int nid = SSL_get_negotiated_group(ssl);
    const char *group = nid ? OBJ_nid2sn(nid) : NULL;
    snprintf(buf, len, "%s %s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl),
             group ? group : "?");
}

void bench_tls_why(bench_tls *tls, char *buf, size_t len)
{
    SSL *ssl = (SSL *)tls;
    long v = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_last_error();
    if (v != X509_V_OK)
        snprintf(buf, len, "certificate verification failed: %s", X509_verify_cert_error_string(v));
    else if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "handshake failed (connection closed?)");
}
