/*
 * hub.c — the live hub's thread: the inbox other threads fill (bus batches,
 * SSE subscriptions and connections handed over), the subscription index,
 * delivery of each event to the subscriptions it matches, and /metrics.
 * Connections themselves are in hub_conn.c.
 *
 * Delivery cost: an event is matched by two hash lookups (tenant, then
 * device) plus the tenant's whole-tenant subscriptions; its JSON is written
 * once and copied into each matching connection's output (a subscription
 * with a key filter gets its own copy).  Output is written once per turn,
 * after the whole inbox has been delivered.
 */
#include "live/hub_int.h"

#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/jsonw.h"
#include "core/log.h"

#define BATCH_MSG_MIN (64u << 10)
#define PREPARE_WAIT_S 5
#define REFRESH_PER_TICK 20 /* group/tag resolutions per second, at most */
#define BODY_CAP (1u << 20)

/* ------------------------------------------------------------------------ */
/* Filters                                                                   */

void drv_hub_filter_free(drv_hub_filter *f)
{
    for (uint32_t i = 0; f->devices && i < f->ndevices; i++)
        drv_free(f->devices[i]);
    drv_free(f->devices);
    f->devices = NULL;
    f->ndevices = 0;
}

static void devices_free(char **devices, uint32_t n)
{
    for (uint32_t i = 0; devices && i < n; i++)
        drv_free(devices[i]);
    drv_free(devices);
}

static void filter_free(hub_filter *f)
{
    devices_free(f->devices, f->ndevices);
    f->devices = NULL;
    f->ndevices = 0;
    drv_free(f->words);
    f->words = NULL;
}

/* The compact copy of src (devices moved in only when take_devices).
 * false when out of memory. */
static bool filter_copy(hub_filter *dst, const drv_hub_filter *src)
{
    memset(dst, 0, sizeof(*dst));
    memcpy(dst->tenant, src->tenant, sizeof(dst->tenant));
    dst->all_devices = src->all_devices;
    size_t n = strlen(src->group) + strlen(src->tag) + 2;
    for (uint32_t i = 0; i < src->ntypes; i++)
        n += strlen(src->types[i]) + 1;
    for (uint32_t i = 0; i < src->nkeys; i++)
        n += strlen(src->keys[i]) + 1;
    char *w = dst->words = drv_malloc(n);
    if (!w)
        return false;
    for (uint32_t i = 0; i < src->ntypes; i++)
        w = stpcpy(w, src->types[i]) + 1;
    for (uint32_t i = 0; i < src->nkeys; i++)
        w = stpcpy(w, src->keys[i]) + 1;
    dst->group = w;
    w = stpcpy(w, src->group) + 1;
    dst->tag = w;
    stpcpy(w, src->tag);
    dst->ntypes = (uint16_t)src->ntypes;
    dst->nkeys = (uint16_t)src->nkeys;
    if (src->ndevices == 0)
        return true;
    dst->devices = drv_calloc(src->ndevices, sizeof(char *));
    if (!dst->devices) {
        filter_free(dst);
        return false;
    }
    for (uint32_t i = 0; i < src->ndevices; i++) {
        dst->devices[i] = drv_strdup(src->devices[i]);
        if (!dst->devices[i]) {
            filter_free(dst);
            return false;
        }
        dst->ndevices = i + 1;
    }
    return true;
}

static bool type_match(const hub_filter *f, const char *type, size_t tn)
{
    const char *p = f->words;
    for (uint32_t i = 0; i < f->ntypes; i++, p += strlen(p) + 1) {
        size_t n = strlen(p);
        if (n >= 2 && p[n - 1] == '*' && p[n - 2] == '.') {
            if (tn > n - 1 && memcmp(type, p, n - 1) == 0)
                return true;
        } else if (n == tn && memcmp(type, p, n) == 0) {
            return true;
        }
    }
    return false;
}

