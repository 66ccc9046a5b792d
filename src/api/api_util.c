/*
 * api_util.c — what every handler needs: JSON in and out, problem answers
 * (RFC 9457), pagination and ETag parameters, document validation, JSON
 * merge patch (RFC 7386), the audit log, and secrets.
 */
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "api/api_int.h"
#include "core/alloc.h"
#include "core/log.h"

#define PROBLEM_BASE "https://drover.dev/problems/"

static void set_body(drv_http_response *resp, const char *text, size_t n)
{
    drv_buf_free(&resp->body);
    if (drv_buf_append(&resp->body, text, n) != DRV_OK)
        resp->status = 500;
}

void api_problem(api_ctx *x, int status, const char *type, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    char type_uri[128] = "about:blank";
    if (type)
        snprintf(type_uri, sizeof(type_uri), PROBLEM_BASE "%s", type);
    json_t *p = json_pack("{s:s, s:s, s:i, s:s}", "type", type_uri, "title",
                          drv_http_reason(status), "status", status, "detail", detail);
    char *text = p ? json_dumps(p, JSON_COMPACT) : NULL;
    x->resp->status = status;
    x->resp->content_type = "application/problem+json";
    if (text)
        set_body(x->resp, text, strlen(text));
    free(text); /* jansson's allocation */
    json_decref(p);
}

void api_json(api_ctx *x, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        api_problem(x, 500, NULL, "cannot encode the answer");
        return;
    }
    x->resp->status = status;
    x->resp->content_type = "application/json";
    set_body(x->resp, text, strlen(text));
    free(text);
}

void api_store_error(api_ctx *x, drv_err e, const char *what)
{
    switch (e) {
    case DRV_NOTFOUND:
        api_problem(x, 404, NULL, "no such %s", what);
        break;
    case DRV_EXISTS:
        api_problem(x, 409, "exists", "this %s id is taken (ids are never reused)", what);
        break;
    case DRV_CONFLICT:
        api_problem(x, 412, "version-mismatch",
                    "the %s changed since the version given in If-Match", what);
        break;
    case DRV_INVAL:
        api_problem(x, 400, "invalid", "invalid %s", what);
        break;
    case DRV_LIMIT:
        api_problem(x, 409, "limit", "too many live %ss: revoke one first", what);
        break;
    case DRV_TOOBIG:
        api_problem(x, 413, NULL, "the %s is too large", what);
        break;
    case DRV_AGAIN:
        drv_http_add_header(x->resp, "Retry-After", "1");
        api_problem(x, 503, NULL, "the registry is busy; retry");
        break;
    default:
        drv_error("registry error", "what", what, "error", drv_strerror(e));
        api_problem(x, 500, NULL, "registry error");
    }
}

/* Does the If-None-Match list `v` hold `*` or the ETag of version `ver`,
 * compared weakly (RFC 9110 §13.1.2: W/"3" matches "3")? */
static bool none_match_hits(drv_span v, long long ver)
{
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        if (i < v.n && v.p[i] == '*')
            return true;
        if (i + 1 < v.n && v.p[i] == 'W' && v.p[i + 1] == '/')
            i += 2;
        if (i >= v.n || v.p[i] != '"')
            return false; /* malformed: treated as no match */
        size_t start = ++i;
        while (i < v.n && v.p[i] != '"')
            i++;
        if (i >= v.n)
            return false;
        char buf[32];
        size_t n = i - start;
        if (n > 0 && n < sizeof(buf)) {
            memcpy(buf, v.p + start, n);
            buf[n] = '\0';
            char *end;
            long long got = strtoll(buf, &end, 10);
            if (!*end && got == ver)
                return true;
        }
        i++;
    }
    return false;
}

bool api_not_modified(api_ctx *x, json_t *doc)
{
    drv_span inm;
    long long ver = (long long)json_integer_value(json_object_get(doc, "version"));
    if (!drv_http_header_get(x->req, "if-none-match", &inm) || !none_match_hits(inm, ver))
        return false;
    drv_http_add_header(x->resp, "ETag", "\"%lld\"", ver);
    x->resp->status = 304;
    return true;
}

