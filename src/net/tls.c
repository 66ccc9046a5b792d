/*
 * tls.c — the TLS transport on OpenSSL 3.0; see tls.h and ADR-0006.
 *
 * What it is: the shared server context (policy, certificates, mTLS,
 * resumption), the development CA, and one drv_stream per connection whose
 * read and write drive OpenSSL's non-blocking state machine.  What it is
 * not: a TLS client, or an owner of sockets (a custom BIO moves the bytes
 * through drv_read/drv_write, so errno stays in src/platform and writes
 * use MSG_NOSIGNAL).
 *
 * A stream's life (every arrow is inside a read or write call):
 *
 *   HANDSHAKE ──SSL finished──▶ OPEN ──close_notify / EOF──▶ read: DRV_CLOSED
 *       │                        │
 *       └──bad peer / I/O error──┴──▶ FAILED (sticky: every call returns `fatal`)
 *
 *   shutdown (from drv_stream_free) sends close_notify only from OPEN.
 *
 * Invariants: OpenSSL's per-thread error queue is empty when a call here
 * returns (it is cleared before each SSL call and after every failure), so
 * one connection's errors never show up in another's SSL_get_error.  The
 * context is read-only after drv_tls_ctx_new, so loop threads share it.
 */
#include "net/tls.h"

#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "platform/clock.h"
#include "platform/fs.h"
#include "platform/loop.h"
#include "platform/net.h"

/* Mozilla "intermediate" (v5.7) TLS 1.2 suites, without the DHE ones. */
#define TLS12_CIPHERS                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define TLS13_SUITES "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define TLS_GROUPS "X25519:P-256:P-384"

enum {
    SESSION_CACHE_SIZE = 4096, /* TLS 1.2 sessions kept server-side (~1 KiB each) */
    SESSION_TIMEOUT_S = 86400, /* session and ticket lifetime (Mozilla: 1 day) */
    VERIFY_DEPTH = 5,          /* client chains: leaf + up to 4 CAs */
    PEM_FILE_CAP = 1 << 20,    /* largest development PEM file we read */
    DEV_CA_DAYS = 3650,        /* development CA validity */
    DEV_SERVER_DAYS = 365,     /* development server certificate validity */
    DEV_RENEW_S = 7 * 86400,   /* renew the server certificate this long before expiry */
    TICKET_NAME_LEN = 16,      /* OpenSSL's ticket key name size */
    TICKET_KEY_LEN = 32,       /* AES-256 and HMAC-SHA256 key sizes */
};

struct drv_tls_ctx {
    SSL_CTX *ssl;                         /* the shared OpenSSL context */
    BIO_METHOD *bio_method;               /* our BIO over drv_read/drv_write */
    char *dev_ca_path;                    /* development CA certificate path, or NULL */
    uint8_t ticket_name[TICKET_NAME_LEN]; /* names this process's ticket key */
    uint8_t ticket_aes[TICKET_KEY_LEN];   /* AES-256-CBC key of TLS 1.3 tickets */
    uint8_t ticket_hmac[TICKET_KEY_LEN];  /* HMAC-SHA256 key of TLS 1.3 tickets */
    bool accept_unverified;               /* hand unverified client chains on (ADR-0011) */
};

typedef struct tls_stream {
    drv_stream base;    /* must be first: the broker holds a drv_stream * */
    SSL *ssl;           /* the connection's OpenSSL state (owns the BIO) */
    const char *error;  /* static reason of the failure, NULL while healthy */
    drv_err fatal;      /* DRV_OK, or the error every call returns after a failure */
    drv_err io_err;     /* result of the BIO's last drv_read/drv_write */
    bool want_write;    /* OpenSSL's last "would block" was SSL_ERROR_WANT_WRITE */
    bool established;   /* the handshake finished */
    bool shutdown_done; /* shutdown ran (it runs once) */
    /* Its context's accept_unverified. */
    bool accept_unverified;
} tls_stream;

/* ---- allocator hook -------------------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static bool mem_hooked;

static void *ossl_malloc(size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    return drv_malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
    (void)file;
    (void)line;
    if (n == 0) { /* CRYPTO_realloc(p, 0) frees, and callers expect NULL */
        drv_free(p);
        return NULL;
    }
    return drv_realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    drv_free(p);
}

static void init_openssl(void)
{
    /* Refused (0) once OpenSSL has allocated anything: it then keeps malloc. */
    mem_hooked = CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free) == 1;
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
}

void drv_tls_init(void)
{
    pthread_once(&init_once, init_openssl);
}

bool drv_tls_mem_accounted(void)
{
    drv_tls_init();
    return mem_hooked;
}

/* ---- errors ------------------------------------------------------------ */

/* Log the newest OpenSSL error with msg and what, then empty the queue. */
static void log_ssl_error(drv_log_level level, const char *msg, const char *what)
{
    char detail[256] = "unknown error";
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, detail, sizeof(detail));
    drv_log(level, msg, "file", what ? what : "", "error", detail, (const char *)0);
    ERR_clear_error();
}

/* ---- BIO over src/platform -------------------------------------------- */

