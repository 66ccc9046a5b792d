/* net.c — non-blocking TCP sockets and errno translation; see net.h. */
#include "platform/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

drv_err drv_err_from_errno(int e)
{
    switch (e) {
    case 0:
        return DRV_OK;
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EINTR:
    case EINPROGRESS:
        return DRV_AGAIN;
    case ENOMEM:
    case ENOBUFS:
        return DRV_NOMEM;
    case EINVAL:
        return DRV_INVAL;
    case ENOENT:
        return DRV_NOTFOUND;
    case EEXIST:
        return DRV_EXISTS;
    case EACCES:
    case EPERM:
        return DRV_DENIED;
    case EADDRINUSE:
        return DRV_ADDRINUSE;
    case EMFILE:
    case ENFILE:
        return DRV_LIMIT;
    case ECONNRESET:
    case EPIPE:
    case ENOTCONN:
    case ECONNABORTED:
        return DRV_CLOSED;
    default:
        return DRV_IO;
    }
}

static bool split_hostport(const char *hp, char *host, size_t hostlen, char *port, size_t portlen)
{
    const char *colon;
    if (hp[0] == '[') {
        const char *end = strchr(hp, ']');
        if (!end || end[1] != ':')
            return false;
        snprintf(host, hostlen, "%.*s", (int)(end - hp - 1), hp + 1);
        colon = end + 1;
    } else {
        colon = strrchr(hp, ':');
        if (!colon)
            return false;
        snprintf(host, hostlen, "%.*s", (int)(colon - hp), hp);
    }
    snprintf(port, portlen, "%s", colon + 1);
    return port[0] != '\0';
}

drv_err drv_listen_tcp(const char *hostport, int backlog, bool reuseport, int *fd_out,
                       int *bound_port)
{
    char host[256], port[16];
    if (!split_hostport(hostport, host, sizeof(host), port, sizeof(port)))
        return DRV_INVAL;
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0)
        return DRV_INVAL;
    drv_err err = DRV_IO;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = drv_err_from_errno(errno);
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) {
            err = DRV_OK;
            break;
        }
        err = drv_err_from_errno(errno);
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (err)
        return err;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return DRV_OK;
}

const char *drv_peer_format(const drv_peer *p, char buf[DRV_PEER_STRLEN])
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (p->family == 4) {
        inet_ntop(AF_INET, p->ip, ip, sizeof(ip));
        snprintf(buf, DRV_PEER_STRLEN, "%s:%u", ip, (unsigned)p->port);
    } else if (p->family == 6) {
        inet_ntop(AF_INET6, p->ip, ip, sizeof(ip));
        snprintf(buf, DRV_PEER_STRLEN, "[%s]:%u", ip, (unsigned)p->port);
    } else {
        snprintf(buf, DRV_PEER_STRLEN, "unix");
    }
    return buf;
}

drv_err drv_accept(int lfd, int *fd_out, drv_peer *peer)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return drv_err_from_errno(errno);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    memset(peer, 0, sizeof(*peer));
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        peer->family = 4;
        memcpy(peer->ip, &a->sin_addr, 4);
        peer->port = ntohs(a->sin_port);
        peer->loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        peer->family = 6;
        memcpy(peer->ip, &a->sin6_addr, 16);
        peer->port = ntohs(a->sin6_port);
        peer->loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ||
                         (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127);
    } else {
        peer->loopback = true;
    }
    *fd_out = fd;
    return DRV_OK;
}

drv_err drv_read(int fd, void *buf, size_t len, size_t *n)
{
    ssize_t r = read(fd, buf, len);
    if (r > 0) {
        *n = (size_t)r;
        return DRV_OK;
    }
    *n = 0;
    if (r == 0)
        return DRV_CLOSED;
    return drv_err_from_errno(errno);
}

drv_err drv_write(int fd, const void *buf, size_t len, size_t *n)
{
    ssize_t r = send(fd, buf, len, MSG_NOSIGNAL);
    if (r >= 0) {
        *n = (size_t)r;
        return DRV_OK;
    }
    *n = 0;
    return drv_err_from_errno(errno);
}

drv_err drv_eventfd(int *fd_out)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return drv_err_from_errno(errno);
    *fd_out = fd;
    return DRV_OK;
}

void drv_close(int fd)
{
    if (fd >= 0)
        close(fd);
}

drv_err drv_connect_tcp_blocking(const char *host, const char *port, int timeout_ms, int *fd_out,
                                 char *reason, size_t reason_cap)
{
    char scratch[8];
    if (!reason) {
        reason = scratch;
        reason_cap = sizeof(scratch);
    }
    reason[0] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        snprintf(reason, reason_cap, "%s", gai_strerror(gai));
        return DRV_NOTFOUND;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    drv_err err = DRV_IO;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = drv_err_from_errno(errno);
            snprintf(reason, reason_cap, "%s", strerror(errno));
            continue;
        }
        /* On Linux SO_SNDTIMEO also bounds a blocking connect (EINPROGRESS when it expires). */
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            err = DRV_OK;
            break;
        }
        int e = errno;
        err = drv_err_from_errno(e);
        snprintf(reason, reason_cap, "%s", e == EINPROGRESS ? "timed out" : strerror(e));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (err == DRV_OK)
        *fd_out = fd;
    return err;
}
