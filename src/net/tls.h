/*
 * tls.h — the TLS transport (server side only), built on OpenSSL 3.0.
 *
 * A drv_tls_ctx holds what every TLS connection of the process shares: the
 * server certificate and key, the protocol and cipher policy (Mozilla
 * "intermediate": TLS 1.2 and 1.3, ECDHE with AEAD ciphers only), the
 * client-certificate policy (mTLS, CRLs) and the session resumption state
 * (TLS 1.3 tickets under per-process random keys, a server-side session
 * cache for TLS 1.2).  It is created once at start-up, is read-only
 * afterwards and may be shared by every loop thread.  See ADR-0006.
 *
 * A TLS stream is one connection's drv_stream (transport.h).  It is driven
 * entirely by read and write: the handshake happens inside them, so the
 * caller just reads as it would on TCP and asks `wants` which socket event
 * the transport needs next.  Its socket I/O goes through src/platform
 * (drv_read/drv_write), never through OpenSSL's socket BIO.
 *
 * Memory: OpenSSL allocates through drv_malloc (drv_tls_init), so TLS
 * memory shows up in drv_mem_used and the memory cap.  Buffers are released
 * while a connection is idle (SSL_MODE_RELEASE_BUFFERS); what an idle
 * connection still holds is mostly OpenSSL's SSL object (ADR-0006).
 *
 * Not here: TLS clients (cluster links will need one), OCSP stapling,
 * certificate reloading without a restart (create a new context and use it
 * for new connections), SNI with several certificates.
 */
#ifndef DRV_NET_TLS_H
#define DRV_NET_TLS_H

#include <stdbool.h>

#include "core/err.h"
#include "net/transport.h"

typedef struct drv_tls_ctx drv_tls_ctx;

typedef struct drv_tls_config {
    const char *cert_file; /* server certificate chain (PEM); NULL/"" → development certificate */
    const char *key_file;  /* its private key (PEM); NULL/"" → the key is in cert_file */
    const char *data_dir;  /* where the development CA and certificate live: <data_dir>/tls/ */
    const char
        *client_ca_file; /* mTLS: CAs that sign client certificates; NULL/"" → none requested */
    bool require_client_cert; /* with client_ca_file: refuse clients without one */
    const char *crl_file;     /* PEM CRLs checked for client certificates; NULL/"" → none */
    /* Always ask for a client certificate, and let one that does not verify
     * against client_ca_file through, marked unverified, for the auth backend
     * to check against the CAs tenants registered (ADR-0011).  Ignored with
     * require_client_cert (strict mTLS stays strict). */
    bool accept_unverified_client_certs;
} drv_tls_config;

/*
 * Route OpenSSL's allocations through drv_malloc/drv_free.  Call it first
 * thing in main, before anything else uses OpenSSL (RAND_bytes, SHA-1 for
 * WebSocket): OpenSSL accepts an allocator only before its first
 * allocation.  Idempotent and thread-safe; drv_tls_ctx_new calls it too.
 */
void drv_tls_init(void);

/* Whether OpenSSL allocates through drv_malloc (drv_tls_init was in time). */
bool drv_tls_mem_accounted(void);

/*
 * Build the shared TLS context from cfg (strings are copied or used only
 * during the call).  With no cert_file, the development CA and server
 * certificate under <data_dir>/tls/ are created on first use, reused later
 * and the server certificate renewed when it is expired, expiring within 7
 * days, not signed by that CA or not naming this host.  Logs what it loaded
 * or generated, with a warning telling users which CA file clients need.
 * Errors: DRV_CONFIG for unusable files or settings (the reason is logged),
 * DRV_NOMEM, or the file error of the development directory.  On success
 * *out is owned by the caller: drv_tls_ctx_free, after every stream made
 * from it has been freed.
 */
drv_err drv_tls_ctx_new(const drv_tls_config *cfg, drv_tls_ctx **out);

/* Free the context (NULL is a no-op).  No stream made from it may remain. */
void drv_tls_ctx_free(drv_tls_ctx *ctx);

/*
 * Server side of a TLS connection on an accepted non-blocking TCP socket.
 * Nothing is sent or received until the first read or write.  The stream
 * does not own fd (drv_stream_free leaves it open).  DRV_NOMEM on
 * allocation failure, *out untouched.
 *
 * How its ops behave (transport.h):
 *   read/write — run the handshake first.  A peer that breaks TLS (bad
 *     handshake, refused client certificate, protocol version below 1.2,
 *     bad record MAC) gives DRV_PROTOCOL, and the reason is logged at info
 *     level ("tls: handshake failed") and kept for drv_tls_stream_error.
 *     A TCP close with or without close_notify gives DRV_CLOSED (MQTT
 *     frames its own packets, so truncation cannot go unnoticed).
 *     After an error every further read or write returns the same error.
 *   wants  — DRV_EV_WRITE when OpenSSL last wanted to write before it could
 *     go on (SSL_ERROR_WANT_WRITE), else DRV_EV_READ.  When it says WRITE
 *     and the socket becomes writable, call read again (not only write):
 *     that is how a handshake blocked on a full socket resumes.
 *   shutdown — one close_notify, best effort, never blocks; skipped when
 *     the handshake did not finish or the connection failed.
 *   peer_cert — returns true once the handshake is done (the TLS layer
 *     describes the peer), with present = true for a client certificate
 *     whose subject and issuer fit the fields: verified = true when it
 *     verified against client_ca_file; an unverified one (only with
 *     accept_unverified_client_certs) comes with its chain's DER.
 */
drv_err drv_tls_stream_new(drv_tls_ctx *ctx, int fd, drv_stream **out);

/* The ops of drv_tls_stream_new's streams (name "tls"). */
extern const drv_transport_ops drv_tls_ops;

/*
 * Why a TLS stream failed ("certificate has expired", "unsupported
 * protocol", ...), for the caller's own log line with the peer's address;
 * NULL while it has not failed.  st must be a TLS stream.  The string is
 * static: valid for the life of the process.
 */
const char *drv_tls_stream_error(drv_stream *st);

/*
 * Path of the development CA certificate (for clients' --cafile), or NULL
 * when a real certificate is configured.  Valid while ctx lives.
 */
const char *drv_tls_dev_ca_path(const drv_tls_ctx *ctx);

#endif