static bool key_wanted(const hub_filter *f, drv_span key)
{
    const char *p = f->words;
    for (uint32_t i = 0; i < f->ntypes; i++)
        p += strlen(p) + 1;
    for (uint32_t i = 0; i < f->nkeys; i++, p += strlen(p) + 1)
        if (strlen(p) == key.n && memcmp(p, key.p, key.n) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* The index                                                                 */

static hub_tenant *tenant_get(drv_hub *hub, const char *name, size_t n, bool create)
{
    uint64_t h = drv_hash_bytes(name, n, 0);
    drv_hnode *node = drv_hmap_get(&hub->tenants, h, name, (uint32_t)n);
    if (node || !create)
        return (hub_tenant *)node;
    if (n >= sizeof(((hub_tenant *)0)->name))
        return NULL;
    hub_tenant *t = drv_calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    memcpy(t->name, name, n);
    t->node.hash = h;
    t->node.key = t->name;
    t->node.klen = (uint32_t)n;
    drv_hmap_init(&t->devices);
    if (drv_hmap_put(&hub->tenants, &t->node) != DRV_OK) {
        drv_free(t);
        return NULL;
    }
    pthread_mutex_lock(&hub->stats_lock);
    t->next_stat = hub->stat_list;
    hub->stat_list = t;
    pthread_mutex_unlock(&hub->stats_lock);
    return t;
}

static bool list_add(hub_sub ***list, uint32_t *n, uint32_t *cap, hub_sub *s)
{
    if (*n == *cap) {
        uint32_t nc = *cap ? *cap * 2 : 4;
        hub_sub **l = drv_realloc(*list, nc * sizeof(*l));
        if (!l)
            return false;
        *list = l;
        *cap = nc;
    }
    (*list)[(*n)++] = s;
    return true;
}

static void list_del(hub_sub **list, uint32_t *n, hub_sub *s)
{
    for (uint32_t i = 0; i < *n; i++) {
        if (list[i] == s) {
            list[i] = list[--*n];
            return;
        }
    }
}

static hub_device *device_get(hub_tenant *t, const char *name, bool create)
{
    size_t n = strlen(name);
    uint64_t h = drv_hash_bytes(name, n, 0);
    drv_hnode *node = drv_hmap_get(&t->devices, h, name, (uint32_t)n);
    if (node || !create)
        return (hub_device *)node;
    hub_device *d = drv_calloc(1, sizeof(*d) + n + 1);
    if (!d)
        return NULL;
    memcpy(d->name, name, n + 1);
    d->node.hash = h;
    d->node.key = d->name;
    d->node.klen = (uint32_t)n;
    if (drv_hmap_put(&t->devices, &d->node) != DRV_OK) {
        drv_free(d);
        return NULL;
    }
    return d;
}

static void device_drop_sub(hub_tenant *t, const char *name, hub_sub *s)
{
    hub_device *d = device_get(t, name, false);
    if (!d)
        return;
    list_del(d->subs, &d->n, s);
    if (d->n == 0) {
        drv_hmap_del(&t->devices, &d->node);
        drv_free(d->subs);
        drv_free(d);
    }
}

static void sub_unindex(hub_sub *s)
{
    if (!s->indexed)
        return;
    s->indexed = false;
    hub_tenant *t = s->t;
    if (s->f.all_devices) {
        list_del(t->all, &t->nall, s);
        return;
    }
    for (uint32_t i = 0; i < s->f.ndevices; i++)
        device_drop_sub(t, s->f.devices[i], s);
}

/* Put s in the lists of its devices.  Out of memory part way: s gets fewer
 * devices than asked (logged), never a crash. */
static void index_devices(hub_tenant *t, hub_sub *s)
{
    for (uint32_t i = 0; i < s->f.ndevices; i++) {
        hub_device *d = device_get(t, s->f.devices[i], true);
        bool there = false; /* a device named twice is one subscription */
        for (uint32_t k = 0; d && k < d->n && !there; k++)
            there = d->subs[k] == s;
        if (there)
            continue;
        if (!d || !list_add(&d->subs, &d->n, &d->cap, s)) {
            drv_warn("live: subscription device not indexed", "device", s->f.devices[i], "error",
                     drv_strerror(DRV_NOMEM));
            if (d && d->n == 0) {
                drv_hmap_del(&t->devices, &d->node);
                drv_free(d->subs);
                drv_free(d);
            }
        }
    }
}

static bool dynamic(const hub_sub *s)
{
    return !s->f.all_devices && (s->f.group[0] || s->f.tag[0]);
}

/* Put s in its tenant's lists. */
bool hub_sub_index(drv_hub *hub, hub_sub *s)
{
    hub_tenant *t = tenant_get(hub, s->f.tenant, strlen(s->f.tenant), true);
    if (!t)
        return false;
    s->t = t;
    s->counted = true;
    atomic_fetch_add_explicit(&t->subscribers, 1, memory_order_relaxed);
    if (s->f.all_devices) {
        if (!list_add(&t->all, &t->nall, &t->capall, s))
            return false;
        s->indexed = true;
        return true;
    }
    s->indexed = true;
    index_devices(t, s);
    if (dynamic(s) && hub->cfg.resolve) {
        s->refresh_at = drv_loop_now(hub->loop) + hub->cfg.membership_refresh_ms;
        list_add(&t->dynamic, &t->ndynamic, &t->capdynamic, s); /* none: static */
    }
    return true;
}

/* Resolve s's group or tag again and move it to the devices it names now. */
static void refresh_membership(drv_hub *hub, hub_sub *s)
{
    drv_hub_filter *nf = drv_calloc(1, sizeof(*nf)); /* ~6 KB: not on the stack */
    if (!nf)
        return;
    memcpy(nf->tenant, s->f.tenant, sizeof(nf->tenant));
    snprintf(nf->group, sizeof(nf->group), "%s", s->f.group);
    snprintf(nf->tag, sizeof(nf->tag), "%s", s->f.tag);
    drv_err e = hub->cfg.resolve(hub->cfg.resolve_ud, nf);
    if (e == DRV_OK || e == DRV_NOTFOUND) {
        if (s->indexed)
            for (uint32_t i = 0; i < s->f.ndevices; i++)
                device_drop_sub(s->t, s->f.devices[i], s);
        devices_free(s->f.devices, s->f.ndevices);
        s->f.devices = nf->devices; /* moved */
        s->f.ndevices = nf->ndevices;
        nf->devices = NULL;
        nf->ndevices = 0;
        if (s->indexed)
            index_devices(s->t, s);
    }
    drv_hub_filter_free(nf); /* on failure: keep the old members; try again later */
    drv_free(nf);
}

void hub_refresh_memberships(drv_hub *hub)
{
    uint64_t now = drv_loop_now(hub->loop);
    uint32_t done = 0;
    /* stat_list holds every tenant; only this thread adds to it. */
    for (hub_tenant *t = hub->stat_list; t && done < REFRESH_PER_TICK; t = t->next_stat) {
        for (uint32_t i = 0; i < t->ndynamic && done < REFRESH_PER_TICK; i++) {
            hub_sub *s = t->dynamic[i];
            if (s->refresh_at > now)
                continue;
            refresh_membership(hub, s);
            s->refresh_at = now + hub->cfg.membership_refresh_ms;
            done++;
        }
    }
}

/* A device came or went in t: its group and tag subscriptions look again
 * at the next tick. */
static void membership_changed(const hub_tenant *t)
{
    for (uint32_t i = 0; i < t->ndynamic; i++)
        t->dynamic[i]->refresh_at = 0;
}

hub_sub *hub_sub_new(drv_hub *hub, const drv_hub_filter *f)
{
    hub_sub *s = drv_calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    if (!filter_copy(&s->f, f)) {
        drv_free(s);
        return NULL;
    }
    drv_buf_init(&s->held, hub->cfg.max_buffer_bytes);
    if (hub->cfg.bus.ops) /* interest first (ADR-0016): publishers stage from here */
        hub->cfg.bus.ops->listeners_add(hub->cfg.bus.st, 1);
    return s;
}

void hub_sub_free(drv_hub *hub, hub_sub *s)
{
    if (!s)
        return;
    sub_unindex(s);
    if (s->t)
        list_del(s->t->dynamic, &s->t->ndynamic, s);
    if (s->sse)
        hub_journal_sse_end(hub);
    if (s->counted)
        atomic_fetch_sub_explicit(&s->t->subscribers, 1, memory_order_relaxed);
    if (hub->cfg.bus.ops)
        hub->cfg.bus.ops->listeners_add(hub->cfg.bus.st, -1);
    filter_free(&s->f);
    drv_buf_free(&s->held);
    drv_free(s);
}

/* ------------------------------------------------------------------------ */
/* Delivery                                                                  */

/* The event's type name ("telemetry", "device.connected", "shadow.updated") into buf. */
static size_t type_of(const drv_event_view *v, char *buf, size_t cap)
{
    int n = v->kind == DRV_EVENT_TELEMETRY ? snprintf(buf, cap, "telemetry")
            : v->kind == DRV_EVENT_TWIN
                ? snprintf(buf, cap, "%.*s", (int)v->dev_kind.n, v->dev_kind.p)
                : snprintf(buf, cap, "device.%.*s", (int)v->dev_kind.n, v->dev_kind.p);
    return n < 0 ? 0 : ((size_t)n < cap ? (size_t)n : cap - 1);
}

/* The event's JSON after its opening brace into b:
 *   "type":..,"tenant":..,"device":..,"ts":..,"values":{..}}
 * with only the keys of `keys` (NULL: all).  false when nothing is left
 * (no wanted key) or the buffer is full. */
static bool format_body(drv_buf *b, const drv_event_view *v, const char *type,
                        const hub_filter *keys)
{
    b->off = b->len = 0;
    drv_jw w = {.b = b};
    drv_jw_lit(&w, "\"type\":");
    drv_jw_cstr(&w, type);
    drv_jw_lit(&w, ",\"tenant\":");
    drv_jw_str(&w, v->tenant.p, v->tenant.n);
    drv_jw_lit(&w, ",\"device\":");
    drv_jw_str(&w, v->device.p, v->device.n);
    drv_jw_lit(&w, ",\"ts\":");
    drv_jw_i64(&w, v->ts_ms);
    if (v->kind == DRV_EVENT_TELEMETRY) {
        drv_jw_lit(&w, ",\"values\":{");
        size_t off = 0, k = 0;
        drv_sample s;
        while (drv_event_sample(v, &off, &s)) {
            if (keys && !key_wanted(keys, s.key))
                continue;
            if (k++)
                drv_jw_lit(&w, ",");
            drv_jw_str(&w, s.key.p, s.key.n);
            drv_jw_lit(&w, ":");
            drv_jw_value(&w, &s.v);
        }
        if (k == 0)
            return false;
        drv_jw_lit(&w, "}}");
    } else {
        if (v->kind == DRV_EVENT_DEVICE) { /* TWIN events have no row id */
            drv_jw_lit(&w, ",\"id\":");
            drv_jw_i64(&w, v->id);
        }
        drv_jw_lit(&w, ",\"detail\":");
        if (v->detail.n == 0) {
            drv_jw_lit(&w, "{}");
        } else {
            size_t at = b->len;
            drv_jw_raw(&w, v->detail.p, v->detail.n);
            /* JSON text from the registry is compact, but a line break
             * between tokens would end an SSE data line: make it a space. */
            for (size_t i = at; !w.failed && i < b->len; i++)
                if (b->data[i] == '\n' || b->data[i] == '\r')
                    b->data[i] = ' ';
        }
        drv_jw_lit(&w, "}");
    }
    return !w.failed;
}

/* One event's delivery state: its view and its shared JSON (lazily). */
typedef struct delivery {
    const drv_event_view *v;
    uint64_t seq; /* journal sequence number (0: none, a replay by time) */
    char type[80];
    size_t type_n;
    bool body_done, body_ok;
} delivery;

static void send_event(drv_hub *hub, hub_sub *s, delivery *d)
{
    hub_conn *c = s->c;
    hub_tenant *t = s->t;
    if (c->state != HC_OPEN) {
        atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
        return;
    }
    const drv_buf *body;
    if (s->f.nkeys && d->v->kind == DRV_EVENT_TELEMETRY) {
        if (!format_body(&hub->kbody, d->v, d->type, &s->f))
            return; /* none of its keys */
        body = &hub->kbody;
    } else {
        if (!d->body_done) {
            d->body_ok = format_body(&hub->body, d->v, d->type, NULL);
            d->body_done = true;
        }
        if (!d->body_ok)
            return;
        body = &hub->body;
    }
    size_t bn = drv_buf_avail(body);
    char head[160];
    int hn;
    if (c->transport == DRV_HUB_WEBSOCKET) {
        /* {"sub":"<id>", + body: the id is checked printable ASCII without quotes. */
        char pre[DRV_HUB_SUB_ID_MAX + 16];
        int pn = snprintf(pre, sizeof(pre), "{\"sub\":\"%s\",", s->id);
        uint8_t fh[10];
        size_t fn = drv_ws_frame_header(fh, DRV_WSF_TEXT, (uint64_t)pn + bn);
        if (!hub_conn_send(c, fh, fn, (size_t)pn + bn))
            goto dropped;
        drv_buf_append(&c->out, pre, (size_t)pn); /* reserved by hub_conn_send */
    } else {
        /* The cursor T.E.S (docs/stream.md): newest sample time, newest
         * device-event row, journal position of the last telemetry event. */
        int64_t nt = c->cur_t, ne = c->cur_e;
        uint64_t ns = c->cur_s;
        if (d->v->kind == DRV_EVENT_TELEMETRY && d->v->ts_ms > nt)
            nt = d->v->ts_ms;
        if (d->v->kind == DRV_EVENT_TELEMETRY && d->seq > ns)
            ns = d->seq;
        if (d->v->kind == DRV_EVENT_DEVICE && d->v->id > ne)
            ne = d->v->id;
        hn = snprintf(head, sizeof(head), "id: %lld.%lld.%llu\nevent: %s\ndata: {", (long long)nt,
                      (long long)ne, (unsigned long long)ns, d->type);
        if (hn < 0 || (size_t)hn >= sizeof(head) || !hub_conn_send(c, head, (size_t)hn, bn + 2))
            goto dropped;
        c->cur_t = nt;
        c->cur_e = ne;
        c->cur_s = ns;
    }
    drv_buf_append(&c->out, body->data + body->off, bn); /* reserved by hub_conn_send */
    if (c->transport == DRV_HUB_SSE)
        drv_buf_append(&c->out, "\n\n", 2);
    atomic_fetch_add_explicit(&t->delivered, 1, memory_order_relaxed);
    return;
dropped:
    atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
}

/* Hold a record for a pending subscription (its replay is being read). */
static void hold(hub_sub *s, uint64_t seq, const uint8_t *rec, size_t n)
{
    if (s->held_overflow)
        return;
    if (drv_buf_append(&s->held, &seq, sizeof(seq)) != DRV_OK ||
        drv_buf_append(&s->held, rec, n) != DRV_OK) {
        s->held_overflow = true;
        drv_buf_free(&s->held);
    }
}

static void route_to(drv_hub *hub, hub_sub *s, delivery *d, const uint8_t *rec, size_t n)
{
    if (!type_match(&s->f, d->type, d->type_n))
        return;
    if (!s->c)
        hold(s, d->seq, rec, n);
    else
        send_event(hub, s, d);
}

/* Deliver one record to every subscription it matches. */
static void route(drv_hub *hub, const drv_event_view *v, uint64_t seq, const uint8_t *rec, size_t n)
{
    hub_tenant *t =
        v->kind == DRV_EVENT_GAP ? NULL : tenant_get(hub, v->tenant.p, v->tenant.n, false);
    if (!t)
        return;
    delivery d = {.v = v, .seq = seq};
    d.type_n = type_of(v, d.type, sizeof(d.type));
    if (v->kind == DRV_EVENT_DEVICE &&
        (drv_span_eq(v->dev_kind, "provisioned") || drv_span_eq(v->dev_kind, "decommissioned")))
        membership_changed(t);
    for (uint32_t i = 0; i < t->nall; i++)
        route_to(hub, t->all[i], &d, rec, n);
    if (t->devices.count == 0)
        return;
    char dev[256]; /* a record's device is at most 255 bytes */
    if (v->device.n >= sizeof(dev))
        return;
    memcpy(dev, v->device.p, v->device.n);
    dev[v->device.n] = '\0';
    hub_device *hd = device_get(t, dev, false);
    for (uint32_t i = 0; hd && i < hd->n; i++)
        route_to(hub, hd->subs[i], &d, rec, n);
}

/* Walk a batch of records: number and journal them (one lock per batch),
 * then route each. */
static void route_batch(drv_hub *hub, const uint8_t *p, size_t n)
{
    size_t off = 0, start = 0;
    drv_event_view v;
    pthread_mutex_lock(&hub->jlock);
    uint64_t first = atomic_load(&hub->next_seq), seq = first;
    if (atomic_exchange(&hub->lost, false))
        hub->jfloor = first; /* a batch was lost before this one */
    while (drv_event_next(p, n, &off, &v)) {
        if (v.kind == DRV_EVENT_TELEMETRY)
            hub_journal_add(hub, seq, &v);
        else if (v.kind == DRV_EVENT_GAP)
            hub->jfloor = seq; /* the producer lost events before this point */
        seq++;
    }
    atomic_store(&hub->next_seq, seq);
    pthread_mutex_unlock(&hub->jlock);
    if (off != n)
        drv_warn("live: malformed event batch, rest dropped");
    size_t end = off;
    off = 0;
    seq = first;
    while (off < end && drv_event_next(p, end, &off, &v)) {
        route(hub, &v, seq++, p + start, off - start);
        start = off;
    }
}

/* The next item of a replay or held buffer: sequence number, then record. */
static bool next_item(const uint8_t *p, size_t n, size_t *off, uint64_t *seq, drv_event_view *v)
{
    if (*off > n || n - *off < sizeof(*seq))
        return false;
    memcpy(seq, p + *off, sizeof(*seq));
    size_t o = *off + sizeof(*seq);
    if (!drv_event_next(p, n, &o, v))
        return false;
    *off = o;
    return true;
}

/* A telemetry event's (device, time) as one number, for the seam. */
static uint64_t seam_key(const drv_event_view *v)
{
    uint64_t th;
    uint64_t h = hub_hash_device(v->tenant, v->device, &th);
    return (h * 0x9e3779b97f4a7c15ull) ^ (uint64_t)v->ts_ms;
}

static int cmp_key(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void hub_deliver_replay(drv_hub *hub, hub_sub *s, const uint8_t *p, size_t n)
{
    hub_conn *c = s->c;
    size_t off = 0, nkeys = 0, cap = 0;
    uint64_t seq;
    drv_event_view v;
    c->replaying = true; /* the replay may be larger than the buffer's cap */
    while (c->state == HC_OPEN && next_item(p, n, &off, &seq, &v)) {
        delivery d = {.v = &v, .seq = seq};
        d.type_n = type_of(&v, d.type, sizeof(d.type));
        if (type_match(&s->f, d.type, d.type_n))
            send_event(hub, s, &d);
        if (v.kind != DRV_EVENT_TELEMETRY)
            continue;
        if (nkeys == cap) { /* out of memory: the seam may repeat an event */
            size_t nc = cap ? cap * 2 : 256;
            uint64_t *k = drv_realloc(c->seam_keys, nc * sizeof(*k));
            if (!k)
                continue;
            c->seam_keys = k;
            cap = nc;
        }
        c->seam_keys[nkeys++] = seam_key(&v);
    }
    c->replaying = false;
    c->nseam_keys = nkeys;
    if (nkeys)
        qsort(c->seam_keys, nkeys, sizeof(*c->seam_keys), cmp_key);
}

void hub_deliver_held(drv_hub *hub, hub_sub *s, int64_t seam_e, uint64_t seam_s)
{
    hub_conn *c = s->c;
    size_t n = drv_buf_avail(&s->held), off = 0;
    const uint8_t *p = n ? s->held.data + s->held.off : NULL;
    uint64_t seq;
    drv_event_view v;
    while (n && c->state == HC_OPEN && next_item(p, n, &off, &seq, &v)) {
        /* What the replay already sent (ADR-0016: the seam): up to the
         * journal position it read, or, replaying by time, the same
         * (device, time) — the engine holds one set of samples per time. */
        uint64_t key = v.kind == DRV_EVENT_TELEMETRY && !seam_s ? seam_key(&v) : 0;
        if (v.kind == DRV_EVENT_TELEMETRY &&
            (seam_s ? seq <= seam_s
                    : c->nseam_keys &&
                          bsearch(&key, c->seam_keys, c->nseam_keys, sizeof(key), cmp_key)))
            continue;
        if (v.kind == DRV_EVENT_DEVICE && v.id <= seam_e)
            continue;
        delivery d = {.v = &v, .seq = seq};
        d.type_n = type_of(&v, d.type, sizeof(d.type));
        if (type_match(&s->f, d.type, d.type_n))
            send_event(hub, s, &d);
    }
    drv_buf_free(&s->held);
}

/* ------------------------------------------------------------------------ */
/* The inbox                                                                 */

static void wake(drv_hub *hub)
{
    uint64_t one = 1;
    ssize_t r = write(hub->wake_fd, &one, sizeof(one));
    (void)r; /* fails only when the counter is saturated: still readable */
}

/* Queue m (any thread); false when the hub is stopping (m not taken). */
static bool post(drv_hub *hub, hub_msg *m)
{
    pthread_mutex_lock(&hub->lock);
    bool ok = !hub->stopping;
    bool was_empty = hub->inbox == NULL;
    if (ok) {
        m->next = NULL;
        if (hub->inbox_tail)
            hub->inbox_tail->next = m;
        else
            hub->inbox = m;
        hub->inbox_tail = m;
    }
    pthread_mutex_unlock(&hub->lock);
    if (ok && was_empty)
        wake(hub);
    return ok;
}

/* The bus sink: copy the batch into the inbox (the tail batch when it has
 * room: one allocation per burst, not per publish). */
static void on_batch(void *ud, const uint8_t *batch, size_t n)
{
    drv_hub *hub = ud;
    if (n == 0)
        return;
    pthread_mutex_lock(&hub->lock);
    hub_msg *tail = hub->inbox_tail;
    if (!hub->stopping && tail && tail->kind == HMSG_BATCH && tail->cap - tail->len >= n) {
        memcpy(tail->data + tail->len, batch, n);
        tail->len += n;
        pthread_mutex_unlock(&hub->lock);
        return; /* the hub was woken for the tail already */
    }
    pthread_mutex_unlock(&hub->lock);
    size_t cap = n > BATCH_MSG_MIN ? n : BATCH_MSG_MIN;
    hub_msg *m = drv_malloc(sizeof(*m) + cap);
    if (!m) {
        atomic_fetch_add_explicit(&hub->refused, 1, memory_order_relaxed);
        atomic_store(&hub->lost, true); /* the journal cannot vouch across this */
        return;
    }
    memset(m, 0, sizeof(*m));
    m->kind = HMSG_BATCH;
    m->cap = cap;
    m->len = n;
    memcpy(m->data, batch, n);
    if (!post(hub, m))
        drv_free(m);
}

bool drv_hub_full(drv_hub *hub)
{
    uint64_t open =
        atomic_load_explicit(&hub->connections[DRV_HUB_WEBSOCKET], memory_order_relaxed) +
        atomic_load_explicit(&hub->connections[DRV_HUB_SSE], memory_order_relaxed);
    return open >= hub->cfg.max_connections;
}

drv_hub_pending *drv_hub_prepare(drv_hub *hub, const drv_hub_filter *f, uint64_t *start_seq)
{
    *start_seq = 0;
    if (drv_hub_full(hub))
        return NULL;
    hub_msg *m = drv_calloc(1, sizeof(*m));
    hub_sub *s = m ? hub_sub_new(hub, f) : NULL;
    if (!s) {
        drv_free(m);
        return NULL;
    }
    m->kind = HMSG_PREPARE;
    m->sub = s;
    if (!post(hub, m)) {
        hub_sub_free(hub, s); /* releases the listener */
        drv_free(m);
        return NULL;
    }
    /* Wait for the hub to take it: every batch queued before it has then
     * been journaled, so the replay's journal read sees them (ADR-0016). */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += PREPARE_WAIT_S;
    pthread_mutex_lock(&hub->lock);
    while (!s->prepared && !hub->stopping &&
           pthread_cond_timedwait(&hub->prepared, &hub->lock, &until) == 0)
        ;
    bool ok = s->prepared;
    *start_seq = s->start_seq;
    pthread_mutex_unlock(&hub->lock);
    if (!ok) {
        drv_hub_cancel(hub, (drv_hub_pending *)s);
        return NULL;
    }
    return (drv_hub_pending *)s;
}

void drv_hub_cancel(drv_hub *hub, drv_hub_pending *p)
{
    if (!p)
        return;
    hub_msg *m = drv_calloc(1, sizeof(*m));
    if (!m) {
        drv_warn("live: a cancelled subscription stays until shutdown", "error",
                 drv_strerror(DRV_NOMEM));
        return;
    }
    m->kind = HMSG_CANCEL;
    m->sub = (hub_sub *)p;
    if (!post(hub, m))
        drv_free(m); /* stopping: drv_hub_stop frees every subscription */
}

drv_err drv_hub_attach(drv_hub *hub, const drv_hub_conn_init *in)
{
    hub_msg *m = drv_malloc(sizeof(*m) + in->npre + in->ninitial + in->nreplay);
    if (!m) {
        if (in->st)
            drv_stream_free(in->st, 0);
        close(in->fd);
        drv_hub_cancel(hub, in->pending);
        return DRV_NOMEM;
    }
    memset(m, 0, sizeof(*m));
    m->kind = HMSG_ATTACH;
    m->init = *in;
    m->sub = (hub_sub *)in->pending;
    uint8_t *p = m->data;

    if (in->npre)
        memcpy(p, in->pre, in->npre);
    m->init.pre = p;
    p += in->npre;
    if (in->ninitial)
        memcpy(p, in->initial, in->ninitial);
    m->init.initial = p;
    p += in->ninitial;
    if (in->nreplay)
        memcpy(p, in->replay, in->nreplay);
    m->init.replay = p;
    if (!post(hub, m)) {
        if (in->st)
            drv_stream_free(in->st, 0);
        close(in->fd);
        drv_free(m);
        return DRV_CLOSED;
    }
    return DRV_OK;
}

static void take_message(drv_hub *hub, hub_msg *m)
{
    switch (m->kind) {
    case HMSG_BATCH:
        route_batch(hub, m->data, m->len);
        break;
    case HMSG_PREPARE:
        m->sub->sse = true;
        hub_journal_sse_begin(hub);
        if (!hub_sub_index(hub, m->sub))
            m->sub->held_overflow = true; /* cannot hold: the stream starts with a reset */
        pthread_mutex_lock(&hub->lock);
        m->sub->start_seq = atomic_load(&hub->next_seq) - 1;
        m->sub->prepared = true;
        pthread_cond_broadcast(&hub->prepared);
        pthread_mutex_unlock(&hub->lock);
        break;
    case HMSG_CANCEL:
        hub_sub_free(hub, m->sub);
        break;
    case HMSG_ATTACH:
        hub_conn_open(hub, m);
        break;
    }
}

static void on_wake(void *ud, uint32_t events)
{
    drv_hub *hub = ud;
    uint64_t v;
    (void)events;
    ssize_t r = read(hub->wake_fd, &v, sizeof(v));
    (void)r;
    pthread_mutex_lock(&hub->lock);
    bool stop = hub->stopping;
    hub_msg *q = hub->inbox;
    hub->inbox = hub->inbox_tail = NULL;
    pthread_mutex_unlock(&hub->lock);
    while (q) {
        hub_msg *next = q->next;
        if (!stop)
            take_message(hub, q);
        else if (q->kind == HMSG_PREPARE || q->kind == HMSG_CANCEL)
            hub_sub_free(hub, q->sub);
        else if (q->kind == HMSG_ATTACH) {
            if (q->init.st)
                drv_stream_free(q->init.st, 0);
            close(q->init.fd);
            hub_sub_free(hub, q->sub);
        }
        drv_free(q);
        q = next;
    }
    if (stop)
        drv_loop_stop(hub->loop);
}

void hub_mark_dirty(hub_conn *c)
{
    if (c->dirty || c->dead)
        return;
    c->dirty = true;
    c->dirty_next = c->hub->dirty;
    c->hub->dirty = c;
}

static void on_turn_end(void *ud)
{
    drv_hub *hub = ud;
    hub_conn *c = hub->dirty;
    hub->dirty = NULL;
    while (c) {
        hub_conn *next = c->dirty_next;
        c->dirty = false;
        if (!c->dead)
            hub_conn_flush(c);
        c = next;
    }
    hub_conns_free_dead(hub);
}

/* ------------------------------------------------------------------------ */
/* Start, stop, metrics                                                      */

static void *hub_main(void *arg)
{
    drv_hub *hub = arg;
    drv_loop_run(hub->loop, false);
    return NULL;
}

drv_err drv_hub_start(const drv_hub_config *cfg, drv_hub **out)
{
    if (!cfg || !out)
        return DRV_INVAL;
    drv_hub *hub = drv_calloc(1, sizeof(*hub));
    if (!hub)
        return DRV_NOMEM;
    hub->cfg = *cfg;
    if (!hub->cfg.max_connections)
        hub->cfg.max_connections = 10000;
    if (!hub->cfg.max_buffer_bytes)
        hub->cfg.max_buffer_bytes = 1u << 20;
    if (!hub->cfg.heartbeat_ms)
        hub->cfg.heartbeat_ms = 20000;
    if (!hub->cfg.membership_refresh_ms)
        hub->cfg.membership_refresh_ms = 30000;
    hub->wake_fd = -1;
    drv_hmap_init(&hub->tenants);
    drv_buf_init(&hub->body, BODY_CAP);
    drv_buf_init(&hub->kbody, BODY_CAP);
    drv_err e = DRV_NOMEM;
    if (pthread_mutex_init(&hub->lock, NULL) != 0)
        goto out_free;
    if (pthread_cond_init(&hub->prepared, NULL) != 0)
        goto out_lock;
    if (pthread_mutex_init(&hub->stats_lock, NULL) != 0) {
        pthread_cond_destroy(&hub->prepared);
        goto out_lock;
    }
    e = drv_loop_new(&hub->loop);
    if (e != DRV_OK)
        goto out_stats;
    e = drv_eventfd(&hub->wake_fd);
    if (e != DRV_OK)
        goto out_loop;
    hub->wake_io.fd = hub->wake_fd;
    hub->wake_io.cb = on_wake;
    hub->wake_io.ud = hub;
    e = drv_loop_add(hub->loop, &hub->wake_io, DRV_EV_READ);
    if (e != DRV_OK)
        goto out_eventfd;
    drv_loop_set_turn_end(hub->loop, on_turn_end, hub);
    e = hub_journal_init(hub);
    if (e != DRV_OK)
        goto out_del;
    if (hub->cfg.bus.ops) {
        e = hub->cfg.bus.ops->attach(hub->cfg.bus.st, on_batch, hub);
        if (e != DRV_OK)
            goto out_del;
    }
    /* No signals here: SIGINT/SIGTERM belong to the main loop's signalfd. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&hub->thread, NULL, hub_main, hub);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        e = DRV_NOMEM;
        goto out_del;
    }
    hub->thread_started = true;
    *out = hub;
    return DRV_OK;
out_del:
    drv_loop_del(hub->loop, &hub->wake_io);
out_eventfd:
    close(hub->wake_fd);
out_loop:
    drv_loop_free(hub->loop);
out_stats:
    pthread_mutex_destroy(&hub->stats_lock);
    pthread_cond_destroy(&hub->prepared);
out_lock:
    pthread_mutex_destroy(&hub->lock);
out_free:
    drv_buf_free(&hub->body);
    drv_buf_free(&hub->kbody);
    drv_free(hub);
    return e;
}

void drv_hub_stop(drv_hub *hub)
{
    if (!hub)
        return;
    /* Connections get their goodbye on the hub's thread first. */
    pthread_mutex_lock(&hub->lock);
    hub->stopping = true;
    pthread_cond_broadcast(&hub->prepared);
    pthread_mutex_unlock(&hub->lock);
    wake(hub);
    if (hub->thread_started)
        pthread_join(hub->thread, NULL);
    while (hub->conns) {
        hub_conn *c = hub->conns; /* a flush may close it: keep hold of this one */
        hub_conn_finish(c, 1001, NULL, NULL);
        hub_conn_flush(c);
        hub_conn_close(c);
    }
    hub_conns_free_dead(hub);
    /* Pending subscriptions nobody attached (their messages were freed). */
    size_t bk;
    for (drv_hnode *n = drv_hmap_first(&hub->tenants, &bk), *nx; n; n = nx) {
        nx = drv_hmap_next(&hub->tenants, n, &bk);
        hub_tenant *t = (hub_tenant *)n;
        while (t->nall)
            hub_sub_free(hub, t->all[0]);
        size_t db;
        for (drv_hnode *dn = drv_hmap_first(&t->devices, &db); dn;
             dn = drv_hmap_first(&t->devices, &db)) {
            hub_device *d = (hub_device *)dn;
            hub_sub_free(hub, d->subs[0]); /* frees d when it was the last */
        }
        drv_hmap_free(&t->devices);
        drv_free(t->all);
        drv_free(t->dynamic);
    }
    for (hub_tenant *t = hub->stat_list, *nx; t; t = nx) {
        nx = t->next_stat;
        drv_free(t);
    }
    drv_hmap_free(&hub->tenants);
    hub_journal_free(hub);
    drv_loop_del(hub->loop, &hub->wake_io);
    close(hub->wake_fd);
    drv_loop_free(hub->loop);
    pthread_mutex_destroy(&hub->lock);
    pthread_cond_destroy(&hub->prepared);
    pthread_mutex_destroy(&hub->stats_lock);
    drv_buf_free(&hub->body);
    drv_buf_free(&hub->kbody);
    drv_free(hub);
}

static drv_err putf(drv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static drv_err putf(drv_buf *b, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line))
        return DRV_TOOBIG;
    return drv_buf_append(b, line, (size_t)n);
}

drv_err drv_hub_metrics(drv_hub *hub, drv_buf *b)
{
    drv_bus_stats bs;
    drv_bus_get_stats(&bs);
#define LOAD(x) ((unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed))
    drv_err e = putf(b,
                     "# HELP drover_stream_connections Live-stream connections open.\n"
                     "# TYPE drover_stream_connections gauge\n"
                     "drover_stream_connections{transport=\"websocket\"} %llu\n"
                     "drover_stream_connections{transport=\"sse\"} %llu\n"
                     "# HELP drover_stream_connections_total Live-stream connections taken over.\n"
                     "# TYPE drover_stream_connections_total counter\n"
                     "drover_stream_connections_total %llu\n",
                     LOAD(hub->connections[DRV_HUB_WEBSOCKET]), LOAD(hub->connections[DRV_HUB_SSE]),
                     LOAD(hub->connections_total));
    if (e == DRV_OK)
        e = putf(b,
                 "# HELP drover_stream_slow_consumers_total Stream connections dropped as slow "
                 "consumers.\n# TYPE drover_stream_slow_consumers_total counter\n"
                 "drover_stream_slow_consumers_total %llu\n",
                 LOAD(hub->slow_consumers));
    if (e == DRV_OK)
        e = putf(b,
                 "# HELP drover_stream_bus_events_total Events published on the event bus.\n"
                 "# TYPE drover_stream_bus_events_total counter\n"
                 "drover_stream_bus_events_total %llu\n"
                 "# HELP drover_stream_bus_events_dropped_total Events the bus could not carry.\n"
                 "# TYPE drover_stream_bus_events_dropped_total counter\n"
                 "drover_stream_bus_events_dropped_total %llu\n",
                 (unsigned long long)bs.events,
                 (unsigned long long)(bs.dropped + LOAD(hub->refused)));
    static const struct {
        const char *name, *type, *help;
        size_t field;
    } per_tenant[] = {
        {"drover_stream_subscribers", "gauge", "Live-stream subscriptions.",
         offsetof(hub_tenant, subscribers)},
        {"drover_stream_events_delivered_total", "counter", "Events written to stream clients.",
         offsetof(hub_tenant, delivered)},
        {"drover_stream_events_dropped_total", "counter",
         "Events not delivered because their client was dropped as a slow consumer.",
         offsetof(hub_tenant, dropped)},
    };
    pthread_mutex_lock(&hub->stats_lock);
    for (size_t i = 0; e == DRV_OK && i < sizeof(per_tenant) / sizeof(per_tenant[0]); i++) {
        e = putf(b, "# HELP %s %s\n# TYPE %s %s\n", per_tenant[i].name, per_tenant[i].help,
                 per_tenant[i].name, per_tenant[i].type);
        for (hub_tenant *t = hub->stat_list; e == DRV_OK && t; t = t->next_stat) {
            atomic_uint_fast64_t *a = (atomic_uint_fast64_t *)((char *)t + per_tenant[i].field);
            e = putf(b, "%s{tenant=\"%s\"} %llu\n", per_tenant[i].name, t->name, LOAD(*a));
        }
    }
    pthread_mutex_unlock(&hub->stats_lock);
#undef LOAD
    return e;
}
