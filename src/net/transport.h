/*
 * transport.h — byte streams under MQTT: TCP, TLS, WebSocket, WebSocket over TLS.
 *
 * A transport turns a connected, non-blocking socket into a stream of
 * application bytes both ways.  Transports stack: WebSocket runs over a
 * lower transport (TCP or TLS).  The broker holds one `drv_stream` per
 * connection and never knows which transport it has, except for the peer
 * identity a TLS transport reports (client certificates).
 *
 * Contract for every op (all non-blocking, called on the connection's loop
 * thread only):
 *   read   — up to len application bytes into buf; DRV_OK with *n > 0,
 *            DRV_AGAIN (nothing now: wait for the events `wants` reports),
 *            DRV_CLOSED (orderly end), or an error (DRV_PROTOCOL for a peer
 *            that broke the transport's protocol, DRV_IO otherwise).
 *   write  — up to len bytes; *n gets how many were taken (the caller keeps
 *            the rest and retries with the same bytes first).  DRV_AGAIN when
 *            none could be taken now.
 *   wants  — the loop events (DRV_EV_READ / DRV_EV_WRITE) the transport needs
 *            to make progress, beyond what the caller wants for itself (a TLS
 *            handshake may need to write before it can read).
 *   shutdown — best effort, once: TLS close_notify, WebSocket close frame with
 *            `code` (1000 normal, 1002 protocol error, 1009 too big, ...).
 *   free   — release the state (does not close the fd; the caller does).
 *   peer_cert — optional (TLS): the verified client certificate, if any.
 */
#ifndef DRV_NET_TRANSPORT_H
#define DRV_NET_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct drv_stream drv_stream;
struct drv_peer_cert;

typedef struct drv_transport_ops {
    const char *name; /* "tcp", "tls", "ws", "wss" (for logs and metrics) */
    drv_err (*read)(drv_stream *st, uint8_t *buf, size_t len, size_t *n);
    drv_err (*write)(drv_stream *st, const uint8_t *buf, size_t len, size_t *n);
    uint32_t (*wants)(drv_stream *st);
    void (*shutdown)(drv_stream *st, uint16_t code);
    void (*free)(drv_stream *st);
    bool (*peer_cert)(drv_stream *st, struct drv_peer_cert *out);
} drv_transport_ops;

/* Most bytes and certificates of an unverified chain handed to the auth backend. */
#define DRV_PEER_CHAIN_MAX 16384
#define DRV_PEER_CHAIN_CERTS 4

/* What a TLS transport learned about the peer (empty strings when none). */
typedef struct drv_peer_cert {
    /* A client certificate was presented: verified against tls.client_ca_file,
     * or (tls.accept_unverified_client_certs only) not, with verified false. */
    bool present;
    bool verified;        /* the chain verified at the TLS layer; false: trust nothing yet */
    char subject[256];    /* RFC 2253 subject, e.g. "CN=dev1,O=Acme" */
    char issuer[256];     /* RFC 2253 issuer */
    char fingerprint[96]; /* SHA-256, lower-case hex with no separators */
    /* Unverified only: the chain as the client sent it, DER certificates back to
     * back, leaf first, at most DRV_PEER_CHAIN_CERTS of them (what does not fit
     * is left out), for the backend to verify against the CAs it trusts. */
    size_t chain_len;
    uint8_t chain[DRV_PEER_CHAIN_MAX];
} drv_peer_cert;

/*
 * One layer of a connection's transport stack.  `lower` is the layer below
 * (NULL for TCP, which uses fd directly).  Each transport allocates its own
 * state struct that starts with a drv_stream.
 */
struct drv_stream {
    const drv_transport_ops *ops;
    drv_stream *lower;
    int fd;
};

/* Plain TCP: reads and writes the fd. */
extern const drv_transport_ops drv_tcp_ops;
drv_err drv_tcp_stream_new(int fd, drv_stream **out);

/* Helpers that go through the ops table. */
static inline drv_err drv_stream_read(drv_stream *st, uint8_t *buf, size_t len, size_t *n)
{
    return st->ops->read(st, buf, len, n);
}
static inline drv_err drv_stream_write(drv_stream *st, const uint8_t *buf, size_t len, size_t *n)
{
    return st->ops->write(st, buf, len, n);
}
static inline uint32_t drv_stream_wants(drv_stream *st)
{
    return st->ops->wants ? st->ops->wants(st) : 0;
}
/* Shut down and free the whole stack, top to bottom (the fd stays open). */
void drv_stream_free(drv_stream *st, uint16_t code);

/* The TLS layer of a stack, if any, describes the peer's certificate. */
bool drv_stream_peer_cert(drv_stream *st, drv_peer_cert *out);

#endif
