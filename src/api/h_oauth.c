/*
 * h_oauth.c — the OAuth 2.0 token endpoint (client credentials grant, RFC
 * 6749 §4.4), the JSON Web Key Set that verifies its tokens, and the
 * platform admin's view and rotation of the signing keys (ADR-0010).
 *
 * POST /oauth/token is not a REST resource and does not speak problem+json:
 * it answers in RFC 6749's own form, {"error", "error_description"} with 400
 * or 401, because that is what OAuth client libraries parse.  Its client
 * authenticates with HTTP Basic (client_id:client_secret, each form-encoded,
 * §2.3.1) or with client_id and client_secret in the form — one method per
 * request.  Every answer is Cache-Control: no-store (§5.1).
 *
 * A granted scope is a subset of the scopes the client was registered with:
 * all of them when the request names none.  A client registered without
 * scopes may do all its role allows, so it may narrow its token to any words
 * of the vocabulary (scopes.def).  The router enforces the token's scope
 * claim like an API token's scopes (api.c).
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#include "api/api_int.h"
#include "api/api_oauth.h"
#include "api/jwt.h"
#include "core/b64.h"
#include "core/alloc.h"
#include "core/log.h"

/* Form fields the token endpoint reads; others are ignored (§3.2). */
enum {
    F_GRANT,
    F_SCOPE,
    F_ID,
    F_SECRET,
    F_COUNT
};
static const char *const form_names[F_COUNT] = {"grant_type", "scope", "client_id",
                                                "client_secret"};

/* Longest value of each field, for the buffers below. */
/* Longest form field; the scope field may hold the whole vocabulary. */
#define FIELD_MAX DRV_SCOPES_MAX

typedef struct form {
    char v[F_COUNT][FIELD_MAX]; /* decoded values */
    bool has[F_COUNT];          /* sent with a non-empty value */
} form;

/* -- answers ------------------------------------------------------------------ */

/* An RFC 6749 §5.2 error; 401 (invalid_client) also asks for HTTP Basic.
 * desc must stay within %x20-21 / %x23-5B / %x5D-7E (no quote, no backslash). */
static void oauth_error(api_ctx *x, int status, const char *code, const char *desc)
{
    if (status == 401) {
        x->api->auth_failures++;
        drv_http_add_header(x->resp, "WWW-Authenticate", "Basic realm=\"drover\"");
    }
    api_json(x, status, json_pack("{s:s, s:s}", "error", code, "error_description", desc));
}

/* -- reading the request -------------------------------------------------------- */

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* One application/x-www-form-urlencoded component into out[cap]: '+' is a
 * space, %XX a byte.  False when an escape is malformed, decodes to NUL, or
 * the text does not fit. */
static bool form_decode(const char *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (n - i < 3 || hex(p[i + 1]) < 0 || hex(p[i + 2]) < 0)
                return false;
            c = (char)(hex(p[i + 1]) << 4 | hex(p[i + 2]));
            if (c == '\0')
                return false;
            i += 2;
        }
        if (o + 1 >= cap)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

/* Read the fields of a form body; NULL when fine, else why it is not (for
 * error_description). */
static const char *form_parse(drv_span body, form *f)
{
    memset(f, 0, sizeof(*f));
    const char *p = body.p, *end = body.p + body.n;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        const char *name_end = eq ? eq : pair_end;
        char name[32];
        if (pair_end > p && form_decode(p, (size_t)(name_end - p), name, sizeof(name))) {
            for (int k = 0; k < F_COUNT; k++) {
                if (strcmp(name, form_names[k]) != 0)
                    continue;
                const char *v = eq ? eq + 1 : pair_end;
                if (v == pair_end)
                    break; /* no value: as if omitted (§3.2) */
                if (f->has[k])
                    return "a parameter is repeated";
                if (!form_decode(v, (size_t)(pair_end - v), f->v[k], sizeof(f->v[k])))
                    return "a parameter is malformed or longer than 255 bytes";
                f->has[k] = true;
            }
        }
        p = amp ? amp + 1 : end;
    }
    return NULL;
}

/* The media type of Content-Type (before any ';') is want, without case. */
static bool media_type_is(drv_span ct, const char *want)
{
    size_t n = 0;
    while (n < ct.n && ct.p[n] != ';')
        n++;
    while (n > 0 && (ct.p[n - 1] == ' ' || ct.p[n - 1] == '\t'))
        n--;
    return n == strlen(want) && strncasecmp(ct.p, want, n) == 0;
}

