/*
 * net.h — sockets and errno, the only place that touches them.
 *
 * All sockets are non-blocking and close-on-exec.  Results are drv_err:
 * DRV_AGAIN when the call would block, DRV_CLOSED on an orderly close or a
 * reset by the peer, DRV_IO for anything else.
 */
#ifndef DRV_PLATFORM_NET_H
#define DRV_PLATFORM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/err.h"

/* Translate an errno value into the project's error enum. */
drv_err drv_err_from_errno(int e);

/*
 * Listen on "host:port" ("0.0.0.0:1883", "[::1]:1883", ":1883"; port 0 picks
 * one).  *bound_port receives the port actually bound.  reuseport: several
 * sockets may bind the same address (one per worker; the kernel spreads
 * connections across them).
 */
drv_err drv_listen_tcp(const char *hostport, int backlog, bool reuseport, int *fd_out,
                       int *bound_port);

/* A non-blocking eventfd, for waking another thread's loop. */
drv_err drv_eventfd(int *fd_out);

/* Address of an accepted socket's peer, binary and small (20 bytes): every
 * connection keeps one, and it is formatted only when logged. */
typedef struct drv_peer {
    uint8_t ip[16]; /* IPv4 in the first 4 bytes, IPv6 in all 16 */
    uint16_t port;  /* host order */
    uint8_t family; /* 4, 6, or 0 for a local (unix) socket */
    bool loopback;  /* 127/8, ::1 or ::ffff:127/104, or a local socket */
} drv_peer;

/* Longest drv_peer_format text, NUL included: "[v6-address]:65535". */
#define DRV_PEER_STRLEN 56

/* Format as "127.0.0.1:53412", "[::1]:53412" or "unix" into buf; returns buf. */
const char *drv_peer_format(const drv_peer *p, char buf[DRV_PEER_STRLEN]);

/* Accept one connection: DRV_AGAIN when none is pending. */
drv_err drv_accept(int lfd, int *fd_out, drv_peer *peer);

/* Read up to len bytes; *n gets the count. */
drv_err drv_read(int fd, void *buf, size_t len, size_t *n);
/* Write up to len bytes; *n gets the count (may be short). */
drv_err drv_write(int fd, const void *buf, size_t len, size_t *n);
void drv_close(int fd);

/*
 * An outgoing TCP connection to host:port (a name or a literal address;
 * each address getaddrinfo gives is tried in turn), for command-line
 * clients (`drover tenant ...`, src/server/cli_http.c).  Unlike every other
 * socket here this one BLOCKS: a short-lived tool has nothing else to do
 * while it waits.  The connect, and later every read and write, give up
 * after timeout_ms (drv_read / drv_write then answer DRV_AGAIN: timed out).
 * DRV_NOTFOUND when the name does not resolve, DRV_AGAIN on a connect
 * timeout, another drv_err when no address accepts.  reason (may be NULL)
 * gets a short text for people ("connection refused"); *fd_out is the
 * caller's to drv_close.
 */
drv_err drv_connect_tcp_blocking(const char *host, const char *port, int timeout_ms, int *fd_out,
                                 char *reason, size_t reason_cap);

#endif
