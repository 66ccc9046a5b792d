/*
 * quota.c — per-tenant limits the broker enforces itself: connections held
 * at once and messages published per second, for each namespace
 * (ADR-0009).  The values come from the authentication backend at each
 * CONNECT (drv_auth_result), so a quota change applies from the tenant's
 * next connection on.
 *
 * Connections beyond the limit are refused at CONNECT with 0x97 (quota
 * exceeded; 3 for 3.1.1) — a clear error the device can log.  Messages
 * beyond the rate are not refused but *throttled*: the publisher's input is
 * left unread (the back-pressure pause of broker.c), so TCP slows the device
 * down and nothing acknowledged is dropped.  The bucket holds one second's
 * worth, so a tenant can burst to its rate and no further.
 *
 * The hot path for a namespaced publisher is one hash lookup of the
 * namespace (a short string) when the broker has any quota record at all;
 * global clients never get here.
 */
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"

ns_quota *quota_get(drv_broker *b, const char *ns, size_t len, bool create)
{
    uint64_t h = drv_hash_bytes(ns, len, 0);
    ns_quota *q = (ns_quota *)drv_hmap_get(&b->quotas, h, ns, (uint32_t)len);
    if (q || !create)
        return q;
    q = drv_calloc(1, sizeof(*q) + len + 1);
    if (!q)
        return NULL;
    memcpy(q->ns, ns, len);
    q->h.hash = h;
    q->h.key = q->ns;
    q->h.klen = (uint32_t)len;
    if (drv_hmap_put(&b->quotas, &q->h) != DRV_OK) {
        drv_free(q);
        return NULL;
    }
    return q;
}

void quota_conn_gone(drv_broker *b, const session *s)
{
    if (!s->ns_len)
        return;
    ns_quota *q = quota_get(b, session_ns(s), s->ns_len, false);
    if (q && q->connections > 0)
        q->connections--;
}

bool quota_allow_publish(drv_broker *b, const session *s, uint64_t now_ms)
{
    if (!s->ns_len || b->quotas.count == 0)
        return true;
    ns_quota *q = quota_get(b, session_ns(s), s->ns_len, false);
    if (!q || q->rate == 0)
        return true;
    if (now_ms > q->at_ms) {
        q->tokens += (double)(now_ms - q->at_ms) * q->rate / 1000.0;
        if (q->tokens > q->rate)
            q->tokens = q->rate;
        q->at_ms = now_ms;
    }
    if (q->tokens >= 1.0) {
        q->tokens -= 1.0;
        return true;
    }
    q->throttled++;
    return false;
}

void drv_broker_ns_stats_each(drv_broker *b, void (*fn)(void *ud, const drv_broker_ns_stats *st),
                              void *ud)
{
    pthread_mutex_lock(&b->lock);
    size_t bk;
    for (drv_hnode *h = drv_hmap_first(&b->quotas, &bk); h; h = drv_hmap_next(&b->quotas, h, &bk)) {
        const ns_quota *q = (const ns_quota *)h;
        drv_broker_ns_stats st = {q->ns,   q->connections, q->max_connections,
                                  q->rate, q->throttled,   q->refused};
        fn(ud, &st);
    }
    pthread_mutex_unlock(&b->lock);
}

void quota_free_all(drv_broker *b)
{
    size_t bk;
    for (drv_hnode *h = drv_hmap_first(&b->quotas, &bk), *n; h; h = n) {
        n = drv_hmap_next(&b->quotas, h, &bk);
        drv_free(h);
    }
    drv_hmap_free(&b->quotas);
}