/* HTTP Basic client credentials (§2.3.1: the id and secret are form-encoded
 * before base64).  0: no Authorization header; 1: read into id and secret;
 * -1: an Authorization header that is not valid Basic credentials. */
static int basic_credentials(api_ctx *x, char id[FIELD_MAX], char secret[FIELD_MAX])
{
    drv_span v;
    if (!drv_http_header_get(x->req, "authorization", &v))
        return 0;
    if (v.n < 7 || strncasecmp(v.p, "Basic ", 6) != 0)
        return -1;
    const char *b = v.p + 6;
    size_t n = v.n - 6;
    while (n && *b == ' ')
        b++, n--;
    uint8_t raw[2 * FIELD_MAX + 2];
    size_t len = 0;
    if (!drv_b64_decode(b, n, raw, sizeof(raw), &len))
        return -1;
    const uint8_t *colon = memchr(raw, ':', len);
    if (!colon || colon == raw ||
        !form_decode((const char *)raw, (size_t)(colon - raw), id, FIELD_MAX) ||
        !form_decode((const char *)colon + 1, len - (size_t)(colon + 1 - raw), secret, FIELD_MAX) ||
        !secret[0])
        return -1;
    return 1;
}

/* -- scopes --------------------------------------------------------------------- */

/* word (n bytes) is one of the space-separated words of list. */
static bool has_word(const char *list, const char *word, size_t n)
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

/* The scope to grant into out[cap]: the requested words (RFC 6749 §3.3
 * syntax, each registered for the client — or, for a client without scopes,
 * each of the vocabulary — repeats dropped), or all the client's when none
 * are asked for.  False: invalid_scope. */
static bool grant_scope(const form *f, const drv_oauth_client *c, char *out, size_t cap)
{
    out[0] = '\0';
    if (!f->has[F_SCOPE]) {
        snprintf(out, cap, "%s", c->scopes);
        return true;
    }
    size_t o = 0;
    for (const char *p = f->v[F_SCOPE]; *p;) {
        const char *sp = strchr(p, ' ');
        size_t n = sp ? (size_t)(sp - p) : strlen(p);
        if (n == 0 || (sp && !sp[1]))
            return false; /* two spaces in a row, or a leading or trailing one */
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)p[i];
            if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\')
                return false;
        }
        if (c->scopes[0] ? !has_word(c->scopes, p, n) : !api_scope_known(p, n))
            return false;
        if (!has_word(out, p, n)) {
            if (o + n + 2 > cap)
                return false;
            if (o)
                out[o++] = ' ';
            memcpy(out + o, p, n);
            o += n;
            out[o] = '\0';
        }
        p += n + (sp != NULL);
    }
    return true;
}

/* -- POST /oauth/token ------------------------------------------------------------ */

/* The client's tenant exists and is not deleted. */
static bool tenant_live(drv_store *st, const char *id)
{
    json_t *t = NULL;
    const char *status = NULL;
    if (st->ops->platform_tenant_get(st, id, &t) == DRV_OK)
        status = json_string_value(json_object_get(t, "status"));
    bool live = status && strcmp(status, "deleted") != 0;
    json_decref(t);
    return live;
}