static int bio_write(BIO *b, const char *buf, size_t len, size_t *written)
{
    tls_stream *ts = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ts->io_err = drv_write(ts->base.fd, buf, len, written);
    if (ts->io_err == DRV_OK && *written > 0)
        return 1;
    if (ts->io_err == DRV_OK || ts->io_err == DRV_AGAIN) {
        ts->io_err = DRV_AGAIN;
        BIO_set_retry_write(b);
    }
    return 0;
}

static int bio_read(BIO *b, char *buf, size_t len, size_t *got)
{
    tls_stream *ts = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ts->io_err = drv_read(ts->base.fd, buf, len, got);
    if (ts->io_err == DRV_OK)
        return 1;
    if (ts->io_err == DRV_AGAIN)
        BIO_set_retry_read(b);
    return 0;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    tls_stream *ts = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH: /* every write goes straight to the socket */
        return 1;
    case BIO_CTRL_EOF: /* lets SSL tell a TCP close from an I/O error */
        return ts && ts->io_err == DRV_CLOSED;
    default:
        return 0;
    }
}

static BIO_METHOD *make_bio_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "drover");
    if (!m)
        return NULL;
    if (!BIO_meth_set_write_ex(m, bio_write) || !BIO_meth_set_read_ex(m, bio_read) ||
        !BIO_meth_set_ctrl(m, bio_ctrl)) {
        BIO_meth_free(m);
        return NULL;
    }
    return m;
}

/* ---- session tickets ---------------------------------------------------- */

/*
 * Ticket keys: random per process (a restart invalidates every ticket).
 * TLS 1.2 gets no ticket, as Mozilla advises: its tickets would outlive
 * forward secrecy for as long as the process runs, so 1.2 resumes from the
 * server-side session cache instead.  client_hello_cb already turns 1.2
 * tickets off; declining here (an empty ticket, RFC 5077 §3.3) is a second
 * guard.
 */
static int ticket_cb(SSL *s, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
                     EVP_MAC_CTX *hctx, int enc)
{
    const drv_tls_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(s));
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)ctx->ticket_hmac,
                                          TICKET_KEY_LEN),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (enc) {
        if (SSL_version(s) < TLS1_3_VERSION)
            return 0;
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(name, ctx->ticket_name, TICKET_NAME_LEN);
        if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, ctx->ticket_aes, iv) != 1 ||
            EVP_MAC_CTX_set_params(hctx, params) != 1)
            return -1;
        return 1;
    }
    if (memcmp(name, ctx->ticket_name, TICKET_NAME_LEN) != 0)
        return 0; /* not ours (another process's): full handshake */
    if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, ctx->ticket_aes, iv) != 1 ||
        EVP_MAC_CTX_set_params(hctx, params) != 1)
        return -1;
    return 1;
}

/* ---- development certificate ----------------------------------------- */

/* Copy the machine's host name into out if it is a plain DNS name; else "". */
static void dns_hostname(char *out, size_t size)
{
    out[0] = '\0';
    if (gethostname(out, size) != 0) {
        out[0] = '\0';
        return;
    }
    out[size - 1] = '\0';
    for (const char *p = out; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.')) {
            out[0] = '\0';
            return;
        }
    }
    if (strcmp(out, "localhost") == 0)
        out[0] = '\0';
}

/* Add one X.509v3 extension written in openssl.cnf syntax. */
static bool add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
    if (!ext)
        return false;
    bool ok = X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

/*
 * A certificate for key named cn, valid for `days` from 5 minutes ago,
 * signed by issuer/issuer_key (NULL: self-signed).  ca chooses CA or server
 * extensions; san is the subjectAltName of a server certificate.
 */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, long days,
                       bool ca, const char *san)
{
    X509 *x = X509_new();
    BIGNUM *serial = BN_new();
    if (!x || !serial)
        goto out_fail;
    if (!BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
        !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)))
        goto out_fail;
    X509_NAME *name = X509_get_subject_name(x);
    if (!X509_set_version(x, X509_VERSION_3) ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
                                    (const unsigned char *)"Drover development", -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                    0) ||
        !X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -300) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL) || !X509_set_pubkey(x, key))
        goto out_fail;
    if (!issuer) {
        issuer = x;
        issuer_key = key;
    }
    bool ok;
    if (ca)
        ok = add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
             add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign") &&
             add_ext(x, issuer, NID_subject_key_identifier, "hash") &&
             add_ext(x, issuer, NID_authority_key_identifier, "keyid:always");
    else
        ok = add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(x, issuer, NID_key_usage, "critical,digitalSignature") &&
             add_ext(x, issuer, NID_ext_key_usage, "serverAuth") &&
             add_ext(x, issuer, NID_subject_key_identifier, "hash") &&
             add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") &&
             add_ext(x, issuer, NID_subject_alt_name, san);
    if (!ok || X509_sign(x, issuer_key, EVP_sha256()) <= 0)
        goto out_fail;
    BN_free(serial);
    return x;
out_fail:
    BN_free(serial);
    X509_free(x);
    return NULL;
}