void api_etag(api_ctx *x, json_t *doc)
{
    json_int_t v = json_integer_value(json_object_get(doc, "version"));
    drv_http_add_header(x->resp, "ETag", "\"%lld\"", (long long)v);
}

/* The media type of Content-Type (before any ';'), compared exactly, without case. */
static bool media_type_is(drv_span ct, const char *want)
{
    size_t n = 0;
    while (n < ct.n && ct.p[n] != ';')
        n++;
    while (n > 0 && (ct.p[n - 1] == ' ' || ct.p[n - 1] == '\t'))
        n--;
    return n == strlen(want) && strncasecmp(ct.p, want, n) == 0;
}

bool api_content_type_is(api_ctx *x, const char *want)
{
    drv_span ct;
    return drv_http_header_get(x->req, "content-type", &ct) && media_type_is(ct, want);
}

bool api_body(api_ctx *x, json_t **out)
{
    drv_span ct;
    if (!drv_http_header_get(x->req, "content-type", &ct) ||
        !(media_type_is(ct, "application/json") ||
          media_type_is(ct, "application/merge-patch+json"))) {
        api_problem(x, 415, NULL, "send the body as application/json");
        return false;
    }
    json_error_t err;
    json_t *j = json_loadb(x->req->body.p, x->req->body.n, JSON_REJECT_DUPLICATES, &err);
    if (!j) {
        api_problem(x, 400, "bad-json", "invalid JSON at line %d column %d: %s", err.line,
                    err.column, err.text);
        return false;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        api_problem(x, 400, "bad-json", "the body must be a JSON object");
        return false;
    }
    *out = j;
    return true;
}

bool api_query(api_ctx *x, const char *name, char *buf, size_t cap)
{
    bool truncated = false;
    buf[0] = '\0';
    if (!drv_http_query_get(x->req, name, buf, cap, &truncated))
        return false;
    if (truncated) {
        /* Never drop a filter silently: an unfiltered answer would be wrong. */
        buf[0] = '\0';
        api_problem(x, 400, "invalid", "query parameter \"%s\" is longer than %zu characters", name,
                    cap - 1);
        return false;
    }
    return true;
}

bool api_page(api_ctx *x, drv_page *pg, char *cursor_buf, size_t cap)
{
    char limit[16];
    memset(pg, 0, sizeof(*pg));
    if (api_query(x, "cursor", cursor_buf, cap) && cursor_buf[0])
        pg->cursor = cursor_buf;
    if (api_failed(x))
        return false;
    if (api_query(x, "limit", limit, sizeof(limit))) {
        char *end;
        long v = strtol(limit, &end, 10);
        if (*end || v < 1 || v > 1000) {
            api_problem(x, 400, "invalid", "limit must be an integer from 1 to 1000");
            return false;
        }
        pg->limit = (uint32_t)v;
    }
    return !api_failed(x);
}

bool api_if_match(api_ctx *x, int64_t *expected)
{
    drv_span v;
    *expected = 0;
    if (!drv_http_header_get(x->req, "if-match", &v))
        return true;
    /* "*": any current version (the resource must exist, which the handler checks). */
    if (v.n == 1 && v.p[0] == '*')
        return true;
    /* A weak ETag never matches in If-Match (strong comparison, RFC 9110
     * §13.1.1): a version that cannot be current gives the 412. */
    if (v.n > 2 && v.p[0] == 'W' && v.p[1] == '/') {
        *expected = INT64_MAX;
        return true;
    }
    char buf[32];
    if (v.n >= 3 && v.n < sizeof(buf) && v.p[0] == '"' && v.p[v.n - 1] == '"') {
        memcpy(buf, v.p + 1, v.n - 2);
        buf[v.n - 2] = '\0';
        char *end;
        long long n = strtoll(buf, &end, 10);
        if (!*end && n > 0) {
            *expected = n;
            return true;
        }
    }
    api_problem(x, 400, "invalid", "If-Match must be an ETag this API gave, like \"3\", or *");
    return false;
}

