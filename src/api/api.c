/*
 * api.c — the router and the walls in front of every handler.
 *
 * For each request, in this order: find the route (404, or 405 with Allow),
 * authenticate the bearer token (401), check the route's least role (403),
 * check that a {tenant} in the path is the token's own tenant unless the
 * token is the platform admin's (404, so a probe learns nothing about other
 * tenants), check the route's scope (scopes.def) when the token has scopes
 * (403 insufficient-scope), apply the token's rate limit (429 with
 * Retry-After), then call the handler with the scope set.  Handlers never
 * see a request that failed one of these checks, and never pick a tenant
 * themselves: they use x->scope.  The one exception is a route of role NONE
 * whose handler authenticates the caller itself (device telemetry ingest
 * takes device credentials too): it runs the same walls through api_admit
 * when the caller brings a tenant token.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api/api_int.h"
#include "twin/twin_store.h"
#include "api/api_oauth.h"
#include "api/jwt.h"
#include "core/alloc.h"
#include "core/ident.h"
#include "core/log.h"

typedef struct route {
    const char *method;
    const char *pattern;
    api_role role;
    void (*handler)(api_ctx *x);
} route;

static const route routes[] = {
#define ROUTE(method, pattern, role, handler) {#method, pattern, ROLE_##role, api_##handler},
#include "api/routes.def"
#undef ROUTE
};
#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* The scope each handler needs (scopes.def); "" for none. */
typedef struct route_scope {
    void (*handler)(api_ctx *x);
    const char *word;
} route_scope;

static const route_scope scopes[] = {
#define SCOPE(handler, word) {api_##handler, word},
#include "api/scopes.def"
#undef SCOPE
};
#define NSCOPES (sizeof(scopes) / sizeof(scopes[0]))

/* The scope route r needs: "" for none, NULL when scopes.def does not list
 * it (then no scoped token may call it). */
static const char *scope_of(const route *r)
{
    for (size_t i = 0; i < NSCOPES; i++)
        if (scopes[i].handler == r->handler)
            return scopes[i].word;
    return NULL;
}

bool api_scope_known(const char *word, size_t n)
{
    for (size_t i = 0; i < NSCOPES; i++)
        if (n && strlen(scopes[i].word) == n && memcmp(scopes[i].word, word, n) == 0)
            return true;
    return false;
}

bool api_has_word(const char *list, const char *word, size_t n)
{
    for (const char *p = list; *p;) {
        const char *sp = strchr(p, ' ');
        size_t len = sp ? (size_t)(sp - p) : strlen(p);
        if (len == n && memcmp(p, word, n) == 0)
            return true;
        p += len + (sp != NULL);
    }
    return false;
}

static const char *const role_names[] = {
    [ROLE_NONE] = "none",
    [ROLE_VIEWER] = "viewer",
    [ROLE_OPERATOR] = "operator",
    [ROLE_TENANT_ADMIN] = "tenant_admin",
    [ROLE_PLATFORM_ADMIN] = "platform_admin",
};

api_role api_role_from_name(const char *name)
{
    for (int r = ROLE_VIEWER; r <= ROLE_PLATFORM_ADMIN; r++)
        if (strcmp(name, role_names[r]) == 0)
            return (api_role)r;
    return ROLE_NONE;
}

const char *api_role_name(api_role r)
{
    return role_names[r];
}

const char *api_param(const api_ctx *x, int index)
{
    return index < x->nparams ? x->params[index] : "";
}

void drv_api_print_routes(FILE *f)
{
    for (size_t i = 0; i < NROUTES; i++) {
        const char *scope = scope_of(&routes[i]);
        fprintf(f, "%s %s %s %s\n", routes[i].method, routes[i].pattern, role_names[routes[i].role],
                !scope     ? "?"
                : scope[0] ? scope
                           : "none");
    }
}

/* -- matching ----------------------------------------------------------------- */

/* A captured segment may hold only these (ids everywhere are [A-Za-z0-9._:-]). */
static bool param_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!drv_id_char(*s))
            return false;
    return true;
}

/*
 * Match path against pattern segment by segment, capturing {name} segments.
 * Returns 1 on a match, 0 on no match, -1 when a captured segment is not a
 * valid identifier (the path cannot name anything: 404 either way).
 */