/* Read a PEM file: DRV_NOTFOUND if absent, DRV_CORRUPT if it holds no such object. */
static drv_err read_pem(const char *path, X509 **cert, EVP_PKEY **key)
{
    drv_buf b;
    drv_buf_init(&b, PEM_FILE_CAP);
    drv_err e = drv_file_read_all(path, &b);
    if (!e && drv_buf_avail(&b) == 0)
        e = DRV_CORRUPT;
    if (e)
        goto out_free_buf;
    BIO *mem = BIO_new_mem_buf(b.data + b.off, (int)drv_buf_avail(&b));
    if (!mem) {
        e = DRV_NOMEM;
        goto out_free_buf;
    }
    if (cert)
        *cert = PEM_read_bio_X509(mem, NULL, NULL, NULL);
    else
        *key = PEM_read_bio_PrivateKey(mem, NULL, NULL, NULL);
    e = (cert ? *cert != NULL : *key != NULL) ? DRV_OK : DRV_CORRUPT;
    BIO_free(mem);
out_free_buf:
    ERR_clear_error();
    drv_buf_free(&b);
    return e;
}

/* Write a certificate or key as PEM to path (0600), atomically. */
static drv_err write_pem(const char *path, X509 *cert, EVP_PKEY *key)
{
    char tmp[4096];
    char *data;
    drv_err e = DRV_NOMEM;
    int fd = -1;
    BIO *mem = BIO_new(BIO_s_mem());
    if (!mem)
        goto out;
    if (!(cert ? PEM_write_bio_X509(mem, cert)
               : PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL)))
        goto out_free_bio;
    long len = BIO_get_mem_data(mem, &data);
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        e = DRV_TOOBIG;
        goto out_free_bio;
    }
    e = drv_file_create(tmp, &fd);
    if (e)
        goto out_free_bio;
    e = drv_file_write_all(fd, data, (size_t)len);
    if (!e)
        e = drv_file_sync(fd);
    drv_file_close(fd);
    if (!e)
        e = drv_file_replace(tmp, path);
out_free_bio:
    BIO_free(mem);
out:
    ERR_clear_error();
    return e;
}

/* Whether x is valid now and still will be `margin_s` seconds from now. */
static bool cert_current(X509 *x, uint64_t margin_s)
{
    time_t now = (time_t)drv_wall_s();
    time_t later = now + (time_t)margin_s;
    return X509_cmp_time(X509_get0_notBefore(x), &now) < 0 &&
           X509_cmp_time(X509_get0_notAfter(x), &later) > 0;
}

/* "2027-11-28 19:00:00Z" from an ASN1_TIME, for logs. */
static void format_time(const ASN1_TIME *t, char *out, size_t size)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1 || strftime(out, size, "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
        snprintf(out, size, "?");
}

/* The four file paths of the development PKI under <data_dir>/tls. */
typedef struct dev_paths {
    char dir[4096];      /* <data_dir>/tls */
    char ca_cert[4096];  /* ca.pem: what clients trust */
    char ca_key[4096];   /* ca.key */
    char srv_cert[4096]; /* server.pem */
    char srv_key[4096];  /* server.key */
} dev_paths;

static bool dev_paths_init(dev_paths *p, const char *data_dir)
{
    return snprintf(p->dir, sizeof(p->dir), "%s/tls", data_dir) < (int)sizeof(p->dir) &&
           snprintf(p->ca_cert, sizeof(p->ca_cert), "%s/ca.pem", p->dir) <
               (int)sizeof(p->ca_cert) &&
           snprintf(p->ca_key, sizeof(p->ca_key), "%s/ca.key", p->dir) < (int)sizeof(p->ca_key) &&
           snprintf(p->srv_cert, sizeof(p->srv_cert), "%s/server.pem", p->dir) <
               (int)sizeof(p->srv_cert) &&
           snprintf(p->srv_key, sizeof(p->srv_key), "%s/server.key", p->dir) <
               (int)sizeof(p->srv_key);
}

/*
 * Load the development CA, or create it when it is missing, unreadable as
 * PEM, expired or not matching its key.  *created tells which happened.
 */
static drv_err dev_ca(const dev_paths *p, X509 **ca, EVP_PKEY **ca_key, bool *created)
{
    *ca = NULL;
    *ca_key = NULL;
    *created = false;
    drv_err e = read_pem(p->ca_cert, ca, NULL);
    bool had_cert = e != DRV_NOTFOUND;
    if (!e)
        e = read_pem(p->ca_key, NULL, ca_key);
    if (!e && X509_check_private_key(*ca, *ca_key) == 1 && cert_current(*ca, 0))
        return DRV_OK;
    ERR_clear_error();
    if (e && e != DRV_NOTFOUND && e != DRV_CORRUPT)
        goto out_fail;
    if (had_cert)
        drv_warn("tls: development CA unusable (corrupt, expired or not matching its key); "
                 "creating a new one, clients must be given the new ca.pem",
                 "path", p->ca_cert);
    X509_free(*ca);
    EVP_PKEY_free(*ca_key);
    *ca = NULL;
    char host[256], cn[320];
    dns_hostname(host, sizeof(host));
    snprintf(cn, sizeof(cn), "Drover development CA%s%s", host[0] ? " " : "", host);
    e = DRV_NOMEM;
    *ca_key = EVP_EC_gen("P-256");
    if (!*ca_key)
        goto out_fail;
    *ca = make_cert(*ca_key, cn, NULL, NULL, DEV_CA_DAYS, true, NULL);
    if (!*ca)
        goto out_fail;
    e = write_pem(p->ca_key, NULL, *ca_key);
    if (!e)
        e = write_pem(p->ca_cert, *ca, NULL);
    if (e)
        goto out_fail;
    *created = true;
    drv_info("tls: development CA created", "path", p->ca_cert);
    return DRV_OK;
out_fail:
    ERR_clear_error();
    X509_free(*ca);
    EVP_PKEY_free(*ca_key);
    *ca = NULL;
    *ca_key = NULL;
    return e;
}

