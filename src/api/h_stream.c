/*
 * h_stream.c — the live streams' front door (docs/stream.md, ADR-0016):
 * stream tickets, the WebSocket upgrade (/api/v1/stream), Server-Sent Events
 * (/api/v1/stream/sse) with their resume replay, and the filter check that
 * both share.  The streams themselves run on the live hub (src/live): once
 * the caller is admitted these handlers answer the head and hand the
 * connection over.
 *
 * Filters are checked and resolved here, never in the hub: the tenant comes
 * from the token (a platform token names one), a device must exist in it, a
 * group or tag becomes the list of its devices when the subscription is
 * made.  WebSocket subscribe messages arrive on the hub's thread and are
 * checked by drv_api_stream_filter with the hub's own registry handle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_int.h"
#include "core/alloc.h"
#include "core/num.h"
#include "live/event.h"
#include "live/hub.h"
#include "net/ws.h"
#include "platform/clock.h"

#define TICKET_TTL_MS 30000
#define TICKETS_MAX 10000
#define TICKETS_PER_TOKEN 100
#define REVALIDATE_MS 5000      /* a token's re-check answer is reused this long */
#define REVALIDATED_MAX 100000u /* tokens remembered; beyond, forget them all */
#define MAX_LISTED_DEVICES 1000u
#define RETRY_MS 2000
/* Replay memory: records for at most this many events, and samples read. */
#define REPLAY_BATCH_CAP (256u << 20)

/* ------------------------------------------------------------------------ */
/* Tickets                                                                   */

typedef struct stream_ticket {
    drv_hnode node;
    int64_t expires_ms;
    api_role role;
    drv_token_info tok;
    uint8_t sha256[32]; /* the API token's (zero for OAuth): the stream re-checks it */
    char key[48];
} stream_ticket;

static void ticket_del(drv_api *a, stream_ticket *t)
{
    drv_hmap_del(&a->tickets, &t->node);
    memset(t, 0, sizeof(*t));
    drv_free(t);
}

/* Drop expired tickets (all of them with all). */
void api_tickets_sweep(drv_api *a, bool all)
{
    int64_t now = (int64_t)drv_wall_ms();
    size_t bk;
    for (drv_hnode *n = drv_hmap_first(&a->tickets, &bk), *nx; n; n = nx) {
        nx = drv_hmap_next(&a->tickets, n, &bk);
        stream_ticket *t = (stream_ticket *)n;
        if (all || t->expires_ms <= now)
            ticket_del(a, t);
    }
}

void api_stream_tickets(api_ctx *x)
{
    drv_api *a = x->api;
    api_tickets_sweep(a, false);
    /* A bound for the process, and one per token so that no tenant's
     * token can use up everyone's room. */
    uint32_t mine = 0;
    size_t bk;
    for (drv_hnode *n = drv_hmap_first(&a->tickets, &bk); n; n = drv_hmap_next(&a->tickets, n, &bk))
        mine += strcmp(((stream_ticket *)n)->tok.id, x->tok.id) == 0;
    if (a->tickets.count >= TICKETS_MAX || mine >= TICKETS_PER_TOKEN) {
        drv_http_add_header(x->resp, "Retry-After", "%u", TICKET_TTL_MS / 1000);
        api_problem(x, 429, "rate-limited", "too many unused stream tickets; try again shortly");
        return;
    }
    stream_ticket *t = drv_calloc(1, sizeof(*t));
    if (!t || !api_random_secret("stk_", 20, t->key, sizeof(t->key))) {
        drv_free(t);
        api_problem(x, 503, NULL, "cannot issue a ticket now");
        return;
    }
    t->expires_ms = (int64_t)drv_wall_ms() + TICKET_TTL_MS;
    t->role = x->role;
    t->tok = x->tok;
    memcpy(t->sha256, x->tok_sha256, sizeof(t->sha256));
    t->node.key = t->key;
    t->node.klen = (uint32_t)strlen(t->key);
    t->node.hash = drv_hash_bytes(t->key, t->node.klen, 0);
    if (drv_hmap_put(&a->tickets, &t->node) != DRV_OK) {
        drv_free(t);
        api_problem(x, 503, NULL, "cannot issue a ticket now");
        return;
    }
    json_t *body = json_pack("{s:s, s:i}", "ticket", t->key, "expires_in", TICKET_TTL_MS / 1000);
    api_json(x, 201, body);
}

static void who_of(const api_ctx *x, drv_hub_who *who);
static bool token_still_good(drv_store *st, const drv_hub_who *who);

/* Admit a stream request: a ticket in the query (used up here), or the
 * usual bearer token.  false with the answer set. */