bool api_check_string(api_ctx *x, json_t *doc, const char *field, size_t max, bool required)
{
    json_t *v = json_object_get(doc, field);
    if (!v) {
        if (required)
            api_problem(x, 400, "invalid", "\"%s\" is required", field);
        return !required;
    }
    size_t n = json_is_string(v) ? json_string_length(v) : 0;
    if (!json_is_string(v) || n == 0 || n > max) {
        api_problem(x, 400, "invalid", "\"%s\" must be a string of 1 to %zu characters", field,
                    max);
        return false;
    }
    return true;
}

bool api_check_string_map(api_ctx *x, json_t *doc, const char *field)
{
    json_t *v = json_object_get(doc, field);
    if (!v)
        return true;
    bool ok = json_is_object(v) && json_object_size(v) <= 256;
    const char *k;
    json_t *e;
    json_object_foreach(v, k, e)
    {
        if (!ok)
            break;
        ok = strlen(k) >= 1 && strlen(k) <= 128 && json_is_string(e) &&
             json_string_length(e) <= 1024 && !strchr(k, '=');
    }
    if (!ok)
        api_problem(x, 400, "invalid",
                    "\"%s\" must be an object of at most 256 string values (keys 1 to 128 "
                    "characters without '=', values up to 1024)",
                    field);
    return ok;
}

bool api_check_fields(api_ctx *x, json_t *doc, const char *const *allowed)
{
    const char *k;
    json_t *v;
    json_object_foreach(doc, k, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, k) == 0;
        if (!ok) {
            api_problem(x, 400, "invalid", "unknown or read-only field \"%s\"", k);
            return false;
        }
    }
    return true;
}

/* RFC 6749 §3.3 scope-token characters. */
static bool scope_word_ok(const char *w)
{
    for (const unsigned char *p = (const unsigned char *)w; *p; p++)
        if (*p < 0x21 || *p > 0x7e || *p == '"' || *p == '\\')
            return false;
    return *w != '\0';
}

/* One word of a "scopes" array (at most 64 bytes, no space). */
static bool scope_ok(json_t *v, bool oauth_words)
{
    if (!json_is_string(v) || json_string_length(v) > 64)
        return false;
    if (oauth_words)
        return strlen(json_string_value(v)) == json_string_length(v) &&
               scope_word_ok(json_string_value(v));
    return json_string_length(v) >= 1 && !strchr(json_string_value(v), ' ');
}

bool api_check_grant(api_ctx *x, json_t *doc, const char *what, bool oauth_words)
{
    api_role r = api_role_from_name(json_string_value(json_object_get(doc, "role")));
    if (r == ROLE_NONE || r == ROLE_PLATFORM_ADMIN) {
        api_problem(x, 400, "invalid", "\"role\" must be viewer, operator or tenant_admin");
        return false;
    }
    if (r > x->role) {
        api_problem(x, 403, "forbidden", "a %s cannot be given more than its creator's role", what);
        return false;
    }
    return api_check_scopes(x, doc, what, oauth_words);
}