/* Whether a server certificate on disk can be reused with this CA on this host. */
static bool dev_server_ok(X509 *srv, EVP_PKEY *key, X509 *ca, const char *host)
{
    bool ok = X509_check_private_key(srv, key) == 1 &&
              X509_verify(srv, X509_get0_pubkey(ca)) == 1 && cert_current(srv, DEV_RENEW_S) &&
              X509_check_host(srv, "localhost", 0, 0, NULL) == 1 &&
              (!host[0] || X509_check_host(srv, host, 0, 0, NULL) == 1);
    ERR_clear_error();
    return ok;
}

/* Install the development certificate into ssl, creating what is missing. */
static drv_err use_dev_cert(drv_tls_ctx *ctx, const char *data_dir)
{
    dev_paths *p = drv_malloc(sizeof(*p));
    X509 *ca = NULL, *srv = NULL;
    EVP_PKEY *ca_key = NULL, *key = NULL;
    bool ca_created;
    drv_err e = DRV_NOMEM;
    if (!p)
        return DRV_NOMEM;
    if (!data_dir || !data_dir[0] || !dev_paths_init(p, data_dir)) {
        drv_error("tls: no certificate configured and no usable data directory for a "
                  "development one");
        e = DRV_CONFIG;
        goto out_free_paths;
    }
    e = drv_mkdir_p(p->dir);
    if (e) {
        drv_error("tls: cannot create the development certificate directory", "path", p->dir,
                  "error", drv_strerror(e));
        goto out_free_paths;
    }
    e = dev_ca(p, &ca, &ca_key, &ca_created);
    if (e) {
        drv_error("tls: cannot create the development CA", "path", p->ca_cert, "error",
                  drv_strerror(e));
        goto out_free_paths;
    }
    char host[256], san[512];
    dns_hostname(host, sizeof(host));
    snprintf(san, sizeof(san), "DNS:localhost,IP:127.0.0.1,IP:::1%s%s", host[0] ? ",DNS:" : "",
             host);
    bool reuse = !ca_created && read_pem(p->srv_cert, &srv, NULL) == DRV_OK &&
                 read_pem(p->srv_key, NULL, &key) == DRV_OK && dev_server_ok(srv, key, ca, host);
    if (!reuse) {
        X509_free(srv);
        EVP_PKEY_free(key);
        srv = NULL;
        e = DRV_NOMEM;
        key = EVP_EC_gen("P-256");
        if (!key)
            goto out_free_all;
        srv = make_cert(key, host[0] ? host : "localhost", ca, ca_key, DEV_SERVER_DAYS, false, san);
        if (!srv)
            goto out_free_all;
        e = write_pem(p->srv_key, NULL, key);
        if (!e)
            e = write_pem(p->srv_cert, srv, NULL);
        if (e) {
            drv_error("tls: cannot write the development certificate", "path", p->srv_cert, "error",
                      drv_strerror(e));
            goto out_free_all;
        }
    }
    e = DRV_CONFIG;
    if (SSL_CTX_use_certificate(ctx->ssl, srv) != 1 || SSL_CTX_use_PrivateKey(ctx->ssl, key) != 1) {
        log_ssl_error(DRV_LOG_ERROR, "tls: cannot use the development certificate", p->srv_cert);
        goto out_free_all;
    }
    e = DRV_NOMEM;
    ctx->dev_ca_path = drv_strdup(p->ca_cert);
    if (!ctx->dev_ca_path)
        goto out_free_all;
    char expires[64];
    format_time(X509_get0_notAfter(srv), expires, sizeof(expires));
    drv_info(reuse ? "tls: development server certificate reused"
                   : "tls: development server certificate created",
             "path", p->srv_cert, "names", san, "expires", expires);
    drv_warn("tls: no certificate configured, using the development CA; give clients this CA "
             "file (e.g. mosquitto_pub --cafile)",
             "cafile", p->ca_cert);
    e = DRV_OK;
out_free_all:
    ERR_clear_error();
    X509_free(srv);
    EVP_PKEY_free(key);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
out_free_paths:
    drv_free(p);
    return e;
}

/* ---- configured certificates and mTLS --------------------------------- */