static bool stream_admit(api_ctx *x)
{
    char key[64];
    bool trunc = false;
    if (!drv_http_query_get(x->req, "ticket", key, sizeof(key), &trunc))
        return api_admit(x, ROLE_VIEWER, "");
    drv_api *a = x->api;
    size_t n = strlen(key);
    stream_ticket *t = trunc ? NULL
                             : (stream_ticket *)drv_hmap_get(&a->tickets, drv_hash_bytes(key, n, 0),
                                                             key, (uint32_t)n);
    if (!t || t->expires_ms <= (int64_t)drv_wall_ms()) {
        if (t)
            ticket_del(a, t);
        a->auth_failures++;
        api_problem(x, 401, "unauthorized", "the stream ticket is unknown, used or expired");
        return false;
    }
    x->role = t->role;
    x->tok = t->tok;
    memcpy(x->tok_sha256, t->sha256, sizeof(x->tok_sha256));
    ticket_del(a, t); /* single use */
    /* The token may have been revoked since the ticket was issued. */
    drv_hub_who who;
    who_of(x, &who);
    if (!token_still_good(a->store, &who) ||
        (who.expires_ms && who.expires_ms <= (int64_t)drv_wall_ms())) {
        a->auth_failures++;
        api_problem(x, 401, "unauthorized", "the token behind the ticket is no longer valid");
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Filters                                                                   */

/* What a subscription asks for, before it is checked. */
typedef struct stream_ask {
    const char *tenant; /* NULL: the token's */
    const char *types[DRV_HUB_MAX_TYPES + 1];
    uint32_t ntypes;
    bool too_many_types;
    char **devices; /* listed devices (borrowed) */
    uint32_t ndevices;
    const char *group, *tag;
    const char *keys[DRV_HUB_MAX_KEYS + 1];
    uint32_t nkeys;
} stream_ask;

static drv_err refuse(drv_hub_refusal *why, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static drv_err refuse(drv_hub_refusal *why, int status, const char *code, const char *fmt, ...)
{
    why->status = status;
    snprintf(why->code, sizeof(why->code), "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why->detail, sizeof(why->detail), fmt, ap);
    va_end(ap);
    return status == 404 ? DRV_NOTFOUND : status == 403 ? DRV_DENIED : DRV_INVAL;
}

/* Shadow and command event types (docs/shadow.md, docs/commands.md). */
static const char *const twin_types[] = {
    "shadow.*",       "shadow.updated",    "shadow.deleted",    "command.*",
    "command.queued", "command.sent",      "command.delivered", "command.succeeded",
    "command.failed", "command.timed_out", "command.expired",   "command.cancelled",
};

/* The token's scopes that streams look at (one per family of types), into
 * out: kept with every stream connection, so only what it needs.  A token
 * with scopes but none of these gets "-", which grants nothing ("" would
 * mean every scope of the role). */
static void stream_scopes(const char *scopes, char *out, size_t cap)
{
    static const char *const words[] = {"telemetry:read", "devices:read", "shadows:read",
                                        "commands:read"};
    out[0] = '\0';
    if (!scopes[0])
        return;
    size_t n = 0;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (!api_has_word(scopes, words[i], strlen(words[i])))
            continue;
        int w = snprintf(out + n, cap - n, "%s%s", n ? " " : "", words[i]);
        if (w > 0 && (size_t)w < cap - n)
            n += (size_t)w;
    }
    if (n == 0)
        snprintf(out, cap, "-");
}

static bool type_valid(const char *t)
{
    if (strcmp(t, "telemetry") == 0 || strcmp(t, "device.*") == 0)
        return true;
    for (size_t i = 0; i < sizeof(twin_types) / sizeof(twin_types[0]); i++)
        if (strcmp(t, twin_types[i]) == 0)
            return true;
    if (strncmp(t, "device.", 7) != 0 || !t[7] || strlen(t + 7) > DRV_EVENT_MAX_KIND)
        return false;
    for (const char *p = t + 7; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return false;
    return true;
}

/* Append a copy of s to the growing array *v (*n used, *cap allocated);
 * false when out of memory. */
static bool strs_push(char ***v, uint32_t *n, uint32_t *cap, const char *s)
{
    if (*n == *cap) {
        uint32_t nc = *cap ? *cap * 2 : 16;
        char **g = drv_realloc(*v, nc * sizeof(char *));
        if (!g)
            return false;
        *v = g;
        *cap = nc;
    }
    (*v)[*n] = drv_strdup(s);
    return (*v)[*n] ? ((*n)++, true) : false;
}

typedef struct members {
    drv_hub_filter *f;
    uint32_t cap; /* room in f->devices */
    bool over;
} members;

static bool add_member(void *ud, const char *id)
{
    members *m = ud;
    drv_hub_filter *f = m->f;
    if (f->ndevices >= DRV_HUB_MAX_DEVICES) {
        m->over = true;
        return false;
    }
    return strs_push(&f->devices, &f->ndevices, &m->cap, id);
}

/*
 * Check `ask` for a caller (tenant "" for a platform token, its scopes) and
 * resolve it into f against the registry st.  DRV_OK, or an error with why.
 */
static drv_err filter_build(drv_store *st, const char *caller_tenant, const char *scopes,
                            const stream_ask *ask, drv_hub_filter *f, drv_hub_refusal *why)
{
    memset(f, 0, sizeof(*f));
    /* The tenant: the token's own; a platform token names one. */
    const char *tenant = caller_tenant;
    if (caller_tenant[0]) {
        if (ask->tenant && strcmp(ask->tenant, caller_tenant) != 0)
            return refuse(why, 404, "not-found", "no such tenant");
    } else {
        if (!ask->tenant || !ask->tenant[0])
            return refuse(why, 400, "bad-request", "a platform token names the tenant: tenant=");
        tenant = ask->tenant;
    }
    if (strlen(tenant) >= sizeof(f->tenant) || !api_tenant_status(st, tenant))
        return refuse(why, 404, "not-found", "no such tenant");
    snprintf(f->tenant, sizeof(f->tenant), "%s", tenant);

    /* Types, and the scopes they need. */
    if (ask->too_many_types || ask->ntypes > DRV_HUB_MAX_TYPES)
        return refuse(why, 400, "bad-request", "at most %d types", DRV_HUB_MAX_TYPES);
    if (ask->ntypes == 0)
        snprintf(f->types[f->ntypes++], sizeof(f->types[0]), "telemetry");
    for (uint32_t i = 0; i < ask->ntypes; i++) {
        if (!type_valid(ask->types[i]))
            return refuse(why, 400, "bad-request",
                          "unknown type \"%.64s\": telemetry, device.*, device.<kind>, "
                          "shadow.*, shadow.<change>, command.* or command.<state>",
                          ask->types[i]);
        snprintf(f->types[f->ntypes++], sizeof(f->types[0]), "%s", ask->types[i]);
    }
    for (uint32_t i = 0; i < f->ntypes; i++) { /* the default type too */
        const char *t = f->types[i];
        const char *need = strcmp(t, "telemetry") == 0      ? "telemetry:read"
                           : strncmp(t, "shadow.", 7) == 0  ? "shadows:read"
                           : strncmp(t, "command.", 8) == 0 ? "commands:read"
                                                            : "devices:read";
        if (scopes[0] && !api_has_word(scopes, need, strlen(need)))
            return refuse(why, 403, "insufficient-scope", "type %s needs the scope \"%s\"",
                          f->types[i], need);
    }
    if (ask->nkeys > DRV_HUB_MAX_KEYS)
        return refuse(why, 400, "bad-request", "at most %d keys", DRV_HUB_MAX_KEYS);
    for (uint32_t i = 0; i < ask->nkeys; i++) {
        size_t n = strlen(ask->keys[i]);
        if (n == 0 || n >= sizeof(f->keys[0]))
            return refuse(why, 400, "bad-request", "a key is 1 to 128 bytes");
        snprintf(f->keys[f->nkeys++], sizeof(f->keys[0]), "%s", ask->keys[i]);
    }

    /* Devices: listed, a group's, a tag's, or all. */
    int chosen = (ask->ndevices > 0) + (ask->group != NULL) + (ask->tag != NULL);
    if (chosen > 1)
        return refuse(why, 400, "bad-request", "give at most one of devices, group, tag");
    drv_scope sc = {.tenant = f->tenant};
    if (chosen == 0) {
        f->all_devices = true;
        return DRV_OK;
    }
    members m = {.f = f};
    drv_err e = DRV_OK;
    if (ask->ndevices) {
        if (ask->ndevices > MAX_LISTED_DEVICES)
            return refuse(why, 400, "bad-request", "at most %u devices: use a group or a tag",
                          MAX_LISTED_DEVICES);
        for (uint32_t i = 0; i < ask->ndevices && e == DRV_OK; i++) {
            json_t *doc = NULL;
            e = st->ops->doc_get(st, &sc, DRV_KIND_DEVICE, ask->devices[i], &doc);
            json_decref(doc);
            if (e == DRV_NOTFOUND || e == DRV_INVAL) {
                drv_hub_filter_free(f);
                return refuse(why, 404, "not-found", "device %.100s not found", ask->devices[i]);
            }
            if (e == DRV_OK && !add_member(&m, ask->devices[i]))
                e = DRV_NOMEM;
        }
    } else {
        if (ask->tag && !ask->tag[0])
            return refuse(why, 400, "bad-request", "tag is key or key=value");
        if (strlen(ask->group ? ask->group : ask->tag) >= sizeof(f->group))
            return refuse(why, 400, "bad-request", "group or tag too long");
        /* The hub resolves it again as devices come and go. */
        snprintf(f->group, sizeof(f->group), "%s", ask->group ? ask->group : "");
        snprintf(f->tag, sizeof(f->tag), "%s", ask->group ? "" : ask->tag);
        e = api_members(st, &sc, ask->group, ask->group ? NULL : ask->tag, add_member, &m);
        if (e == DRV_NOTFOUND || (e == DRV_INVAL && ask->group)) {
            drv_hub_filter_free(f);
            return refuse(why, 404, "not-found", "group %.100s not found", ask->group);
        }
        if (m.over) {
            drv_hub_filter_free(f);
            return refuse(why, 400, "bad-request",
                          "more than %u devices: subscribe to the whole tenant with a key filter",
                          DRV_HUB_MAX_DEVICES);
        }
    }
    if (e != DRV_OK) {
        drv_hub_filter_free(f);
        return refuse(why, 503, "unavailable", "the registry could not be read (%s)",
                      drv_strerror(e));
    }
    return DRV_OK;
}

/* A JSON array of strings into list (borrowed from arr); false when arr is
 * not one or has more than cap. */
static bool json_strings(json_t *arr, const char **list, uint32_t *n, uint32_t cap)
{
    if (!arr)
        return true;
    if (json_is_string(arr)) { /* a single one is fine too */
        list[(*n)++] = json_string_value(arr);
        return true;
    }
    if (!json_is_array(arr) || json_array_size(arr) > cap)
        return false;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v))
            return false;
        list[(*n)++] = json_string_value(v);
    }
    return true;
}

drv_err drv_api_stream_filter(void *ud, const drv_hub_who *who, const char *json, size_t n,
                              drv_hub_filter *f, drv_hub_refusal *why)
{
    drv_api *a = ud;
    json_t *m = json_loadb(json, n, 0, NULL);
    stream_ask ask;
    memset(&ask, 0, sizeof(ask));
    const char *devs[MAX_LISTED_DEVICES + 1];
    uint32_t ndevs = 0;
    drv_err e = DRV_INVAL;
    json_t *tenant = json_object_get(m, "tenant"), *group = json_object_get(m, "group"),
           *tag = json_object_get(m, "tag");
    json_t *devices = json_object_get(m, "devices");
    if (!devices)
        devices = json_object_get(m, "device");
    if ((tenant && !json_is_string(tenant)) || (group && !json_is_string(group)) ||
        (tag && !json_is_string(tag))) {
        refuse(why, 400, "bad-request", "tenant, group and tag are strings");
        goto out;
    }
    ask.tenant = json_string_value(tenant);
    ask.group = json_string_value(group);
    ask.tag = json_string_value(tag);
    if (!json_strings(json_object_get(m, "types"), ask.types, &ask.ntypes, DRV_HUB_MAX_TYPES) ||
        !json_strings(json_object_get(m, "keys"), ask.keys, &ask.nkeys, DRV_HUB_MAX_KEYS) ||
        !json_strings(devices, devs, &ndevs, MAX_LISTED_DEVICES)) {
        refuse(why, 400, "bad-request",
               "types, keys and devices are arrays of strings (at most 16, 32 and 1000)");
        goto out;
    }
    ask.devices = (char **)devs;
    ask.ndevices = ndevs;
    if (!a->hub_reader) {
        refuse(why, 503, "unavailable", "the registry is not open for streams");
        goto out;
    }
    e = filter_build(a->hub_reader, who->tenant, who->scopes, &ask, f, why);
out:
    json_decref(m);
    return e;
}

/* Split a comma list in buf (modified) into list; false when over cap. */
static bool split_list(char *buf, const char **list, uint32_t *n, uint32_t cap)
{
    for (char *p = buf, *next; p && *p; p = next) {
        next = strchr(p, ',');
        if (next)
            *next++ = '\0';
        if (!*p)
            continue;
        if (*n >= cap)
            return false;
        list[(*n)++] = p;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* WebSocket                                                                 */

typedef struct ws_handoff {
    drv_hub *hub;
    drv_hub_who who;
} ws_handoff;

static void ws_takeover(void *ud, int fd, drv_stream *st, const drv_peer *peer, const uint8_t *rest,
                        size_t nrest)
{
    ws_handoff *h = ud;
    drv_hub_conn_init in = {.transport = DRV_HUB_WEBSOCKET,
                            .fd = fd,
                            .st = st,
                            .peer = *peer,
                            .pre = rest,
                            .npre = nrest,
                            .who = h->who};
    drv_hub_attach(h->hub, &in);
    drv_free(h);
}

static void handoff_free(void *ud)
{
    drv_free(ud);
}

/* A header's comma list holds tok (case-insensitive). */
static bool header_has(const drv_http_request *req, const char *name, const char *tok)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (!drv_span_ieq(req->headers[i].name, name))
            continue;
        drv_span v = req->headers[i].value;
        size_t k = strlen(tok);
        for (size_t at = 0; at + k <= v.n; at++) {
            bool start = at == 0 || v.p[at - 1] == ',' || v.p[at - 1] == ' ';
            bool end = at + k == v.n || v.p[at + k] == ',' || v.p[at + k] == ' ';
            if (start && end && drv_span_ieq((drv_span){v.p + at, k}, tok))
                return true;
        }
    }
    return false;
}

static void who_of(const api_ctx *x, drv_hub_who *who)
{
    memset(who, 0, sizeof(*who));
    snprintf(who->tenant, sizeof(who->tenant), "%s",
             x->role == ROLE_PLATFORM_ADMIN ? "" : x->tok.tenant);
    snprintf(who->role, sizeof(who->role), "%s", api_role_name(x->role));
    stream_scopes(x->tok.scopes, who->scopes, sizeof(who->scopes));
    snprintf(who->token_id, sizeof(who->token_id), "%s", x->tok.id);
    who->expires_ms = x->tok.expires_ms;
    static const uint8_t zero[32];
    who->has_hash = memcmp(x->tok_sha256, zero, sizeof(zero)) != 0;
    memcpy(who->token_sha256, x->tok_sha256, sizeof(who->token_sha256));
}

drv_err drv_api_stream_resolve(void *ud, drv_hub_filter *f)
{
    drv_api *a = ud;
    if (!a->hub_reader)
        return DRV_UNSUPPORTED;
    members m = {.f = f};
    drv_scope sc = {.tenant = f->tenant};
    drv_err e = api_members(a->hub_reader, &sc, f->group[0] ? f->group : NULL,
                            f->group[0] ? NULL : f->tag, add_member, &m);
    if (m.over)
        e = DRV_TOOBIG;
    if (e != DRV_OK && e != DRV_NOTFOUND)
        drv_hub_filter_free(f);
    return e;
}

/* The token behind a stream is still good in st (a handle of the calling
 * thread's own). */
static bool token_still_good(drv_store *st, const drv_hub_who *who)
{
    if (!st)
        return true;
    drv_err e;
    if (who->has_hash) { /* an API token */
        drv_token_info tok;
        e = st->ops->lookup_token(st, who->token_sha256, &tok);
        if (e == DRV_OK && tok.revoked)
            return false;
    } else { /* an OAuth access token: only as good as its client */
        drv_oauth_client c;
        e = st->ops->lookup_oauth_client(st, who->token_id, &c);
        if (e == DRV_OK && (c.revoked || strcmp(c.tenant, who->tenant) != 0))
            return false;
    }
    if (e == DRV_NOTFOUND)
        return false;
    if (e != DRV_OK)
        return true; /* the registry is busy: the next heartbeat asks again */
    return !who->tenant[0] || api_tenant_status(st, who->tenant);
}

/* A token's recent answer: many streams share a token (a dashboard fleet),
 * so their heartbeats ask the registry once per REVALIDATE_MS, not each. */
typedef struct revalidated {
    drv_hnode node;
    uint64_t at_ms;
    bool good;
    char key[41]; /* the token's (or OAuth client's) id */
} revalidated;

void api_revalidated_clear(drv_api *a)
{
    drv_hmap_clear(&a->revalidated, api_free_node);
}

bool drv_api_stream_revalidate(void *ud, const drv_hub_who *who)
{
    drv_api *a = ud;
    uint64_t now = drv_mono_ms();
    size_t kl = strlen(who->token_id);
    uint64_t h = drv_hash_bytes(who->token_id, kl, who->has_hash);
    revalidated *r =
        kl ? (revalidated *)drv_hmap_get(&a->revalidated, h, who->token_id, (uint32_t)kl) : NULL;
    if (r && now - r->at_ms < REVALIDATE_MS)
        return r->good;
    bool good = token_still_good(a->hub_reader, who); /* the hub's thread: its handle */
    if (!r && kl && kl < sizeof(r->key)) {
        if (a->revalidated.count >= REVALIDATED_MAX)
            api_revalidated_clear(a);
        r = drv_calloc(1, sizeof(*r));
        if (r) {
            memcpy(r->key, who->token_id, kl);
            r->node = (drv_hnode){.hash = h, .key = r->key, .klen = (uint32_t)kl};
            if (drv_hmap_put(&a->revalidated, &r->node) != DRV_OK) {
                drv_free(r);
                r = NULL;
            }
        }
    }
    if (r) {
        r->good = good;
        r->at_ms = now;
    }
    return good;
}

void api_stream_ws(api_ctx *x)
{
    drv_api *a = x->api;
    const drv_http_request *req = x->req;
    drv_span key = {0}, version = {0};
    if (req->method.n != 3 || memcmp(req->method.p, "GET", 3) != 0) {
        api_problem(x, 400, "bad-request", "a WebSocket upgrade is a GET");
        return;
    }
    if (!stream_admit(x))
        return;
    if (!header_has(req, "Upgrade", "websocket") || !header_has(req, "Connection", "upgrade")) {
        drv_http_add_header(x->resp, "Upgrade", "websocket");
        api_problem(x, 426, "upgrade-required",
                    "this is a WebSocket endpoint (RFC 6455); for a plain HTTP stream use "
                    "/api/v1/stream/sse");
        return;
    }
    char accept[29];
    if (!drv_http_header_get(req, "Sec-WebSocket-Version", &version) ||
        !drv_span_ieq(version, "13")) {
        drv_http_add_header(x->resp, "Sec-WebSocket-Version", "13");
        api_problem(x, 426, "upgrade-required", "only WebSocket version 13 is spoken");
        return;
    }
    if (!drv_http_header_get(req, "Sec-WebSocket-Key", &key) ||
        !drv_ws_accept_key(key.p, key.n, accept)) {
        api_problem(x, 400, "bad-request", "Sec-WebSocket-Key is missing or malformed");
        return;
    }
    if (!a->hub || drv_hub_full(a->hub)) {
        drv_http_add_header(x->resp, "Retry-After", "5");
        api_problem(x, 503, NULL,
                    a->hub ? "the stream hub is full" : "live streams are not running");
        return;
    }
    ws_handoff *h = drv_calloc(1, sizeof(*h));
    if (!h) {
        api_problem(x, 503, NULL, "out of memory");
        return;
    }
    h->hub = a->hub;
    who_of(x, &h->who);
    x->resp->status = 101;
    drv_http_add_header(x->resp, "Upgrade", "websocket");
    drv_http_add_header(x->resp, "Sec-WebSocket-Accept", "%s", accept);
    if (header_has(req, "Sec-WebSocket-Protocol", "drover.stream.v1"))
        drv_http_add_header(x->resp, "Sec-WebSocket-Protocol", "drover.stream.v1");
    x->resp->takeover = ws_takeover;
    x->resp->takeover_ud = h;
    x->resp->takeover_free = handoff_free;
}

/* ------------------------------------------------------------------------ */
/* Server-Sent Events, and the resume replay                                */

/* One telemetry sample read for the replay. */
typedef struct rsample {
    int64_t ts;
    uint32_t device; /* index in the filter's devices (or the series list) */
    uint32_t key;    /* offset of the key in the arena */
    uint16_t key_n;
    drv_value v; /* a string's bytes are in the arena (v.s.p is an offset) */
} rsample;

typedef struct replay {
    api_ctx *x;
    const drv_hub_filter *f;
    uint32_t max_events;
    /* devices read (names), for all-devices subscriptions from the engine */
    char **names;
    uint32_t nnames, names_cap;
    rsample *s;
    size_t n, cap;
    drv_buf arena;
    bool over;            /* more than max_events (or the memory cap) */
    uint32_t cur_dev;     /* scan: the device being read */
    uint32_t cur_key_off; /* scan: its key, in the arena once */
    uint16_t cur_key_n;
    /* device events */
    drv_buf events; /* records (event.h) of the device events, in id order */
    uint32_t nevents;
    int64_t max_id;
} replay;

static bool name_add(replay *r, const char *name)
{
    return strs_push(&r->names, &r->nnames, &r->names_cap, name);
}

static bool on_series_device(void *ud, const drv_ts_series_info *si)
{
    replay *r = ud;
    if (r->nnames && strcmp(r->names[r->nnames - 1], si->device) == 0)
        return true; /* series come sorted by device: one name each */
    return name_add(r, si->device);
}

/* The key the next samples are of: into the arena once. */
static bool replay_key(replay *r, const char *key)
{
    r->cur_key_off = r->arena.len;
    r->cur_key_n = (uint16_t)strlen(key);
    if (drv_buf_append(&r->arena, key, r->cur_key_n) != DRV_OK) {
        r->over = true;
        return false;
    }
    return true;
}

static bool on_replay_sample(void *ud, const drv_sample *s)
{
    replay *r = ud;
    if (r->n >= (size_t)r->max_events * 8 || r->arena.len > REPLAY_BATCH_CAP / 2) {
        r->over = true;
        return false;
    }
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        rsample *ns = drv_realloc(r->s, cap * sizeof(*ns));
        if (!ns) {
            r->over = true;
            return false;
        }
        r->s = ns;
        r->cap = cap;
    }
    rsample *o = &r->s[r->n];
    o->ts = s->ts_ms;
    o->device = r->cur_dev;
    o->key = r->cur_key_off;
    o->key_n = r->cur_key_n;
    o->v = s->v;
    if (s->v.type == DRV_VALUE_STRING) {
        o->v.s.p = (const char *)(uintptr_t)r->arena.len;
        if (drv_buf_append(&r->arena, s->v.s.p, s->v.s.n) != DRV_OK) {
            r->over = true;
            return false;
        }
    }
    r->n++;
    return true;
}

