/*
 * api_int.h — private to src/api: the request context handlers receive and
 * the helpers every handler uses (JSON bodies, problems, pagination, ETags,
 * audit).  Handlers live in one file per resource (h_<resource>.c).
 */
#ifndef DRV_API_API_INT_H
#define DRV_API_API_INT_H

#include <jansson.h>

#include "api/api.h"
#include "core/failtab.h"
#include "core/hmap.h"

typedef enum {
    ROLE_NONE,
    ROLE_VIEWER,
    ROLE_OPERATOR,
    ROLE_TENANT_ADMIN,
    ROLE_PLATFORM_ADMIN,
} api_role;

/* A scope word of the vocabulary (the words of scopes.def); n bytes. */
bool api_scope_known(const char *word, size_t n);
/* word (n bytes) is one of the space-separated words of list. */
bool api_has_word(const char *list, const char *word, size_t n);

/* Role by name ("viewer", ...); ROLE_NONE when unknown. */
api_role api_role_from_name(const char *name);
const char *api_role_name(api_role r);

#define API_MAX_PARAMS 4
#define API_PARAM_MAX 160

struct drv_api {
    drv_api_config cfg;
    drv_store *store;
    drv_http_server *http;             /* for /metrics; may be NULL */
    drv_hmap buckets;                  /* rate-limit buckets by token id */
    drv_failtab login_fails;           /* failed device logins by peer address (api_login_*) */
    drv_hmap tickets;                  /* stream tickets not yet used (h_stream.c) */
    struct drv_hub *hub;               /* the live hub (NULL: streams answer 503) */
    drv_store *hub_reader;             /* the registry for filters checked on the hub's thread */
    drv_hmap revalidated;              /* hub thread: recent token re-checks (h_stream.c) */
    struct drv_twin *twin;             /* shadows and commands (NULL: 503) */
    struct drv_twin_store *twin_store; /* the API thread's handle */
    struct api_waiter *waiters;        /* synchronous command waits (h_commands.c) */
    /* Signing keys of the OAuth access tokens (api_oauth.h). */
    struct api_oauth *oauth;
    uint64_t started_ms;
    uint64_t requests, rate_limited, auth_failures; /* for /metrics (API thread only) */
};

/* One request on its way through a handler. */
typedef struct api_ctx {
    drv_api *api;
    const drv_http_request *req;
    drv_http_response *resp;
    api_role role;          /* of the caller's token (ROLE_NONE: no token) */
    drv_token_info tok;     /* the caller's token, when role > ROLE_NONE */
    uint8_t tok_sha256[32]; /* an API token's hash (streams re-check it); zero for OAuth */
    drv_scope scope;        /* the {tenant} of the path, when the route has one */
    char tenant[API_PARAM_MAX];
    int nparams;
    char params[API_MAX_PARAMS][API_PARAM_MAX]; /* captured segments, in order */
    char source[DRV_PEER_STRLEN];               /* caller address, for the audit log */
} api_ctx;

/* The value of the path parameter `name` as declared in the route pattern. */
const char *api_param(const api_ctx *x, int index);

/* The router's walls (api.c), for a route of role NONE whose handler takes a
 * tenant token only on some paths (device ingest): a valid bearer token
 * (401), the tenant wall (404), at least `role` (403), `scope` when the token
 * has scopes (403), the rate limit (429); x->role, x->tok and x->scope are
 * set as for any route.  false with the answer set when one stops it. */
bool api_admit(api_ctx *x, api_role role, const char *scope);

/* -- answers ------------------------------------------------------------------ */

/* An application/problem+json answer (RFC 9457); `type` is a slug appended to
 * the problem type base URI, NULL for about:blank. */
