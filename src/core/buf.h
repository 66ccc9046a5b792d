/*
 * buf.h — a growable byte buffer with a hard cap fixed when it is made.
 *
 * Every buffer that network input can grow is a drv_buf with a cap, so a
 * peer can never make the process grow without bound (curl's dynbuf).  Data
 * lives in [off, len): consumers advance `off` instead of moving bytes, and
 * drv_buf_compact() reclaims the consumed prefix when it is worth it.
 */
#ifndef DRV_CORE_BUF_H
#define DRV_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* 24 bytes: every connection holds three of these, so the offsets are 32-bit
 * (a buffer never exceeds 4 GiB - 1; larger caps are clamped). */
typedef struct drv_buf {
    uint8_t *data; /* heap storage, NULL until the first append */
    uint32_t off;  /* first unconsumed byte */
    uint32_t len;  /* end of valid data */
    uint32_t size; /* allocated bytes */
    uint32_t cap;  /* hard maximum for size; appends beyond it fail DRV_TOOBIG */
} drv_buf;

/* Initialise an empty buffer that may never hold more than cap bytes. */
void drv_buf_init(drv_buf *b, size_t cap);
/* Free storage; the buffer is empty and reusable afterwards. */
void drv_buf_free(drv_buf *b);
/* Append n bytes; DRV_TOOBIG past the cap, DRV_NOMEM if allocation fails. */
drv_err drv_buf_append(drv_buf *b, const void *p, size_t n);
/* Make room for at least n more bytes at data+len; returns the pointer. */
uint8_t *drv_buf_reserve(drv_buf *b, size_t n, drv_err *err);
/* Number of unconsumed bytes. */
static inline size_t drv_buf_avail(const drv_buf *b)
{
    return b->len - b->off;
}
/* Mark n bytes as consumed; resets to empty when everything is consumed. */
void drv_buf_consume(drv_buf *b, size_t n);
/* Move unconsumed bytes to the front (storage is kept; drv_buf_free releases it). */
void drv_buf_compact(drv_buf *b);

#endif