/* Install the configured certificate chain and key, and log what they are. */
static drv_err use_cert_files(drv_tls_ctx *ctx, const char *cert_file, const char *key_file)
{
    if (SSL_CTX_use_certificate_chain_file(ctx->ssl, cert_file) != 1) {
        log_ssl_error(DRV_LOG_ERROR, "tls: cannot load the server certificate", cert_file);
        return DRV_CONFIG;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx->ssl, key_file, SSL_FILETYPE_PEM) != 1) {
        log_ssl_error(DRV_LOG_ERROR, "tls: cannot load the server key", key_file);
        return DRV_CONFIG;
    }
    if (SSL_CTX_check_private_key(ctx->ssl) != 1) {
        log_ssl_error(DRV_LOG_ERROR, "tls: the server key does not match its certificate",
                      key_file);
        return DRV_CONFIG;
    }
    X509 *x = SSL_CTX_get0_certificate(ctx->ssl);
    EVP_PKEY *pk = X509_get0_pubkey(x);
    char subject[256] = "", expires[64], bits[16];
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
    format_time(X509_get0_notAfter(x), expires, sizeof(expires));
    snprintf(bits, sizeof(bits), "%d", pk ? EVP_PKEY_get_bits(pk) : 0);
    drv_info("tls: server certificate loaded", "file", cert_file, "key",
             pk ? EVP_PKEY_get0_type_name(pk) : "?", "bits", bits, "subject", subject, "expires",
             expires);
    if (!cert_current(x, 0))
        drv_warn("tls: the server certificate is expired or not yet valid; clients will refuse it",
                 "file", cert_file);
    else if (!cert_current(x, 30 * 86400))
        drv_warn("tls: the server certificate expires within 30 days", "file", cert_file, "expires",
                 expires);
    ERR_clear_error();
    return DRV_OK;
}

/* Warn about each trusted client CA without a CRL: its clients will be refused. */
static void warn_cas_without_crl(X509_STORE *store)
{
    STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (!ca)
            continue;
        bool found = false;
        for (int j = 0; j < sk_X509_OBJECT_num(objs) && !found; j++) {
            X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, j));
            found = crl && X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) == 0;
        }
        if (!found) {
            char subject[256] = "";
            X509_NAME_oneline(X509_get_subject_name(ca), subject, sizeof(subject));
            drv_warn("tls: no CRL for this client CA; its client certificates will be refused "
                     "(add its CRL to the CRL file)",
                     "ca", subject);
        }
    }
    for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
        X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));
        const ASN1_TIME *next = crl ? X509_CRL_get0_nextUpdate(crl) : NULL;
        time_t now = (time_t)drv_wall_s();
        if (next && X509_cmp_time(next, &now) < 0) {
            char issuer[256] = "";
            X509_NAME_oneline(X509_CRL_get_issuer(crl), issuer, sizeof(issuer));
            drv_warn("tls: CRL is past its next update; client certificates of its CA will be "
                     "refused until it is renewed",
                     "issuer", issuer);
        }
    }
}

/* accept_unverified: every chain passes the handshake; the verify result still
 * records the failure, and peer_cert marks such a certificate unverified. */
static int accept_any(int preverify_ok, X509_STORE_CTX *sctx)
{
    (void)preverify_ok;
    (void)sctx;
    return 1;
}

/*
 * Client certificates: verified against client_ca_file only (never the
 * system store).  With a CRL file the leaf is checked against its issuer's
 * CRL (X509_V_FLAG_CRL_CHECK, not CRL_CHECK_ALL: the CAs themselves are
 * the operator's own choice in client_ca_file).  A leaf whose issuer has no
 * CRL fails ("unable to get certificate CRL"): once revocation is
 * configured it fails closed, and start-up warns about such CAs.
 */
static drv_err setup_client_auth(drv_tls_ctx *ctx, const drv_tls_config *cfg)
{
    STACK_OF(X509_NAME) *names = NULL;
    if (SSL_CTX_load_verify_locations(ctx->ssl, cfg->client_ca_file, NULL) != 1) {
        log_ssl_error(DRV_LOG_ERROR, "tls: cannot load the client CA file", cfg->client_ca_file);
        return DRV_CONFIG;
    }
    names = SSL_load_client_CA_file(cfg->client_ca_file);
    if (!names) {
        log_ssl_error(DRV_LOG_ERROR, "tls: no CA certificate in the client CA file",
                      cfg->client_ca_file);
        return DRV_CONFIG;
    }
    SSL_CTX_set_client_CA_list(ctx->ssl, names); /* takes ownership */
    int mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
    if (cfg->require_client_cert)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx->ssl, mode, NULL);
    SSL_CTX_set_verify_depth(ctx->ssl, VERIFY_DEPTH);
    if (cfg->crl_file && cfg->crl_file[0]) {
        X509_STORE *store = SSL_CTX_get_cert_store(ctx->ssl);
        X509_LOOKUP *lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
        int n = lookup ? X509_load_crl_file(lookup, cfg->crl_file, X509_FILETYPE_PEM) : 0;
        if (n <= 0) {
            log_ssl_error(DRV_LOG_ERROR, "tls: cannot load the CRL file", cfg->crl_file);
            return DRV_CONFIG;
        }
        X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
        char count[16];
        snprintf(count, sizeof(count), "%d", n);
        drv_info("tls: client certificate revocation lists loaded", "file", cfg->crl_file, "crls",
                 count);
        warn_cas_without_crl(store);
    }
    drv_info(cfg->require_client_cert ? "tls: client certificates required"
                                      : "tls: client certificates requested (optional)",
             "cafile", cfg->client_ca_file, "crlfile", cfg->crl_file ? cfg->crl_file : "");
    ERR_clear_error();
    return DRV_OK;
}