void api_oauth_token(api_ctx *x)
{
    form f;
    char bid[FIELD_MAX], bsecret[FIELD_MAX], scope[DRV_SCOPES_MAX];
    drv_span ct;
    drv_http_add_header(x->resp, "Cache-Control", "no-store");
    drv_http_add_header(x->resp, "Pragma", "no-cache");
    if (!drv_http_header_get(x->req, "content-type", &ct) ||
        !media_type_is(ct, "application/x-www-form-urlencoded")) {
        oauth_error(x, 400, "invalid_request",
                    "send the request as application/x-www-form-urlencoded");
        return;
    }
    const char *why = form_parse(x->req->body, &f);
    if (why) {
        oauth_error(x, 400, "invalid_request", why);
        return;
    }

    /* Client authentication: exactly one method (§2.3). */
    const char *id, *secret;
    int basic = basic_credentials(x, bid, bsecret);
    if (basic < 0) {
        oauth_error(x, 401, "invalid_client",
                    "the Authorization header is not HTTP Basic credentials");
        goto out;
    }
    if (basic) {
        if (f.has[F_SECRET]) {
            oauth_error(x, 400, "invalid_request",
                        "authenticate the client one way: HTTP Basic or the form, not both");
            goto out;
        }
        if (f.has[F_ID] && strcmp(f.v[F_ID], bid) != 0) {
            oauth_error(x, 400, "invalid_request", "client_id differs from the HTTP Basic user");
            goto out;
        }
        id = bid;
        secret = bsecret;
    } else if (f.has[F_ID] && f.has[F_SECRET]) {
        id = f.v[F_ID];
        secret = f.v[F_SECRET];
    } else {
        oauth_error(x, 401, "invalid_client",
                    "authenticate the client with HTTP Basic or client_id and client_secret");
        goto out;
    }
    drv_store *st = x->api->store;
    drv_oauth_client c;
    drv_err e = st->ops->lookup_oauth_client(st, id, &c);
    if (e != DRV_OK && e != DRV_NOTFOUND && e != DRV_INVAL) {
        api_store_error(x, e, "OAuth client");
        goto out;
    }
    uint8_t h[32];
    api_sha256(secret, strlen(secret), h);
    /* The digest is compared in constant time even for an unknown client. */
    bool secret_ok = CRYPTO_memcmp(h, c.secret_sha256, sizeof(h)) == 0 && e == DRV_OK;
    if (!secret_ok || c.revoked || !tenant_live(st, c.tenant)) {
        oauth_error(x, 401, "invalid_client", "client authentication failed");
        goto out_wipe;
    }

    if (!f.has[F_GRANT]) {
        oauth_error(x, 400, "invalid_request", "grant_type is required");
        goto out_wipe;
    }
    if (strcmp(f.v[F_GRANT], "client_credentials") != 0) {
        oauth_error(x, 400, "unsupported_grant_type", "only client_credentials is supported");
        goto out_wipe;
    }
    if (!grant_scope(&f, &c, scope, sizeof(scope))) {
        oauth_error(x, 400, "invalid_scope",
                    "ask only for scopes registered for the client, separated by single spaces");
        goto out_wipe;
    }
    char *jwt = NULL;
    e = api_oauth_issue(x->api->oauth, &c, scope, &jwt);
    if (e != DRV_OK) {
        drv_error("oauth: cannot sign an access token", "error", drv_strerror(e));
        api_problem(x, 500, NULL, "cannot sign the access token");
        goto out_wipe;
    }
    api_json(x, 200,
             json_pack("{s:s, s:s, s:i, s:s}", "access_token", jwt, "token_type", "Bearer",
                       "expires_in", (int)api_oauth_ttl(x->api->oauth), "scope", scope));
    drv_free(jwt);
out_wipe:
    OPENSSL_cleanse(&c, sizeof(c));
out:
    OPENSSL_cleanse(&f, sizeof(f));
    OPENSSL_cleanse(bsecret, sizeof(bsecret));
}

/* -- keys ---------------------------------------------------------------------------- */

void api_oauth_jwks(api_ctx *x)
{
    json_t *set = NULL;
    drv_err e = api_oauth_key_set(x->api->oauth, &set);
    if (e != DRV_OK) {
        api_store_error(x, e, "signing key");
        return;
    }
    /* Short: relying parties refetch on an unknown kid, and a retired key
     * leaves the set when its window closes. */
    drv_http_add_header(x->resp, "Cache-Control", "public, max-age=60");
    api_json(x, 200, set);
}

void api_signing_keys_list(api_ctx *x)
{
    json_t *out = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->platform_signing_key_list(st, &out);
    if (e != DRV_OK)
        api_store_error(x, e, "signing key");
    else
        api_json(x, 200, out);
}

void api_signing_keys_rotate(api_ctx *x)
{
    char kid[64];
    drv_err e = api_oauth_rotate(x->api->oauth, kid, sizeof(kid));
    if (e != DRV_OK) {
        api_store_error(x, e, "signing key");
        return;
    }
    json_t *detail = json_pack("{s:s}", "kid", kid);
    api_audit(x, "signing_key.rotate", "/api/v1/signing-keys", detail);
    json_decref(detail);
    drv_store *st = x->api->store;
    json_t *list = NULL, *key = NULL;
    e = st->ops->platform_signing_key_list(st, &list);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(list, "items"), i, v)
    {
        const char *k = json_string_value(json_object_get(v, "kid"));
        if (!key && k && strcmp(k, kid) == 0)
            key = json_incref(v);
    }
    json_decref(list);
    if (!key)
        api_store_error(x, e == DRV_OK ? DRV_IO : e, "signing key");
    else
        api_json(x, 200, key);
}