static int match(const char *pattern, drv_span path, api_ctx *x)
{
    const char *pp = pattern;
    const char *s = path.p, *end = path.p + path.n;
    x->nparams = 0;
    x->tenant[0] = '\0';
    while (*pp && s < end) {
        if (*pp != '/' || *s != '/')
            return 0;
        pp++, s++;
        const char *pseg_end = strchr(pp, '/');
        size_t plen = pseg_end ? (size_t)(pseg_end - pp) : strlen(pp);
        const char *seg_end = memchr(s, '/', (size_t)(end - s));
        size_t slen = seg_end ? (size_t)(seg_end - s) : (size_t)(end - s);
        if (plen > 2 && pp[0] == '{') {
            if (x->nparams == API_MAX_PARAMS)
                return 0;
            char *dst = x->params[x->nparams];
            if (!drv_http_pct_decode((drv_span){s, slen}, dst, API_PARAM_MAX) || !param_ok(dst))
                return -1;
            if (plen == 8 && memcmp(pp, "{tenant}", 8) == 0)
                snprintf(x->tenant, sizeof(x->tenant), "%s", dst);
            x->nparams++;
        } else if (plen != slen || memcmp(pp, s, slen) != 0) {
            return 0;
        }
        pp += plen;
        s += slen;
    }
    return *pp == '\0' && s == end ? 1 : 0;
}

/* -- authentication and rate limits ------------------------------------------ */

/* The tenant exists and is not deleted (one indexed read). */
/* A tenant's status: 'a'ctive, 's'uspended, or 0 for deleted or unknown. */
static char tenant_status(drv_api *a, const char *id)
{
    return api_tenant_status(a->store, id);
}

char api_tenant_status(drv_store *st, const char *id)
{
    json_t *t = NULL;
    const char *status = NULL;
    if (st->ops->platform_tenant_get(st, id, &t) == DRV_OK)
        status = json_string_value(json_object_get(t, "status"));
    char c = !status || strcmp(status, "deleted") == 0 ? 0
             : strcmp(status, "suspended") == 0        ? 's'
                                                       : 'a';
    json_decref(t);
    return c;
}

/* Does the request only read (GET or HEAD)? */
static bool read_only(const api_ctx *x)
{
    drv_span m = x->req->method;
    return (m.n == 3 && memcmp(m.p, "GET", 3) == 0) || (m.n == 4 && memcmp(m.p, "HEAD", 4) == 0);
}

static bool authenticate(api_ctx *x)
{
    drv_span v;
    if (!drv_http_header_get(x->req, "authorization", &v))
        return false;
    if (v.n < 8 || strncasecmp(v.p, "Bearer ", 7) != 0)
        return false;
    const char *tok = v.p + 7;
    size_t n = v.n - 7;
    while (n && *tok == ' ')
        tok++, n--;
    if (n == 0 || n > JWT_MAX_LEN)
        return false;
    if (api_oauth_is_jwt(tok, n)) {
        /* An OAuth access token (ADR-0010): signature, claims and a live
         * client checked there; it becomes a principal like an API token's. */
        if (!api_oauth_authenticate(x->api->oauth, tok, n, &x->tok))
            return false;
    } else {
        uint8_t *h = x->tok_sha256;
        api_sha256(tok, n, h);
        drv_store *st = x->api->store;
        if (st->ops->lookup_token(st, h, &x->tok) != DRV_OK)
            return false;
        if (x->tok.revoked)
            return false;
        if (x->tok.expires_ms && x->tok.expires_ms <= drv_store_now_ms())
            return false;
    }
    x->role = api_role_from_name(x->tok.role);
    /* A platform role only counts on a platform token; a tenant token is never more
     * than a tenant admin whatever its row says. */
    if (x->tok.tenant[0] && x->role == ROLE_PLATFORM_ADMIN)
        x->role = ROLE_TENANT_ADMIN;
    if (!x->tok.tenant[0] && x->role != ROLE_PLATFORM_ADMIN)
        x->role = ROLE_NONE;
    /* A deleted tenant's tokens die with it. */
    if (x->tok.tenant[0] && !tenant_status(x->api, x->tok.tenant))
        x->role = ROLE_NONE;
    return x->role != ROLE_NONE;
}

typedef struct bucket {
    drv_hnode h;
    double tokens;
    uint64_t at_ms;
    char id[40];
} bucket;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Token bucket per API token; false (with the wait in *retry_s) when empty. */
static bool rate_ok(drv_api *a, const char *token_id, uint32_t *retry_s)
{
    uint32_t rps = a->cfg.rate_limit_rps;
    if (!rps)
        return true;
    double burst = a->cfg.rate_limit_burst ? a->cfg.rate_limit_burst : 2.0 * rps;
    size_t len = strlen(token_id);
    uint64_t hash = drv_hash_bytes(token_id, len, 0);
    bucket *b = (bucket *)drv_hmap_get(&a->buckets, hash, token_id, (uint32_t)len);
    uint64_t now = mono_ms();
    if (!b) {
        b = drv_calloc(1, sizeof(*b));
        if (!b)
            return true; /* out of memory: do not refuse service for it */
        snprintf(b->id, sizeof(b->id), "%s", token_id);
        b->h.hash = hash;
        b->h.key = b->id;
        b->h.klen = (uint32_t)strlen(b->id);
        b->tokens = burst;
        b->at_ms = now;
        if (drv_hmap_put(&a->buckets, &b->h) != DRV_OK) {
            drv_free(b);
            return true;
        }
    }
    b->tokens += (double)(now - b->at_ms) * rps / 1000.0;
    if (b->tokens > burst)
        b->tokens = burst;
    b->at_ms = now;
    if (b->tokens < 1.0) {
        *retry_s = (uint32_t)((1.0 - b->tokens) / rps) + 1;
        return false;
    }
    b->tokens -= 1.0;
    return true;
}

