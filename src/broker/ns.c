/*
 * ns.c — tenant namespaces ("mount points", ADR-0009): which namespaces are
 * valid, and the mapping between the topics a client sees and the broker's
 * internal topics.
 *
 * A namespaced client's topics are stored, routed, retained and logged as
 * "<ns>/<topic as the client sent it>", ns being "$T/<tenant>".  Because the
 * first level starts with '$', no wildcard at the first level of a global
 * filter matches them (§4.7.2), and because the broker adds the prefix
 * itself a namespaced client cannot name anything outside its namespace.  A
 * delivery strips the prefix by pointing past it (conn_send_publish): the
 * message is shared by every subscriber, so it is never rewritten.
 *
 * Invariants kept here and in the handlers:
 *   - a namespace is "$T/" plus one level, so none is a prefix of another;
 *   - every internal topic under "$T/<tenant>/" has a non-empty rest that does
 *     not start with '$' (a namespaced client's own '$' topics are refused,
 *     and so are a global client's publishes that would break this), so the
 *     stripped topic is always a valid name the client could have used;
 *   - internal topics and filters fit in 65,535 bytes (a msg's topic_len and
 *     the log's string fields are 16-bit).
 */
#include <string.h>

#include "broker/broker_int.h"
#include "core/alloc.h"

bool drv_auth_ns_valid(const char *ns, size_t len)
{
    if (len <= NS_ROOT_LEN || len > DRV_AUTH_NS_MAX || memcmp(ns, NS_ROOT, NS_ROOT_LEN) != 0)
        return false;
    const uint8_t *lvl = (const uint8_t *)ns + NS_ROOT_LEN;
    size_t n = len - NS_ROOT_LEN;
    return !memchr(lvl, '/', n) && !memchr(lvl, '+', n) && !memchr(lvl, '#', n) &&
           mqtt_utf8_valid(lvl, n);
}

bool ns_global_topic_ok(const uint8_t *t, size_t len)
{
    if (len < NS_ROOT_LEN || memcmp(t, NS_ROOT, NS_ROOT_LEN) != 0)
        return true; /* not under any namespace */
    const uint8_t *slash = memchr(t + NS_ROOT_LEN, '/', len - NS_ROOT_LEN);
    if (!slash || slash == t + NS_ROOT_LEN)
        return false; /* "$T/<tenant>" itself, or an empty tenant */
    size_t rest = len - (size_t)(slash + 1 - t);
    return rest > 0 && slash[1] != '$';
}

char *ns_internal_filter(const session *s, const uint8_t *f, size_t len, char *buf, size_t cap,
                         size_t *out_len)
{
    const char *ns = session_ns(s);
    size_t ns_len = s->ns_len;
    mqtt_bytes group = {0}, real = {f, (uint32_t)len};
    bool share_ok = false;
    bool shared = ns_len && mqtt_shared_split(f, len, &group, &real, &share_ok) && share_ok;
    /* "$share/<group>/" stays in front: the group is then per namespace. */
    size_t head = shared ? (size_t)(real.p - f) : 0;
    size_t need = len + (ns_len ? ns_len + 1 : 0);
    *out_len = need;
    if (need > 65535)
        return NULL;
    char *out = need < cap ? buf : drv_malloc(need + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    memcpy(out, f, head);
    n += head;
    if (ns_len) {
        memcpy(out + n, ns, ns_len);
        n += ns_len;
        out[n++] = '/';
    }
    memcpy(out + n, f + head, len - head);
    n += len - head;
    out[n] = '\0';
    return out;
}
