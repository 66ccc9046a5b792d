/* tcp.c — the plain TCP transport and the stack helpers; see transport.h. */
#include "core/alloc.h"
#include "net/transport.h"
#include "platform/net.h"

static drv_err tcp_read(drv_stream *st, uint8_t *buf, size_t len, size_t *n)
{
    return drv_read(st->fd, buf, len, n);
}

static drv_err tcp_write(drv_stream *st, const uint8_t *buf, size_t len, size_t *n)
{
    drv_err e = drv_write(st->fd, buf, len, n);
    if (e == DRV_OK && *n == 0)
        return DRV_AGAIN;
    return e;
}

static void tcp_free(drv_stream *st)
{
    drv_free(st);
}

const drv_transport_ops drv_tcp_ops = {
    .name = "tcp",
    .read = tcp_read,
    .write = tcp_write,
    .free = tcp_free,
};

drv_err drv_tcp_stream_new(int fd, drv_stream **out)
{
    drv_stream *st = drv_calloc(1, sizeof(*st));
    if (!st)
        return DRV_NOMEM;
    st->ops = &drv_tcp_ops;
    st->fd = fd;
    *out = st;
    return DRV_OK;
}

void drv_stream_free(drv_stream *st, uint16_t code)
{
    while (st) {
        drv_stream *lower = st->lower;
        if (st->ops->shutdown)
            st->ops->shutdown(st, code);
        st->ops->free(st);
        st = lower;
    }
}

bool drv_stream_peer_cert(drv_stream *st, drv_peer_cert *out)
{
    for (; st; st = st->lower)
        if (st->ops->peer_cert && st->ops->peer_cert(st, out))
            return true;
    return false;
}