/* -- admission ---------------------------------------------------------------- */

/*
 * The walls in front of a handler, in order: a valid bearer token (401), the
 * tenant wall for a {tenant} in the path (404; a suspended tenant's tokens
 * only read: 403 otherwise), the least role (403), the
 * scope `need` when the token has scopes (403; NULL: the route is not in
 * scopes.def, so only an unscoped token passes), the token's rate limit
 * (429).  read_record: the platform admin may read a deleted tenant's
 * record.  false with the answer set when one of them stops the request.
 */
static bool admit(api_ctx *x, api_role role, const char *need, bool read_record)
{
    drv_api *a = x->api;
    drv_http_response *resp = x->resp;
    if (!authenticate(x)) {
        a->auth_failures++;
        drv_http_add_header(resp, "WWW-Authenticate", "Bearer realm=\"drover\"");
        api_problem(x, 401, "unauthorized", "a valid bearer token is required");
        return false;
    }
    if (x->tenant[0]) {
        /* The one tenant wall of the API: a tenant token names only its own tenant.
         * Another tenant's resources look like missing ones. */
        if (x->role != ROLE_PLATFORM_ADMIN && strcmp(x->tenant, x->tok.tenant) != 0) {
            api_problem(x, 404, NULL, "no such resource");
            return false;
        }
        /* Nothing happens inside a deleted tenant; the platform admin may still
         * read its record.  A suspended tenant's own tokens may read, not
         * change anything (its devices are refused at CONNECT already). */
        char status = tenant_status(a, x->tenant);
        if (!read_record && !status) {
            api_problem(x, 404, NULL, "no such tenant");
            return false;
        }
        if (status == 's' && x->role != ROLE_PLATFORM_ADMIN && !read_only(x)) {
            api_problem(x, 403, "tenant-suspended",
                        "the tenant is suspended: its tokens may read, not change anything");
            return false;
        }
        x->scope.tenant = x->tenant;
    }
    if (x->role < role) {
        api_problem(x, 403, "forbidden", "this needs the %s role; the token has %s",
                    role_names[role], role_names[x->role]);
        return false;
    }
    /* Scopes only narrow: a token without any may do all its role allows. */
    if (x->tok.scopes[0] &&
        (!need || (need[0] && !api_has_word(x->tok.scopes, need, strlen(need))))) {
        /* RFC 6750 §3.1, beside the problem, for clients that read only that. */
        if (need) {
            drv_http_add_header(resp, "WWW-Authenticate",
                                "Bearer realm=\"drover\", error=\"insufficient_scope\", "
                                "scope=\"%s\"",
                                need);
            api_problem(x, 403, "insufficient-scope",
                        "this needs the scope \"%s\", which the token does not hold", need);
        } else {
            api_problem(x, 403, "insufficient-scope",
                        "this route has no scope yet: only a token without scopes may call it");
        }
        return false;
    }
    uint32_t retry_s = 0;
    if (!rate_ok(a, x->tok.id, &retry_s)) {
        a->rate_limited++;
        drv_http_add_header(resp, "Retry-After", "%u", retry_s);
        api_problem(x, 429, "rate-limited", "more than %u requests per second for this token",
                    a->cfg.rate_limit_rps);
        return false;
    }
    return true;
}

bool api_admit(api_ctx *x, api_role role, const char *scope)
{
    return admit(x, role, scope, false);
}

/* -- the handler ------------------------------------------------------------- */

static bool method_is(drv_span m, const char *name)
{
    size_t n = strlen(name);
    return m.n == n && memcmp(m.p, name, n) == 0;
}