typedef struct key_walk {
    replay *r;
    char **keys;
    uint32_t n, cap;
} key_walk;

static bool on_key(void *ud, const drv_ts_series_info *si)
{
    key_walk *k = ud;
    const drv_hub_filter *f = k->r->f;
    if (f->nkeys) {
        bool want = false;
        for (uint32_t i = 0; i < f->nkeys && !want; i++)
            want = strcmp(f->keys[i], si->key) == 0;
        if (!want)
            return true;
    }
    return strs_push(&k->keys, &k->n, &k->cap, si->key);
}

/* Read every sample of the subscription with a time after t. */
static drv_err replay_telemetry(replay *r, int64_t t)
{
    drv_ts_store *ts = r->x->api->cfg.telemetry;
    const drv_hub_filter *f = r->f;
    if (!ts)
        return DRV_OK;
    drv_err e = DRV_OK;
    if (f->all_devices) {
        e = ts->ops->series(ts->st, f->tenant, NULL, on_series_device, r);
    } else {
        for (uint32_t i = 0; i < f->ndevices && e == DRV_OK; i++)
            if (!name_add(r, f->devices[i]))
                e = DRV_NOMEM;
    }
    for (uint32_t d = 0; d < r->nnames && e == DRV_OK && !r->over; d++) {
        key_walk kw = {.r = r};
        drv_err ke = ts->ops->series(ts->st, f->tenant, r->names[d], on_key, &kw);
        r->cur_dev = d;
        for (uint32_t k = 0; ke == DRV_OK && k < kw.n && !r->over; k++) {
            if (!replay_key(r, kw.keys[k]))
                break;
            drv_err se = ts->ops->scan(ts->st, f->tenant, r->names[d], kw.keys[k], t + 1,
                                       DRV_TS_TIME_MAX, 0, on_replay_sample, r);
            if (se != DRV_OK && se != DRV_NOTFOUND)
                ke = se;
        }
        for (uint32_t k = 0; k < kw.n; k++)
            drv_free(kw.keys[k]);
        drv_free(kw.keys);
        if (ke != DRV_OK && ke != DRV_NOTFOUND)
            e = ke;
    }
    return e;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_rsample(const void *pa, const void *pb)
{
    const rsample *a = pa, *b = pb;
    if (a->ts != b->ts)
        return a->ts < b->ts ? -1 : 1;
    if (a->device != b->device)
        return a->device < b->device ? -1 : 1;
    return 0;
}

static bool type_wanted(const drv_hub_filter *f, const char *kind)
{
    char type[80];
    snprintf(type, sizeof(type), "device.%s", kind);
    for (uint32_t i = 0; i < f->ntypes; i++)
        if (strcmp(f->types[i], "device.*") == 0 || strcmp(f->types[i], type) == 0)
            return true;
    return false;
}

static bool device_wanted(const drv_hub_filter *f, const char *device)
{
    if (f->all_devices)
        return true;
    for (uint32_t i = 0; i < f->ndevices; i++)
        if (strcmp(f->devices[i], device) == 0)
            return true;
    return false;
}

static bool on_replay_event(void *ud, const drv_store_event *ev)
{
    replay *r = ud;
    if (ev->id > r->max_id)
        r->max_id = ev->id;
    if (!type_wanted(r->f, ev->kind) || !device_wanted(r->f, ev->device))
        return true;
    if (r->nevents >= r->max_events) {
        r->over = true;
        return false;
    }
    drv_event e = {.kind = DRV_EVENT_DEVICE,
                   .tenant = ev->tenant,
                   .device = ev->device,
                   .ts_ms = ev->ts_ms,
                   .dev_kind = ev->kind,
                   .id = ev->id,
                   .detail = ev->detail};
    if (drv_event_batch_add(&r->events, &e) == DRV_OK)
        r->nevents++;
    return true;
}

/* One telemetry event of a replay: a device's samples at one time,
 * r->s[a..b), with its journal sequence number (0 replaying by time). */
typedef struct tel_event {
    uint64_t seq;
    int64_t ts;
    uint32_t device;
    size_t a, b;
} tel_event;

static drv_err put_item(drv_buf *out, uint64_t seq, const drv_event *ev)
{
    drv_err e = drv_buf_append(out, &seq, sizeof(seq));
    return e == DRV_OK ? drv_event_batch_add(out, ev) : e;
}

/* The replay into out as hub items ([seq][record], see hub.h): the
 * telemetry events in the given order, the device events (in row order)
 * merged in by time. */
static drv_err replay_emit(replay *r, const tel_event *te, size_t nte, drv_buf *out)
{
    size_t maxg = 1;
    for (size_t k = 0; k < nte; k++)
        if (te[k].b - te[k].a > maxg)
            maxg = te[k].b - te[k].a;
    drv_sample *group = drv_malloc(sizeof(drv_sample) * maxg);
    if (!group)
        return DRV_NOMEM;
    size_t evoff = 0, evstart = 0, k = 0;
    drv_event_view ev;
    bool have_ev = drv_event_next(r->events.data, r->events.len, &evoff, &ev);
    drv_err e = DRV_OK;
    while (e == DRV_OK && (k < nte || have_ev)) {
        if (have_ev && (k >= nte || ev.ts_ms <= te[k].ts)) {
            /* A device event: its record as the registry gave it. */
            uint64_t zero = 0;
            e = drv_buf_append(out, &zero, sizeof(zero));
            if (e == DRV_OK)
                e = drv_buf_append(out, r->events.data + evstart, evoff - evstart);
            evstart = evoff;
            have_ev = drv_event_next(r->events.data, r->events.len, &evoff, &ev);
            continue;
        }
        const tel_event *t = &te[k++];
        uint32_t ng = 0;
        for (size_t j = t->a; j < t->b; j++) {
            const rsample *s = &r->s[j];
            drv_sample *g = &group[ng++];
            g->key = (drv_span){(const char *)r->arena.data + s->key, s->key_n};
            g->ts_ms = s->ts;
            g->v = s->v;
            if (s->v.type == DRV_VALUE_STRING)
                g->v.s.p = (const char *)r->arena.data + (uintptr_t)s->v.s.p;
        }
        drv_event tev = {.kind = DRV_EVENT_TELEMETRY,
                         .tenant = r->f->tenant,
                         .device = r->names[t->device],
                         .ts_ms = t->ts,
                         .samples = group,
                         .nsamples = ng};
        e = put_item(out, t->seq, &tev);
    }
    drv_free(group);
    return e;
}

/* Replay by time: every sample read, grouped per (time, device) in that
 * order. */
static drv_err replay_by_time(replay *r, drv_buf *out)
{
    if (r->n)
        qsort(r->s, r->n, sizeof(*r->s), cmp_rsample);
    tel_event *te = drv_malloc(sizeof(*te) * (r->n ? r->n : 1));
    if (!te)
        return DRV_NOMEM;
    size_t nte = 0;
    for (size_t i = 0; i < r->n;) {
        size_t j = i;
        while (j < r->n && r->s[j].ts == r->s[i].ts && r->s[j].device == r->s[i].device)
            j++;
        te[nte++] = (tel_event){.ts = r->s[i].ts, .device = r->s[i].device, .a = i, .b = j};
        i = j;
    }
    drv_err e = DRV_OK;
    if (nte + r->nevents > r->max_events)
        r->over = true;
    else
        e = replay_emit(r, te, nte, out);
    drv_free(te);
    return e;
}

static int cmp_rsample_dev(const void *pa, const void *pb)
{
    const rsample *a = pa, *b = pb;
    if (a->device != b->device)
        return a->device < b->device ? -1 : 1;
    if (a->ts != b->ts)
        return a->ts < b->ts ? -1 : 1;
    return 0;
}

typedef struct dev_hash {
    uint64_t hash;
    uint32_t index;
} dev_hash;

static int cmp_dev_hash(const void *pa, const void *pb)
{
    uint64_t a = ((const dev_hash *)pa)->hash, b = ((const dev_hash *)pb)->hash;
    return a < b ? -1 : a > b;
}

/* Journal entries (by index) in (device, time, arrival) order. */
static int cmp_je_index(const void *pa, const void *pb, void *ud)
{
    const drv_hub_jentry *je = ud;
    const drv_hub_jentry *a = &je[*(const size_t *)pa], *b = &je[*(const size_t *)pb];
    if (a->device != b->device)
        return a->device < b->device ? -1 : 1;
    if (a->ts != b->ts)
        return a->ts < b->ts ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Two messages of a device at the same millisecond are one set of samples
 * in the engine (per key the later write wins): keep only the later entry,
 * so it is replayed once, where it last arrived.  false: out of memory. */
static bool drop_repeats(const drv_hub_jentry *je, uint32_t *dev_of, size_t n)
{
    size_t *idx = drv_malloc(sizeof(*idx) * (n ? n : 1));
    if (!idx)
        return false;
    for (size_t k = 0; k < n; k++)
        idx[k] = k;
    qsort_r(idx, n, sizeof(*idx), cmp_je_index, (void *)je);
    for (size_t k = 0; k + 1 < n; k++) {
        const drv_hub_jentry *a = &je[idx[k]], *b = &je[idx[k + 1]];
        if (a->device == b->device && a->ts == b->ts)
            dev_of[idx[k]] = UINT32_MAX;
    }
    drv_free(idx);
    return true;
}

/*
 * Replay from the journal: the telemetry events that arrived after `after`,
 * in arrival order, their values read from the time-series engine.
 * DRV_NOTFOUND: the journal does not reach back that far (replay by time).
 * *upto: the journal position read (the seam).
 */
static drv_err replay_from_journal(replay *r, drv_hub *hub, uint64_t after, drv_buf *out,
                                   uint64_t *upto)
{
    const drv_hub_filter *f = r->f;
    drv_ts_store *ts = r->x->api->cfg.telemetry;
    drv_hub_jentry *je = NULL;
    size_t nje = 0;
    dev_hash *map = NULL;
    uint64_t *hashes = NULL;
    tel_event *te = NULL;
    drv_err e = DRV_OK;
    if (!ts)
        return DRV_NOTFOUND;
    /* The devices' hashes, to filter the journal and to name its entries. */
    if (!f->all_devices) {
        for (uint32_t i = 0; i < f->ndevices && e == DRV_OK; i++)
            if (!name_add(r, f->devices[i]))
                e = DRV_NOMEM;
        hashes = drv_malloc(sizeof(*hashes) * (r->nnames ? r->nnames : 1));
        if (!hashes)
            e = DRV_NOMEM;
        for (uint32_t i = 0; e == DRV_OK && i < r->nnames; i++)
            hashes[i] = drv_hub_hash(f->tenant, r->names[i]);
        if (e == DRV_OK && r->nnames)
            qsort(hashes, r->nnames, sizeof(*hashes), cmp_u64);
    }
    if (e == DRV_OK)
        e = drv_hub_journal_read(hub, f->tenant, f->all_devices ? NULL : hashes, r->nnames, after,
                                 (size_t)r->max_events, &je, &nje, upto);
    if (e == DRV_TOOBIG) {
        r->over = true;
        e = DRV_OK;
        goto out;
    }
    if (e != DRV_OK)
        goto out;
    /* Every device with an entry has its samples in the engine (published
     * after the commit): list them for a whole-tenant subscription now. */
    if (f->all_devices)
        e = ts->ops->series(ts->st, f->tenant, NULL, on_series_device, r);
    map = drv_malloc(sizeof(*map) * (r->nnames ? r->nnames : 1));
    if (e == DRV_OK && !map)
        e = DRV_NOMEM;
    for (uint32_t i = 0; e == DRV_OK && i < r->nnames; i++)
        map[i] = (dev_hash){drv_hub_hash(f->tenant, r->names[i]), i};
    if (e == DRV_OK && r->nnames)
        qsort(map, r->nnames, sizeof(*map), cmp_dev_hash);
    /* Each device's time span in the journal: its samples are read once. */
    int64_t *lo = e == DRV_OK ? drv_malloc(sizeof(int64_t) * 2 * (r->nnames + 1)) : NULL;
    if (e == DRV_OK && !lo)
        e = DRV_NOMEM;
    int64_t *hi = lo ? lo + r->nnames + 1 : NULL;
    uint32_t *dev_of = e == DRV_OK ? drv_malloc(sizeof(uint32_t) * (nje ? nje : 1)) : NULL;
    if (e == DRV_OK && !dev_of)
        e = DRV_NOMEM;
    for (uint32_t d = 0; e == DRV_OK && d < r->nnames; d++) {
        lo[d] = INT64_MAX;
        hi[d] = INT64_MIN;
    }
    for (size_t k = 0; e == DRV_OK && k < nje; k++) {
        dev_hash key = {.hash = je[k].device};
        dev_hash *m = r->nnames ? bsearch(&key, map, r->nnames, sizeof(*map), cmp_dev_hash) : NULL;
        dev_of[k] = m ? m->index : UINT32_MAX;
        if (!m)
            continue; /* a device the engine no longer has (purged) */
        if (je[k].ts < lo[m->index])
            lo[m->index] = je[k].ts;
        if (je[k].ts > hi[m->index])
            hi[m->index] = je[k].ts;
    }
    for (uint32_t d = 0; e == DRV_OK && d < r->nnames && !r->over; d++) {
        if (lo[d] > hi[d])
            continue;
        key_walk kw = {.r = r};
        drv_err ke = ts->ops->series(ts->st, f->tenant, r->names[d], on_key, &kw);
        r->cur_dev = d;
        for (uint32_t k = 0; ke == DRV_OK && k < kw.n && !r->over; k++) {
            if (!replay_key(r, kw.keys[k]))
                break;
            drv_err se = ts->ops->scan(ts->st, f->tenant, r->names[d], kw.keys[k], lo[d], hi[d] + 1,
                                       0, on_replay_sample, r);
            if (se != DRV_OK && se != DRV_NOTFOUND)
                ke = se;
        }
        for (uint32_t k = 0; k < kw.n; k++)
            drv_free(kw.keys[k]);
        drv_free(kw.keys);
        if (ke != DRV_OK && ke != DRV_NOTFOUND)
            e = ke;
    }
    if (e == DRV_OK && !r->over) {
        if (r->n)
            qsort(r->s, r->n, sizeof(*r->s), cmp_rsample_dev);
        te = drv_malloc(sizeof(*te) * (nje ? nje : 1));
        if (!te)
            e = DRV_NOMEM;
    }
    if (e == DRV_OK && !drop_repeats(je, dev_of, nje))
        e = DRV_NOMEM;
    size_t nte = 0;
    for (size_t k = 0; e == DRV_OK && !r->over && k < nje; k++) {
        if (dev_of[k] == UINT32_MAX)
            continue;
        /* The samples of (device, ts): a range of the sorted array. */
        rsample key = {.ts = je[k].ts, .device = dev_of[k]};
        size_t a = 0, b = r->n;
        while (a < b) {
            size_t mid = (a + b) / 2;
            if (cmp_rsample_dev(&r->s[mid], &key) < 0)
                a = mid + 1;
            else
                b = mid;
        }
        size_t end = a;
        while (end < r->n && cmp_rsample_dev(&r->s[end], &key) == 0)
            end++;
        if (end > a) /* none: every key filtered out, or overwritten since */
            te[nte++] = (tel_event){je[k].seq, je[k].ts, dev_of[k], a, end};
    }
    if (e == DRV_OK && !r->over)
        e = replay_emit(r, te, nte, out);
    drv_free(lo);
    drv_free(dev_of);
out:
    drv_free(te);
    drv_free(map);
    drv_free(hashes);
    drv_free(je);
    return e;
}

static void replay_free(replay *r)
{
    for (uint32_t i = 0; i < r->nnames; i++)
        drv_free(r->names[i]);
    drv_free(r->names);
    drv_free(r->s);
    drv_buf_free(&r->arena);
    drv_buf_free(&r->events);
}

typedef struct sse_handoff {
    drv_hub *hub;
    drv_hub_pending *pending;
    drv_hub_conn_init init;
    drv_buf prelude; /* retry line, reset notice */
    drv_buf replay;  /* records */
} sse_handoff;

static void sse_free(void *ud)
{
    sse_handoff *h = ud;
    if (h->pending)
        drv_hub_cancel(h->hub, h->pending);
    drv_buf_free(&h->prelude);
    drv_buf_free(&h->replay);
    drv_free(h);
}

static void sse_takeover(void *ud, int fd, drv_stream *st, const drv_peer *peer,
                         const uint8_t *rest, size_t nrest)
{
    sse_handoff *h = ud;
    (void)rest;
    (void)nrest;
    h->init.fd = fd;
    h->init.st = st;
    h->init.peer = *peer;
    h->init.pending = h->pending;
    h->pending = NULL; /* the hub has it now, whatever happens */
    h->init.initial = h->prelude.data ? h->prelude.data + h->prelude.off : NULL;
    h->init.ninitial = drv_buf_avail(&h->prelude);
    h->init.replay = h->replay.data ? h->replay.data + h->replay.off : NULL;
    h->init.nreplay = drv_buf_avail(&h->replay);
    drv_hub_attach(h->hub, &h->init);
    sse_free(h);
}

/* The cursor "T.E.S" (or "T.E", S 0) into t, e, s; false when malformed. */
static bool parse_cursor(const char *c, int64_t *t, int64_t *e, uint64_t *s)
{
    const char *d1 = strchr(c, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    const char *end = c + strlen(c);
    int64_t sv = 0;
    *s = 0;
    if (!d1 || !drv_parse_i64(c, (size_t)(d1 - c), t) ||
        !drv_parse_i64(d1 + 1, (size_t)((d2 ? d2 : end) - d1 - 1), e) ||
        (d2 && (!drv_parse_i64(d2 + 1, (size_t)(end - d2 - 1), &sv) || sv < 0)))
        return false;
    *s = (uint64_t)sv;
    return *e >= 0 && *t > -DRV_TS_TIME_MAX && *t < DRV_TS_TIME_MAX;
}

/* Forget what a replay read of telemetry (before replaying another way). */
static void replay_drop_telemetry(replay *r)
{
    for (uint32_t i = 0; i < r->nnames; i++)
        drv_free(r->names[i]);
    r->nnames = 0;
    r->n = 0;
    r->arena.off = r->arena.len = 0;
}

void api_stream_sse(api_ctx *x)
{
    drv_api *a = x->api;
    if (x->req->method.n != 3 || memcmp(x->req->method.p, "GET", 3) != 0) {
        api_problem(x, 400, "bad-request",
                    "an event stream is a GET"); /* HEAD would use the ticket */
        return;
    }
    if (!stream_admit(x))
        return;
    if (!a->hub) {
        api_problem(x, 503, NULL, "live streams are not running");
        return;
    }
    /* The subscription from the query. */
    char tenant[64] = "", types[512] = "", devices[8192] = "", group[160] = "", tag[160] = "",
         keys[2048] = "", cursor[64] = "";
    bool cut[7] = {false};
    bool has_tenant = drv_http_query_get(x->req, "tenant", tenant, sizeof(tenant), &cut[0]);
    drv_http_query_get(x->req, "types", types, sizeof(types), &cut[1]);
    drv_http_query_get(x->req, "device", devices, sizeof(devices), &cut[2]);
    bool has_group = drv_http_query_get(x->req, "group", group, sizeof(group), &cut[3]);
    bool has_tag = drv_http_query_get(x->req, "tag", tag, sizeof(tag), &cut[4]);
    drv_http_query_get(x->req, "keys", keys, sizeof(keys), &cut[5]);
    drv_http_query_get(x->req, "last_event_id", cursor, sizeof(cursor), &cut[6]);
    for (int i = 0; i < 7; i++) {
        if (cut[i]) { /* a cut list could name something else */
            api_problem(x, 400, "bad-request", "a query parameter is too long");
            return;
        }
    }
    cursor[0] = '\0';
    drv_span lei;
    bool resume = drv_http_header_get(x->req, "Last-Event-ID", &lei) && lei.n > 0;
    if (resume)
        snprintf(cursor, sizeof(cursor), "%.*s", (int)(lei.n < 63 ? lei.n : 63), lei.p);
    else
        resume =
            drv_http_query_get(x->req, "last_event_id", cursor, sizeof(cursor), NULL) && cursor[0];
    stream_ask ask;
    memset(&ask, 0, sizeof(ask));
    const char *devs[MAX_LISTED_DEVICES + 1];
    ask.tenant = has_tenant ? tenant : NULL;
    ask.group = has_group ? group : NULL;
    ask.tag = has_tag ? tag : NULL;
    if (!split_list(types, ask.types, &ask.ntypes, DRV_HUB_MAX_TYPES))
        ask.too_many_types = true;
    uint32_t ndevs = 0;
    bool lists_ok = split_list(devices, devs, &ndevs, MAX_LISTED_DEVICES) &&
                    split_list(keys, ask.keys, &ask.nkeys, DRV_HUB_MAX_KEYS);
    ask.devices = (char **)devs;
    ask.ndevices = ndevs;
    int64_t cur_t = 0, cur_e = 0;
    uint64_t cur_s = 0;
    if (resume && !parse_cursor(cursor, &cur_t, &cur_e, &cur_s)) {
        api_problem(x, 400, "bad-request", "Last-Event-ID is not a cursor of this stream (T.E.S)");
        return;
    }
    if (!lists_ok) {
        api_problem(x, 400, "bad-request", "at most %u devices and %d keys", MAX_LISTED_DEVICES,
                    DRV_HUB_MAX_KEYS);
        return;
    }
    drv_hub_who who;
    who_of(x, &who);
    drv_hub_filter f;
    drv_hub_refusal why;
    if (filter_build(a->store, who.tenant, who.scopes, &ask, &f, &why) != DRV_OK) {
        api_problem(x, why.status, why.code, "%s", why.detail);
        return;
    }
    drv_store *st = a->store;
    sse_handoff *h = drv_calloc(1, sizeof(*h));
    if (!h) {
        drv_hub_filter_free(&f);
        api_problem(x, 503, NULL, "out of memory");
        return;
    }
    h->hub = a->hub;
    drv_buf_init(&h->prelude, 4096);
    drv_buf_init(&h->replay, REPLAY_BATCH_CAP);
    h->init.transport = DRV_HUB_SSE;
    h->init.who = who; /* its token is checked again at every heartbeat */
    /* A fresh stream starts at the newest event row and now: its first id. */
    int64_t last_id = 0;
    if (!resume) {
        st->ops->event_last_id(st, &last_id);
        cur_t = (int64_t)drv_wall_ms();
        cur_e = last_id;
    }
    /* Registered before the replay is read: nothing falls between (ADR-0016). */
    uint64_t start_s = 0; /* the journal position the subscription starts at */
    h->pending = drv_hub_prepare(a->hub, &f, &start_s);
    if (!h->pending) {
        drv_hub_filter_free(&f);
        sse_free(h);
        drv_http_add_header(x->resp, "Retry-After", "5");
        api_problem(x, 503, NULL, "the stream hub is full or out of memory");
        return;
    }
    char line[192];
    snprintf(line, sizeof(line), "retry: %d\n\n", RETRY_MS);
    drv_buf_append(&h->prelude, line, strlen(line));
    if (!resume) {
        /* Where it starts, as an id without an event: a client that loses
         * the stream before the first event still resumes from here. */
        cur_s = start_s;
        snprintf(line, sizeof(line), "id: %lld.%lld.%llu\n\n", (long long)cur_t, (long long)cur_e,
                 (unsigned long long)cur_s);
        drv_buf_append(&h->prelude, line, strlen(line));
    } else {
        replay r = {.x = x, .f = &f, .max_events = a->cfg.stream_resume_max_events};
        if (!r.max_events)
            r.max_events = 100000;
        drv_buf_init(&r.arena, REPLAY_BATCH_CAP / 2);
        drv_buf_init(&r.events, REPLAY_BATCH_CAP / 4);
        r.max_id = cur_e;
        bool want_tel = false, want_dev = false;
        for (uint32_t i = 0; i < f.ntypes; i++) {
            if (strcmp(f.types[i], "telemetry") == 0)
                want_tel = true;
            else
                want_dev = true;
        }
        /* Device events after row E, from the registry (rows are in commit order). */
        drv_err e = DRV_OK;
        if (want_dev) {
            drv_scope sc = {.tenant = f.tenant};
            e = st->ops->event_since(st, &sc, cur_e, r.max_events + 1, on_replay_event, &r);
        }
        /* Telemetry after S from the journal, exactly; or, when it does not
         * reach back that far, everything newer than T by time. */
        uint64_t upto = 0;
        drv_err je = DRV_NOTFOUND;
        if (e == DRV_OK && !r.over && want_tel && cur_s)
            je = replay_from_journal(&r, a->hub, cur_s, &h->replay, &upto);
        if (e == DRV_OK && !r.over && je == DRV_OK) {
            h->init.seam_s = upto;
        } else if (e == DRV_OK && !r.over && je == DRV_NOTFOUND) {
            replay_drop_telemetry(&r);
            e = want_tel ? replay_telemetry(&r, cur_t) : DRV_OK;
            if (e == DRV_OK && !r.over)
                e = replay_by_time(&r, &h->replay); /* the seam: by (device, time) */
            cur_s = 0;                              /* positions come with the first live event */
        } else if (e == DRV_OK) {
            e = je;
        }
        h->init.seam_e = r.max_id;
        if (e != DRV_OK || r.over) {
            /* Too much, or the stores failed: say so and go on live from now. */
            h->replay.off = h->replay.len = 0;
            h->init.seam_e = 0;
            h->init.seam_s = 0;
            st->ops->event_last_id(st, &last_id);
            cur_t = (int64_t)drv_wall_ms();
            cur_e = last_id;
            cur_s = start_s;
            /* The reset carries the new position, so a reconnect after it
             * does not ask for the same impossible replay again. */
            snprintf(line, sizeof(line),
                     "id: %lld.%lld.%llu\nevent: reset\ndata: {\"code\":\"%s\"}\n\n",
                     (long long)cur_t, (long long)cur_e, (unsigned long long)cur_s,
                     e != DRV_OK ? "resume-failed" : "resume-too-large");
            drv_buf_append(&h->prelude, line, strlen(line));
        }
        replay_free(&r);
    }
    h->init.cursor_t = cur_t;
    h->init.cursor_e = cur_e;
    h->init.cursor_s = cur_s;
    drv_hub_filter_free(&f);
    x->resp->status = 200;
    x->resp->content_type = "text/event-stream";
    drv_http_add_header(x->resp, "Cache-Control", "no-store");
    drv_http_add_header(x->resp, "X-Accel-Buffering", "no");
    /* Tickets are not cookies: any origin's page may read its own stream. */
    drv_http_add_header(x->resp, "Access-Control-Allow-Origin", "*");
    x->resp->takeover = sse_takeover;
    x->resp->takeover_ud = h;
    x->resp->takeover_free = sse_free;
}
