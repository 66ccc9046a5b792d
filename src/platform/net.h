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

/* Peer identity of an accepted socket. */
typedef struct drv_peer {
    char addr[56]; /* "127.0.0.1:53412" or "[::1]:53412" */
    bool loopback;
} drv_peer;

/* Accept one connection: DRV_AGAIN when none is pending. */
drv_err drv_accept(int lfd, int *fd_out, drv_peer *peer);

/* Read up to len bytes; *n gets the count. */
drv_err drv_read(int fd, void *buf, size_t len, size_t *n);
/* Write up to len bytes; *n gets the count (may be short). */
drv_err drv_write(int fd, const void *buf, size_t len, size_t *n);
void drv_close(int fd);

#endif