void drv_api_handle(void *ud, const drv_http_request *req, drv_http_response *resp)
{
    drv_api *a = ud;
    api_ctx *x = drv_calloc(1, sizeof(*x));
    if (!x) {
        resp->status = 503;
        resp->close = true;
        return;
    }
    x->api = a;
    x->req = req;
    x->resp = resp;
    a->requests++;
    if (req->peer)
        drv_peer_format(req->peer, x->source);

    /* HEAD is GET without the body (the server drops it). */
    drv_span method = req->method;
    if (method_is(method, "HEAD"))
        method = (drv_span){"GET", 3};

    const route *found = NULL;
    char allow[96] = "";
    bool path_known = false;
    for (size_t i = 0; i < NROUTES && !found; i++) {
        int m = match(routes[i].pattern, req->path, x);
        if (m < 0)
            break;
        if (m == 0)
            continue;
        path_known = true;
        if (method_is(method, routes[i].method)) {
            found = &routes[i];
        } else {
            size_t used = strlen(allow);
            snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "",
                     routes[i].method);
        }
    }
    if (!found && path_known) {
        drv_http_add_header(resp, "Allow", "%s", allow);
        api_problem(x, 405, NULL, "%.*s is not allowed here", (int)req->method.n, req->method.p);
        goto out;
    }
    if (!found) {
        api_problem(x, 404, NULL, "no such resource");
        goto out;
    }
    /* Re-match: the loop above may have overwritten the captures. */
    match(found->pattern, req->path, x);

    if (found->role != ROLE_NONE &&
        !admit(x, found->role, scope_of(found), found->handler == api_tenants_get))
        goto out;
    found->handler(x);
out:
    drv_free(x);
}

/* -- life cycle ---------------------------------------------------------------- */

drv_err drv_api_new(const drv_api_config *cfg, drv_api **out)
{
    drv_api *a = drv_calloc(1, sizeof(*a));
    if (!a)
        return DRV_NOMEM;
    a->cfg = *cfg;
    a->store = cfg->store;
    drv_hmap_init(&a->buckets);
    drv_failtab_init(&a->login_fails, 10, 60000, 10000); /* 10 failures a minute per peer */
    drv_hmap_init(&a->tickets);
    drv_hmap_init(&a->revalidated);
    a->started_ms = mono_ms();
    /* The first start makes the first signing key. */
    drv_err e = api_oauth_new(a->store, cfg->jwt_issuer ? cfg->jwt_issuer : "drover",
                              cfg->jwt_ttl_s ? cfg->jwt_ttl_s : 900, &a->oauth);
    if (e != DRV_OK) {
        drv_hmap_free(&a->buckets);
        drv_free(a);
        return e;
    }
    e = api_apply_retention(a);
    if (e != DRV_OK)
        drv_warn("cannot read the tenants' telemetry retention; keeping everything", "error",
                 drv_strerror(e));
    *out = a;
    return DRV_OK;
}

void drv_api_set_http(drv_api *a, drv_http_server *http)
{
    a->http = http;
}

void drv_api_set_hub(drv_api *a, struct drv_hub *hub, drv_store *hub_reader)
{
    a->hub = hub;
    a->hub_reader = hub_reader;
}

void drv_api_set_twin(drv_api *a, struct drv_twin *twin, struct drv_twin_store *st)
{
    a->twin = twin;
    a->twin_store = st;
}

void drv_api_free(drv_api *a)
{
    if (!a)
        return;
    api_waiters_free(a);
    drv_twin_store_close(a->twin_store);
    drv_hmap_clear(&a->buckets, api_free_node);
    api_login_free(a);
    api_tickets_sweep(a, true);
    drv_hmap_free(&a->tickets);
    api_revalidated_clear(a);
    drv_store_close(a->hub_reader);
    api_oauth_free(a->oauth);
    drv_store_close(a->store);
    drv_free(a);
}

drv_err drv_api_create_platform_token(drv_store *st, const char *name, char *token_out, size_t cap)
{
    if (!api_random_secret("drv_", 20, token_out, cap))
        return DRV_IO;
    uint8_t h[32];
    api_sha256(token_out, strlen(token_out), h);
    json_t *doc = json_pack("{s:s, s:s}", "name", name, "role", "platform_admin");
    json_t *meta = NULL;
    drv_err e = doc ? st->ops->token_create(st, NULL, doc, h, &meta) : DRV_NOMEM;
    json_decref(doc);
    json_decref(meta);
    if (e != DRV_OK)
        token_out[0] = '\0';
    return e;
}

drv_err drv_api_bootstrap(drv_api *a, char *token_out, size_t cap)
{
    int64_t n = 0;
    drv_err e = a->store->ops->platform_token_count(a->store, &n);
    if (e != DRV_OK)
        return e;
    if (n > 0)
        return DRV_EXISTS;
    return drv_api_create_platform_token(a->store, "bootstrap", token_out, cap);
}