bool api_check_scopes(api_ctx *x, json_t *doc, const char *what, bool oauth_words)
{
    json_t *scopes = json_object_get(doc, "scopes");
    if (!scopes || (json_is_array(scopes) && json_array_size(scopes) == 0)) {
        if (x->tok.scopes[0]) {
            api_problem(x, 403, "insufficient-scope",
                        "a token with scopes cannot make a %s without any (it could do more)",
                        what);
            return false;
        }
        return true;
    }
    /* Stored space-separated in DRV_SCOPES_MAX bytes (drv_token_info.scopes,
     * drv_oauth_client.scopes): the whole vocabulary fits. */
    bool ok = json_is_array(scopes) && json_array_size(scopes) <= 64;
    size_t i, total = 0;
    json_t *v;
    json_array_foreach(scopes, i, v)
    {
        ok = ok && scope_ok(v, oauth_words);
        total += json_string_length(v) + 1;
    }
    if (!ok || total > DRV_SCOPES_MAX - 1) {
        if (oauth_words)
            api_problem(x, 400, "invalid",
                        "\"scopes\" must be up to 64 words of printable ASCII without spaces, "
                        "quotes or backslashes, %d bytes in all",
                        DRV_SCOPES_MAX - 1);
        else
            api_problem(x, 400, "invalid",
                        "\"scopes\" must be up to 64 words without spaces, %d bytes in all",
                        DRV_SCOPES_MAX - 1);
        return false;
    }
    json_array_foreach(scopes, i, v)
    {
        const char *w = json_string_value(v);
        size_t n = json_string_length(v);
        if (!api_scope_known(w, n) || strlen(w) != n) {
            api_problem(x, 400, "invalid",
                        "unknown scope \"%.64s\" in \"scopes\" (words like devices:read, "
                        "devices:write; see x-drover-scope in the API document)",
                        w);
            return false;
        }
        /* A scoped caller hands on only what it holds. */
        if (x->tok.scopes[0] && !api_has_word(x->tok.scopes, w, n)) {
            api_problem(x, 403, "insufficient-scope",
                        "a %s cannot be given the scope \"%s\", which its creator does not hold",
                        what, w);
            return false;
        }
    }
    return true;
}

void api_merge_patch(json_t *target, json_t *patch)
{
    const char *k;
    json_t *v;
    json_object_foreach(patch, k, v)
    {
        if (json_is_null(v)) {
            json_object_del(target, k);
        } else if (json_is_object(v)) {
            json_t *t = json_object_get(target, k);
            if (!json_is_object(t)) {
                t = json_object();
                json_object_set_new(target, k, t);
            }
            api_merge_patch(t, v);
        } else {
            json_object_set(target, k, v);
        }
    }
}

void api_audit(api_ctx *x, const char *action, const char *target, json_t *detail)
{
    drv_store *st = x->api->store;
    const char *tenant = x->scope.tenant;
    drv_err e = st->ops->audit_append(st, tenant, x->tok.id, action, target, x->source, detail);
    if (e != DRV_OK)
        drv_error("cannot write the audit log", "action", action, "error", drv_strerror(e));
}

bool api_random_secret(const char *prefix, size_t n, char *buf, size_t cap)
{
    static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";
    uint8_t raw[64];
    size_t plen = strlen(prefix);
    if (n > sizeof(raw) || plen + n * 8 / 5 + 2 > cap)
        return false;
    if (getrandom(raw, n, 0) != (ssize_t)n)
        return false;
    memcpy(buf, prefix, plen);
    size_t o = plen;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 5) {
            buf[o++] = b32[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0)
        buf[o++] = b32[(acc << (5 - bits)) & 31];
    buf[o] = '\0';
    return true;
}

void api_sha256(const char *s, size_t len, uint8_t out[32])
{
    unsigned int n = 32;
    EVP_Digest(s, len, out, &n, EVP_sha256(), NULL);
}

/* -- failed device logins ------------------------------------------------------------- */

bool api_login_blocked(api_ctx *x, uint32_t *retry_s)
{
    const drv_peer *p = x->req->peer;
    return p && drv_failtab_blocked(&x->api->login_fails, p->family, p->ip,
                                    (uint64_t)drv_store_now_ms(), retry_s);
}

void api_login_failed(api_ctx *x)
{
    const drv_peer *p = x->req->peer;
    if (p)
        drv_failtab_failed(&x->api->login_fails, p->family, p->ip, (uint64_t)drv_store_now_ms());
}

void api_free_node(drv_hnode *n)
{
    drv_free(n); /* the node is the first member of the entry */
}

void api_login_free(drv_api *a)
{
    drv_failtab_free(&a->login_fails);
}

bool api_time_param(api_ctx *x, const char *name, int64_t dflt, int64_t *ms)
{
    char buf[64];
    *ms = dflt;
    if (!api_query(x, name, buf, sizeof(buf)) || !buf[0])
        return !api_failed(x);
    if (drv_store_parse_time(buf, ms))
        return true;
    api_problem(x, 400, "invalid", "\"%s\" must be an RFC 3339 time", name);
    return false;
}
