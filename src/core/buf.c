/* buf.c — capped growable buffer; see buf.h. */
#include "core/buf.h"

#include <string.h>

#include "core/alloc.h"

void drv_buf_init(drv_buf *b, size_t cap)
{
    b->data = NULL;
    b->off = b->len = b->size = 0;
    b->cap = cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap;
}

void drv_buf_free(drv_buf *b)
{
    drv_free(b->data);
    b->data = NULL;
    b->off = b->len = b->size = 0;
}

uint8_t *drv_buf_reserve(drv_buf *b, size_t n, drv_err *err)
{
    if (n == 0)
        n = 1; /* always hand out real storage, never NULL + 0 */
    if (b->size - b->len >= n) {
        *err = DRV_OK;
        return b->data + b->len;
    }
    if (b->off > 0) {
        drv_buf_compact(b);
        if (b->size - b->len >= n) {
            *err = DRV_OK;
            return b->data + b->len;
        }
    }
    size_t need = (size_t)b->len + n;
    if (need > b->cap || need < n) {
        *err = DRV_TOOBIG;
        return NULL;
    }
    size_t size = b->size ? b->size : 256;
    while (size < need)
        size *= 2;
    if (size > b->cap)
        size = b->cap;
    uint8_t *p = drv_realloc(b->data, size);
    if (!p) {
        *err = DRV_NOMEM;
        return NULL;
    }
    b->data = p;
    b->size = (uint32_t)size;
    *err = DRV_OK;
    return b->data + b->len;
}

drv_err drv_buf_append(drv_buf *b, const void *p, size_t n)
{
    drv_err err;
    uint8_t *dst = drv_buf_reserve(b, n, &err);
    if (!dst)
        return err;
    if (n)
        memcpy(dst, p, n);
    b->len += (uint32_t)n;
    return DRV_OK;
}

void drv_buf_consume(drv_buf *b, size_t n)
{
    b->off += (uint32_t)n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void drv_buf_compact(drv_buf *b)
{
    if (b->off == 0)
        return;
    uint32_t n = b->len - b->off;
    if (n)
        memmove(b->data, b->data + b->off, n);
    b->off = 0;
    b->len = n;
}