/*
 * TLS 1.2 resumes from the session cache, not from tickets: OpenSSL gives a
 * 1.2 session no ID once it expects a ticket, so tickets are switched off
 * for each client that does not offer 1.3 (which we would choose).  This
 * runs before version negotiation and session lookup.
 */
static int client_hello_cb(SSL *s, int *alert, void *arg)
{
    (void)alert;
    (void)arg;
    const unsigned char *ext;
    size_t len;
    bool offers_13 = false;
    if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_supported_versions, &ext, &len) == 1 && len > 0) {
        size_t end = 1 + (size_t)ext[0] < len ? 1 + (size_t)ext[0] : len;
        for (size_t i = 1; i + 2 <= end; i += 2)
            offers_13 = offers_13 || (ext[i] == 0x03 && ext[i + 1] == 0x04);
    }
    if (!offers_13)
        SSL_set_options(s, SSL_OP_NO_TICKET);
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* The protocol, cipher and resumption policy (ADR-0006). */
static drv_err setup_policy(drv_tls_ctx *ctx)
{
    SSL_CTX *s = ctx->ssl;
    SSL_CTX_set_app_data(s, ctx);
    SSL_CTX_set_options(s, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Mozilla intermediate: the client chooses (all suites are strong). */
    SSL_CTX_clear_options(s, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_security_level(s, 2);
    if (SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(s, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(s, TLS12_CIPHERS) != 1 ||
        SSL_CTX_set_ciphersuites(s, TLS13_SUITES) != 1 ||
        SSL_CTX_set1_groups_list(s, TLS_GROUPS) != 1) {
        log_ssl_error(DRV_LOG_ERROR, "tls: cannot set the protocol policy", NULL);
        return DRV_CONFIG;
    }
    /* Resumption: a bounded server cache for 1.2, stateless tickets for 1.3. */
    static const unsigned char sid_ctx[] = "drover";
    SSL_CTX_set_session_id_context(s, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(s, SESSION_CACHE_SIZE);
    SSL_CTX_set_timeout(s, SESSION_TIMEOUT_S);
    SSL_CTX_set_num_tickets(s, 1); /* one device, one connection: one ticket suffices */
    SSL_CTX_set_client_hello_cb(s, client_hello_cb, NULL);
    if (RAND_bytes(ctx->ticket_name, sizeof(ctx->ticket_name)) != 1 ||
        RAND_bytes(ctx->ticket_aes, sizeof(ctx->ticket_aes)) != 1 ||
        RAND_bytes(ctx->ticket_hmac, sizeof(ctx->ticket_hmac)) != 1 ||
        SSL_CTX_set_tlsext_ticket_key_evp_cb(s, ticket_cb) != 1) {
        log_ssl_error(DRV_LOG_ERROR, "tls: cannot set up session tickets", NULL);
        return DRV_CONFIG;
    }
    return DRV_OK;
}

static bool empty(const char *s)
{
    return !s || !s[0];
}

drv_err drv_tls_ctx_new(const drv_tls_config *cfg, drv_tls_ctx **out)
{
    drv_err e = DRV_CONFIG;
    drv_tls_init();
    if (!mem_hooked)
        drv_warn("tls: OpenSSL allocated before drv_tls_init; its memory is not accounted");
    if (empty(cfg->client_ca_file) && (cfg->require_client_cert || !empty(cfg->crl_file))) {
        drv_error("tls: client certificates or a CRL file need a client CA file");
        return DRV_CONFIG;
    }
    drv_tls_ctx *ctx = drv_calloc(1, sizeof(*ctx));
    if (!ctx)
        return DRV_NOMEM;
    ctx->ssl = SSL_CTX_new(TLS_server_method());
    ctx->bio_method = make_bio_method();
    if (!ctx->ssl || !ctx->bio_method) {
        e = DRV_NOMEM;
        goto out_free_ctx;
    }
    e = setup_policy(ctx);
    if (e)
        goto out_free_ctx;
    if (empty(cfg->cert_file))
        e = use_dev_cert(ctx, cfg->data_dir);
    else
        e = use_cert_files(ctx, cfg->cert_file,
                           empty(cfg->key_file) ? cfg->cert_file : cfg->key_file);
    if (e)
        goto out_free_ctx;
    if (!empty(cfg->client_ca_file)) {
        e = setup_client_auth(ctx, cfg);
        if (e)
            goto out_free_ctx;
    }
    if (cfg->accept_unverified_client_certs && !cfg->require_client_cert) {
        /* Ask every client for a certificate (an empty CA list in the request:
         * any CA), and let the auth backend judge what does not verify. */
        SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, accept_any);
        SSL_CTX_set_verify_depth(ctx->ssl, VERIFY_DEPTH);
        ctx->accept_unverified = true;
        drv_info("tls: client certificates requested; unverified ones go to the auth backend");
    }
    *out = ctx;
    return DRV_OK;
out_free_ctx:
    ERR_clear_error();
    drv_tls_ctx_free(ctx);
    return e;
}

void drv_tls_ctx_free(drv_tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl);
    BIO_meth_free(ctx->bio_method);
    drv_free(ctx->dev_ca_path);
    OPENSSL_cleanse(ctx, sizeof(*ctx));
    drv_free(ctx);
}

const char *drv_tls_dev_ca_path(const drv_tls_ctx *ctx)
{
    return ctx->dev_ca_path;
}

/* ---- the stream ------------------------------------------------------- */

/* Record a failure: keep its reason, log it once, empty the error queue. */
static drv_err fail(tls_stream *ts, drv_err e, const char *reason)
{
    char fd[16], verify[16];
    ts->fatal = e;
    ts->error = reason;
    snprintf(fd, sizeof(fd), "%d", ts->base.fd);
    long vr = SSL_get_verify_result(ts->ssl);
    snprintf(verify, sizeof(verify), "%ld", vr);
    drv_info(ts->established ? "tls: connection failed" : "tls: handshake failed", "fd", fd,
             "reason", reason, "verify_code", verify);
    ERR_clear_error();
    return e;
}

/* Map the outcome of a failed SSL_read_ex/SSL_write_ex/SSL_do_handshake. */
static drv_err ssl_failure(tls_stream *ts, int ret)
{
    int err = SSL_get_error(ts->ssl, ret);
    switch (err) {
    case SSL_ERROR_WANT_READ:
        ts->want_write = false;
        return DRV_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        ts->want_write = true;
        return DRV_AGAIN;
    case SSL_ERROR_ZERO_RETURN: /* close_notify, or EOF (SSL_OP_IGNORE_UNEXPECTED_EOF) */
        ts->fatal = DRV_CLOSED;
        ERR_clear_error();
        return DRV_CLOSED;
    case SSL_ERROR_SYSCALL:
        /* The BIO failed: its own drv_err says why; CLOSED is a reset. */
        if (ts->io_err == DRV_CLOSED) {
            ts->fatal = DRV_CLOSED;
            ERR_clear_error();
            return DRV_CLOSED;
        }
        return fail(ts, DRV_IO, drv_strerror(ts->io_err));
    case SSL_ERROR_SSL: {
        long vr = SSL_get_verify_result(ts->ssl);
        unsigned long last = ERR_peek_last_error();
        const char *reason = NULL;
        if (vr != X509_V_OK)
            reason = X509_verify_cert_error_string(vr);
        else if (last)
            reason = ERR_reason_error_string(last);
        if (last && ERR_GET_REASON(last) == ERR_R_MALLOC_FAILURE)
            return fail(ts, DRV_NOMEM, "out of memory");
        return fail(ts, DRV_PROTOCOL, reason ? reason : "TLS protocol error");
    }
    default:
        return fail(ts, DRV_PROTOCOL, "unexpected TLS state");
    }
}

/* Note the end of the handshake once (debug log of what was negotiated). */
static void check_established(tls_stream *ts)
{
    if (ts->established || !SSL_is_init_finished(ts->ssl))
        return;
    ts->established = true;
    if (drv_log_enabled(DRV_LOG_DEBUG)) {
        char fd[16];
        snprintf(fd, sizeof(fd), "%d", ts->base.fd);
        drv_debug("tls: handshake done", "fd", fd, "version", SSL_get_version(ts->ssl), "cipher",
                  SSL_get_cipher_name(ts->ssl), "resumed",
                  SSL_session_reused(ts->ssl) ? "yes" : "no");
    }
}

static drv_err tls_read(drv_stream *st, uint8_t *buf, size_t len, size_t *n)
{
    tls_stream *ts = (tls_stream *)st;
    *n = 0;
    if (ts->fatal)
        return ts->fatal;
    assert(len > 0);
    ERR_clear_error();
    ts->io_err = DRV_OK;
    int ret = SSL_read_ex(ts->ssl, buf, len, n);
    check_established(ts);
    if (ret == 1) {
        ts->want_write = false;
        return DRV_OK;
    }
    *n = 0;
    return ssl_failure(ts, ret);
}

static drv_err tls_write(drv_stream *st, const uint8_t *buf, size_t len, size_t *n)
{
    tls_stream *ts = (tls_stream *)st;
    *n = 0;
    if (ts->fatal)
        return ts->fatal;
    if (len == 0)
        return DRV_OK;
    ERR_clear_error();
    ts->io_err = DRV_OK;
    int ret = SSL_write_ex(ts->ssl, buf, len, n);
    check_established(ts);
    if (ret == 1) {
        ts->want_write = false;
        return DRV_OK;
    }
    *n = 0;
    return ssl_failure(ts, ret);
}

static uint32_t tls_wants(drv_stream *st)
{
    tls_stream *ts = (tls_stream *)st;
    return ts->want_write ? DRV_EV_WRITE : DRV_EV_READ;
}

static void tls_shutdown(drv_stream *st, uint16_t code)
{
    (void)code;
    tls_stream *ts = (tls_stream *)st;
    if (ts->shutdown_done)
        return;
    ts->shutdown_done = true;
    if (!ts->established || (ts->fatal && ts->fatal != DRV_CLOSED))
        return; /* a failed session is dropped from the cache by SSL_free */
    if (ts->io_err == DRV_CLOSED) {
        /* The peer is gone: nothing to send, but the session stays resumable. */
        SSL_set_shutdown(ts->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        return;
    }
    ERR_clear_error();
    (void)SSL_shutdown(ts->ssl); /* queues close_notify; a full socket just drops it */
    ERR_clear_error();
}

static void tls_free(drv_stream *st)
{
    tls_stream *ts = (tls_stream *)st;
    SSL_free(ts->ssl);
    drv_free(ts);
}

/* Copy name as RFC 2253 into out; false if it does not fit. */
static bool name_rfc2253(const X509_NAME *name, char *out, size_t size)
{
    bool ok = false;
    BIO *mem = BIO_new(BIO_s_mem());
    if (!mem)
        return false;
    int len = X509_NAME_print_ex(mem, name, 0, XN_FLAG_RFC2253);
    char *data;
    long have = BIO_get_mem_data(mem, &data);
    if (len >= 0 && have >= 0 && (size_t)have < size) {
        memcpy(out, data, (size_t)have);
        out[have] = '\0';
        ok = true;
    }
    BIO_free(mem);
    return ok;
}

/* Append x's DER to out's chain; false when it does not fit. */
static bool append_der(X509 *x, drv_peer_cert *out)
{
    int len = i2d_X509(x, NULL);
    if (len <= 0 || (size_t)len > sizeof(out->chain) - out->chain_len)
        return false;
    unsigned char *p = out->chain + out->chain_len;
    if (i2d_X509(x, &p) != len)
        return false;
    out->chain_len += (size_t)len;
    return true;
}

/* The leaf and what the client sent with it, bounded; false when even the
 * leaf does not fit.  On the server side OpenSSL's peer chain has no leaf. */
static bool copy_chain(SSL *ssl, X509 *leaf, drv_peer_cert *out)
{
    out->chain_len = 0;
    if (!append_der(leaf, out))
        return false;
    STACK_OF(X509) *sent = SSL_get_peer_cert_chain(ssl);
    int n = sent ? sk_X509_num(sent) : 0, kept = 1;
    for (int i = 0; i < n && kept < DRV_PEER_CHAIN_CERTS; i++) {
        X509 *c = sk_X509_value(sent, i);
        if (X509_cmp(c, leaf) == 0)
            continue;
        if (!append_der(c, out))
            break;
        kept++;
    }
    return true;
}

static bool tls_peer_cert(drv_stream *st, drv_peer_cert *out)
{
    tls_stream *ts = (tls_stream *)st;
    memset(out, 0, sizeof(*out));
    if (!ts->established || ts->fatal)
        return false;
    X509 *x = SSL_get0_peer_certificate(ts->ssl);
    bool verified = SSL_get_verify_result(ts->ssl) == X509_V_OK;
    if (!x || (!verified && !ts->accept_unverified))
        return true;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!name_rfc2253(X509_get_subject_name(x), out->subject, sizeof(out->subject)) ||
        !name_rfc2253(X509_get_issuer_name(x), out->issuer, sizeof(out->issuer)) ||
        X509_digest(x, EVP_sha256(), md, &mdlen) != 1 || mdlen * 2 >= sizeof(out->fingerprint)) {
        drv_warn("tls: client certificate names too long or unreadable; treated as absent");
        ERR_clear_error();
        memset(out, 0, sizeof(*out));
        return true;
    }
    static const char hex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < mdlen; i++) {
        out->fingerprint[2 * i] = hex[md[i] >> 4];
        out->fingerprint[2 * i + 1] = hex[md[i] & 15];
    }
    out->fingerprint[2 * mdlen] = '\0';
    out->present = true;
    out->verified = verified;
    if (!verified && !copy_chain(ts->ssl, x, out)) {
        memset(out, 0, sizeof(*out)); /* a leaf alone too large to hand on: no certificate */
        ERR_clear_error();
    }
    return true;
}

const drv_transport_ops drv_tls_ops = {
    .name = "tls",
    .read = tls_read,
    .write = tls_write,
    .wants = tls_wants,
    .shutdown = tls_shutdown,
    .free = tls_free,
    .peer_cert = tls_peer_cert,
};

drv_err drv_tls_stream_new(drv_tls_ctx *ctx, int fd, drv_stream **out)
{
    tls_stream *ts = drv_calloc(1, sizeof(*ts));
    if (!ts)
        return DRV_NOMEM;
    ts->base.ops = &drv_tls_ops;
    ts->base.fd = fd;
    ts->ssl = SSL_new(ctx->ssl);
    if (!ts->ssl)
        goto out_free_stream;
    BIO *bio = BIO_new(ctx->bio_method);
    if (!bio)
        goto out_free_ssl;
    BIO_set_data(bio, ts);
    BIO_set_init(bio, 1);
    SSL_set_bio(ts->ssl, bio, bio); /* one reference, owned by the SSL from here */
    SSL_set_accept_state(ts->ssl);
    ts->accept_unverified = ctx->accept_unverified;
    *out = &ts->base;
    return DRV_OK;
out_free_ssl:
    SSL_free(ts->ssl);
out_free_stream:
    ERR_clear_error();
    drv_free(ts);
    return DRV_NOMEM;
}

const char *drv_tls_stream_error(drv_stream *st)
{
    assert(st->ops == &drv_tls_ops);
    return ((tls_stream *)st)->error;
}