void api_problem(api_ctx *x, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A JSON answer; takes the reference to body. */
void api_json(api_ctx *x, int status, json_t *body);
/* Map a store error to its answer (404, 409, 412, 400, 500). */
void api_store_error(api_ctx *x, drv_err e, const char *what);
/* ETag header for a document version. */
void api_etag(api_ctx *x, json_t *doc);
/* A conditional GET whose If-None-Match is doc's version: 304 set, true. */
bool api_not_modified(api_ctx *x, json_t *doc);
/* An error answer has been set (handlers stop there). */
static inline bool api_failed(const api_ctx *x)
{
    return x->resp->status >= 400;
}

/* -- reading requests --------------------------------------------------------- */

/* Failed device logins per peer address (HTTP ingest checks device secrets
 * with Argon2, ~20 ms of the API thread each): api_login_blocked says whether
 * the peer has failed too often lately (seconds to wait in *retry_s);
 * api_login_failed counts one more failure.  API thread only. */
bool api_login_blocked(api_ctx *x, uint32_t *retry_s);
void api_login_failed(api_ctx *x);
void api_login_free(drv_api *a);
/* drv_hmap_clear's release for an entry whose drv_hnode is its first member. */
void api_free_node(drv_hnode *n);

/* The request's media type (Content-Type before any ';', without case) is `want`. */
bool api_content_type_is(api_ctx *x, const char *want);
/* The JSON object body; on failure the answer (400/415) is already set. */
bool api_body(api_ctx *x, json_t **out);
/* ?cursor= and ?limit=; false with a 400 set when malformed. */
bool api_page(api_ctx *x, drv_page *pg, char *cursor_buf, size_t cap);
/* If-Match: *expected = 0 when absent; false with a 400 set when malformed. */
bool api_if_match(api_ctx *x, int64_t *expected);
/* A query parameter copied into buf ("" and false when absent; a value too long
 * for buf also answers 400: check api_failed). */
bool api_query(api_ctx *x, const char *name, char *buf, size_t cap);

/* -- validation helpers (answer 400 and return false when invalid) ----------- */

/* The field, when present, is a string of 1..max chars. */
bool api_check_string(api_ctx *x, json_t *doc, const char *field, size_t max, bool required);
/* The field, when present, is an object of string → string (tags, attributes). */
bool api_check_string_map(api_ctx *x, json_t *doc, const char *field);
/* Only these top-level fields are present (NULL-terminated list). */
bool api_check_fields(api_ctx *x, json_t *doc, const char *const *allowed);
/* The "role" (present, a string) and optional "scopes" of a new credential
 * (what names it in messages: "token", "client"): a tenant role no higher
 * than the caller's (403 if higher), and up to 32 words that fit 255 bytes
 * space-separated.  oauth_words: each word is also RFC 6749 §3.3 scope-token
 * characters (printable ASCII other than space, quote and backslash), so it
 * can be asked for at the token endpoint. */
bool api_check_grant(api_ctx *x, json_t *doc, const char *what, bool oauth_words);
/* The optional "scopes" of a new credential alone (api_check_grant calls it):
 * the syntax above, each word of the vocabulary (scopes.def; 400 naming an
 * unknown word), and — when the caller's own token has scopes — present,
 * non-empty and within the caller's (403), so that a scoped token never
 * makes a wider one. */
bool api_check_scopes(api_ctx *x, json_t *doc, const char *what, bool oauth_words);

/* RFC 7386 JSON merge patch: apply patch to target in place. */
void api_merge_patch(json_t *target, json_t *patch);

/* Record an administrative action in the audit log (failures are logged). */
void api_audit(api_ctx *x, const char *action, const char *target, json_t *detail);

/* Random secret as text: prefix + base32 of n random bytes (buf >= strlen(prefix)+2n). */
bool api_random_secret(const char *prefix, size_t n, char *buf, size_t cap);
/* SHA-256 of a string. */
void api_sha256(const char *s, size_t len, uint8_t out[32]);

/* Call fn with the id of every device in the tenant's group (static or
 * dynamic); DRV_NOTFOUND when there is no such group, DRV_NOMEM when fn
 * returned false. */
drv_err api_group_members(api_ctx *x, const char *group, bool (*fn)(void *ud, const char *id),
                          void *ud);

/* The devices of group `group` (static or dynamic), or else of those with
 * tag `tag` ("key" or "key=value"), in st for tenant sc, each to fn (false
 * stops with DRV_NOMEM).  DRV_NOTFOUND: no such group. */
drv_err api_members(drv_store *st, const drv_scope *sc, const char *group, const char *tag,
                    bool (*fn)(void *ud, const char *id), void *ud);

/* A tenant's status in st: 'a'ctive, 's'uspended, 0 for deleted or unknown. */
char api_tenant_status(drv_store *st, const char *id);

/* ?from= and ?to= of a telemetry route (ms since the epoch or RFC 3339;
 * default: the last 24 hours); false with a 400 set when malformed. */
bool api_time_range(api_ctx *x, int64_t *from, int64_t *to);

/* An RFC 3339 query parameter as ms, dflt when absent; false with a 400 set
 * when malformed (event, audit and history ranges). */
bool api_time_param(api_ctx *x, const char *name, int64_t dflt, int64_t *ms);

/* -- shadows and commands (h_shadows.c, h_commands.c) -------------------------- */

struct drv_twin_actor;
struct drv_twin_answer;
/* The twin service is there (it is whenever the API serves devices); 503
 * otherwise. */
bool api_twin_ready(api_ctx *x);
/* The device exists in the tenant (404) and, for_write, is not
 * decommissioned (409); the twin service is there (503). */
bool api_twin_device(api_ctx *x, const char *device, bool for_write);
/* Who the caller is in histories and events ("token:<id>", "oauth:<id>"). */
void api_twin_actor(api_ctx *x, char *buf, size_t cap, struct drv_twin_actor *who);
/* Answer with the service's verdict; takes doc. */
void api_twin_answer(api_ctx *x, const struct drv_twin_answer *ans, json_t *doc);
/* Free the synchronous command waits still parked (drv_api_free). */
void api_waiters_free(drv_api *a);

/* Drop expired stream tickets (every one with all). */
void api_tickets_sweep(drv_api *a, bool all);
/* Forget the hub thread's recent token re-checks (at drv_api_free). */
void api_revalidated_clear(drv_api *a);

/* Hand every tenant's telemetry retention to the telemetry store (at start). */
drv_err api_apply_retention(drv_api *a);

/* -- handlers (one per route, named in routes.def) ---------------------------- */
#define ROUTE(method, pattern, role, handler) void api_##handler(api_ctx *x);
#include "api/routes.def"
#undef ROUTE

#endif
