/*
 * h_telemetry_io.c — telemetry in and out in bulk, over HTTP:
 *
 *   POST .../devices/{device}/telemetry          a device's payload, as it
 *        would publish it over MQTT, through the same pipeline (decoder of
 *        its profile, storage, decode-error events);
 *   POST .../telemetry/import                    a CSV file of samples;
 *   GET  .../devices/{device}/telemetry/export   a device's samples as CSV
 *        or JSON, streamed (http.h), never buffered whole.
 *
 * Ingest authenticates in the handler (the route's role is NONE): either
 * the device itself with its MQTT credentials — HTTP Basic
 * "<tenant>/<device>:<secret or device JWT>", or "Bearer <device JWT>" —
 * checked by the registry backend the broker uses (drv_api_probes
 * .device_auth), or a tenant token with at least the operator role and
 * telemetry:write, through the router's own walls (api_admit).  Either way
 * the decoder is the device profile's: a request cannot pick one (a
 * device's "numeric" key comes from ?key=, as MQTT takes it from the
 * topic).  The answer is sent only after the store's commit: acknowledged
 * means durable.
 *
 * The CSV import is the bulk path and is built for speed (millions of rows
 * a second): one pass with the CSV reader of csv.h, no allocation, JSON or
 * SQL per row — devices are looked up once per request each (a small hash),
 * keys and strings are copied into one arena, and consecutive rows of one
 * device go to the store in one append of up to IMPORT_BATCH samples.  One
 * commit at the end, before the answer.  Rows that cannot be stored are
 * counted and the first IMPORT_MAX_LISTED are listed with their line and
 * reason; the rest of the file goes on.
 *
 * The export producer scans one series at a time in windows (the last time
 * written + 1 starts the next window), so its memory stays flat whatever
 * the range, and it yields to other connections after every slice.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api/api_int.h"
#include "core/ident.h"
#include "api/api_oauth.h"
#include "api/csv.h"
#include "api/jwt.h"
#include "core/alloc.h"
#include "core/b64.h"
#include "core/hmap.h"
#include "core/log.h"
#include "core/num.h"
#include "core/timefmt.h"
#include "pipeline/pipeline.h"
#include "platform/clock.h"

/* Samples per store append in an import, and the arena their keys and strings use. */
#define IMPORT_BATCH 1024u
#define IMPORT_ARENA (512u << 10)
/* Rejected rows listed in an import's answer (all are counted). */
#define IMPORT_MAX_LISTED 100u
#define REASON_MAX 160
/* Samples per store scan of an export, and keys of one device it takes. */
#define EXPORT_SCAN 2048u
#define EXPORT_MAX_KEYS 100000u
/* An Authorization header's credentials, decoded (a device JWT fits). */
#define CRED_MAX (JWT_MAX_LEN + 512)

/* -- shared -------------------------------------------------------------------------- */

static bool telemetry_on(api_ctx *x)
{
    if (x->api->cfg.telemetry && x->api->cfg.pipeline)
        return true;
    api_problem(x, 503, "telemetry-disabled", "telemetry is not enabled on this server");
    return false;
}

/* p[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static bool utf8_ok(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p, *end = s + n;
    while (s < end) {
        unsigned c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        size_t len;
        unsigned min;
        if (c >= 0xC2 && c <= 0xDF)
            len = 2, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, min = 0x10000;
        else
            return false;
        if ((size_t)(end - s) < len)
            return false;
        unsigned cp = c & (0xFF >> (len + 1));
        for (size_t i = 1; i < len; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        s += len;
    }
    return true;
}

/* A sample key: 1..DRV_SAMPLE_MAX_KEY bytes of UTF-8 without control characters. */
static bool key_ok(const char *k, size_t n)
{
    if (n < 1 || n > DRV_SAMPLE_MAX_KEY)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] < 0x20 || k[i] == 0x7f)
            return false;
    return utf8_ok(k, n);
}

/* An integer of up to 18 digits (no overflow possible), the common case of
 * times and counters; anything else goes to drv_parse_i64. */
static bool parse_int(const char *p, size_t n, int64_t *out)
{
    size_t i = n > 0 && (p[0] == '-' || p[0] == '+');
    if (n - i == 0 || n - i > 18)
        return drv_parse_i64(p, n, out);
    int64_t v = 0;
    for (size_t k = i; k < n; k++) {
        unsigned d = (unsigned)(unsigned char)p[k] - '0';
        if (d > 9)
            return false;
        v = v * 10 + (int64_t)d;
    }
    *out = i && p[0] == '-' ? -v : v;
    return true;
}

/* A time parameter or cell: ms since the epoch, or RFC 3339. */
static bool parse_time(const char *p, size_t n, int64_t *out)
{
    return parse_int(p, n, out) || drv_parse_time_ms(p, n, out);
}

/* -- HTTP ingest ------------------------------------------------------------------------ */

static void unauthorized(api_ctx *x, const char *why)
{
    x->api->auth_failures++;
    drv_http_add_header(x->resp, "WWW-Authenticate", "Basic realm=\"drover\"");
    drv_http_add_header(x->resp, "WWW-Authenticate", "Bearer realm=\"drover\"");
    api_problem(x, 401, "unauthorized", "%s", why);
}

/* The decoder of a device of the path's tenant, read from the registry for a
 * tenant token's request: 404 when there is no such device, 409 when it is
 * decommissioned. */
static bool device_decoder(api_ctx *x, const char *device, char *decoder, size_t cap)
{
    drv_store *st = x->api->store;
    json_t *dev = NULL, *prof = NULL;
    drv_err e = st->ops->doc_get(st, &x->scope, DRV_KIND_DEVICE, device, &dev);
    bool ok = false;
    if (e != DRV_OK) {
        api_store_error(x, e, "device");
        goto out;
    }
    const char *status = json_string_value(json_object_get(dev, "status"));
    if (status && strcmp(status, "decommissioned") == 0) {
        api_problem(x, 409, "decommissioned", "the device is decommissioned");
        goto out;
    }
    const char *profile = json_string_value(json_object_get(dev, "profile"));
    if (profile && profile[0]) {
        e = st->ops->doc_get(st, &x->scope, DRV_KIND_PROFILE, profile, &prof);
        if (e != DRV_OK) {
            api_problem(x, e == DRV_NOTFOUND ? 409 : 500, NULL,
                        "the device's profile \"%s\" cannot be read", profile);
            goto out;
        }
    }
    const char *dec = json_string_value(json_object_get(prof, "decoder"));
    snprintf(decoder, cap, "%s", dec && dec[0] ? dec : "json");
    ok = true;
out:
    json_decref(prof);
    json_decref(dev);
    return ok;
}

/* A device's own credentials (user "<tenant>/<device>"): it must be the path's device. */
static bool device_login(api_ctx *x, const char *user, const uint8_t *pw, size_t pwlen,
                         const char *device, char *decoder, size_t cap)
{
    const drv_api_probes *pr = &x->api->cfg.probes;
    if (!pr->device_auth) {
        unauthorized(x, "this server takes tenant tokens only for HTTP ingest");
        return false;
    }
    uint32_t retry_s;
    if (api_login_blocked(x, &retry_s)) {
        /* Each check costs Argon2 on this thread: a peer that keeps guessing waits. */
        drv_http_add_header(x->resp, "Retry-After", "%u", retry_s);
        api_problem(x, 429, "rate-limited",
                    "too many failed device logins from this address; retry later");
        return false;
    }
    drv_telemetry_target t;
    memset(&t, 0, sizeof(t));
    drv_err e = pr->device_auth(pr->ud, user, pw, pwlen, &t);
    if (e == DRV_AUTH) {
        api_login_failed(x);
        unauthorized(x, "wrong device credentials");
        return false;
    }
    if (e == DRV_DENIED) {
        api_problem(x, 403, "forbidden",
                    "the device may not send telemetry (its tenant is not "
                    "active)");
        return false;
    }
    if (e != DRV_OK) {
        drv_http_add_header(x->resp, "Retry-After", "1");
        api_problem(x, 503, NULL, "the registry cannot check credentials now (%s)",
                    drv_strerror(e));
        return false;
    }
    if (strcmp(t.tenant, x->tenant) != 0 || strcmp(t.device, device) != 0) {
        api_problem(x, 403, "forbidden",
                    "these are another device's credentials; a device sends only its own "
                    "telemetry");
        return false;
    }
    x->scope.tenant = x->tenant;
    snprintf(decoder, cap, "%s", t.decoder);
    return true;
}

/* Who sends: a device (Basic, or Bearer with its JWT) or a tenant token; the
 * profile's decoder into `decoder`.  false with the answer set. */
static bool ingest_caller(api_ctx *x, const char *device, char *decoder, size_t cap)
{
    drv_span v;
    if (!drv_http_header_get(x->req, "authorization", &v)) {
        unauthorized(x, "send the device's credentials (Basic) or a bearer token");
        return false;
    }
    char user[2 * API_PARAM_MAX + 2];
    snprintf(user, sizeof(user), "%s/%s", x->tenant, device);
    if (v.n > 6 && strncasecmp(v.p, "Basic ", 6) == 0) {
        const char *b = v.p + 6;
        size_t n = v.n - 6;
        while (n && *b == ' ')
            b++, n--;
        uint8_t *cred = drv_malloc(CRED_MAX + 1);
        size_t len = 0;
        bool ok = false;
        if (!cred) {
            api_problem(x, 503, NULL, "out of memory");
            return false;
        }
        if (!drv_b64_decode(b, n, cred, CRED_MAX, &len)) {
            unauthorized(x, "malformed Basic credentials");
            goto out;
        }
        cred[len] = '\0';
        /* "<tenant>/<device>:<password>": ids may hold ':', so the path's user
         * is tried first; otherwise the user ends at the first ':'. */
        size_t ul = strlen(user);
        char *colon;
        if (len > ul && memcmp(cred, user, ul) == 0 && cred[ul] == ':') {
            colon = (char *)cred + ul;
        } else {
            colon = memchr(cred, ':', len);
            if (!colon || memchr(cred, '\0', (size_t)(colon - (char *)cred))) {
                unauthorized(x, "malformed Basic credentials");
                goto out;
            }
        }
        *colon = '\0';
        const uint8_t *pw = (const uint8_t *)colon + 1;
        ok = device_login(x, (const char *)cred, pw, len - (size_t)(pw - cred), device, decoder,
                          cap);
    out:
        memset(cred, 0, CRED_MAX + 1);
        drv_free(cred);
        return ok;
    }
    if (v.n > 7 && strncasecmp(v.p, "Bearer ", 7) == 0) {
        const char *tok = v.p + 7;
        size_t n = v.n - 7;
        while (n && *tok == ' ')
            tok++, n--;
        /* A JWT is the platform's OAuth access token or one the device signed. */
        drv_token_info ti;
        if (n && n <= JWT_MAX_LEN && api_oauth_is_jwt(tok, n) &&
            !api_oauth_authenticate(x->api->oauth, tok, n, &ti))
            return device_login(x, user, (const uint8_t *)tok, n, device, decoder, cap);
    }
    /* Anything else is a tenant token, held to the router's walls. */
    if (!api_admit(x, ROLE_OPERATOR, "telemetry:write"))
        return false;
    return device_decoder(x, device, decoder, cap);
}

void api_telemetry_ingest(api_ctx *x)
{
    if (!telemetry_on(x))
        return;
    const char *device = api_param(x, 1);
    char decoder[32], key[DRV_SAMPLE_MAX_KEY + 1], tmp[8];
    bool asks_decoder = api_query(x, "decoder", tmp, sizeof(tmp));
    if (api_failed(x))
        return;
    if (asks_decoder) {
        api_problem(x, 400, "bad-parameter",
                    "decoder: the device profile's decoder applies; a request cannot choose one");
        return;
    }
    if (!ingest_caller(x, device, decoder, sizeof(decoder)))
        return;
    bool numeric = strcmp(decoder, "numeric") == 0;
    bool has_key = api_query(x, "key", key, sizeof(key)) && key[0];
    if (api_failed(x))
        return;
    if (numeric && !has_key) {
        api_problem(x, 400, "bad-parameter",
                    "key: required, the device's profile decodes plain numbers (\"numeric\")");
        return;
    }
    if (!numeric && has_key) {
        api_problem(x, 400, "bad-parameter",
                    "key: only for a \"numeric\" profile; this device's decoder is \"%s\"",
                    decoder);
        return;
    }
    drv_span ct = {NULL, 0};
    drv_http_header_get(x->req, "content-type", &ct);
    drv_envelope env = {
        .tenant = x->tenant,
        .device = device,
        .protocol = DRV_PROTO_HTTP,
        .topic = x->req->path,
        .recv_ms = (int64_t)drv_wall_ms(),
        .payload = x->req->body,
        .content_type = ct,
        .decoder = decoder,
        .key = numeric ? (drv_span){key, strlen(key)} : (drv_span){NULL, 0},
    };
    drv_pipeline *pl = x->api->cfg.pipeline;
    drv_ingest_result res;
    memset(&res, 0, sizeof(res));
    drv_err e = drv_pipeline_ingest(pl, &env, &res);
    if (e == DRV_LIMIT) {
        api_problem(x, 429, "quota-exceeded",
                    "the tenant's telemetry storage quota is used up: nothing was stored");
        return;
    }
    if (e == DRV_MALFORMED) {
        api_problem(x, 400, "telemetry-undecodable", "the %s decoder cannot read the payload: %s",
                    decoder, res.why ? res.why : "malformed");
        return;
    }
    if (e == DRV_NOTFOUND) {
        api_problem(x, 500, NULL, "the device profile's decoder \"%s\" is unknown", decoder);
        return;
    }
    if (e == DRV_OK && res.stored)
        e = drv_pipeline_commit(pl);
    if (e != DRV_OK) {
        drv_warn("HTTP ingest: the telemetry store failed", "tenant", x->tenant, "device", device,
                 "error", drv_strerror(e));
        drv_http_add_header(x->resp, "Retry-After", "1");
        api_problem(x, 503, NULL, "the telemetry store failed (%s); nothing was acknowledged",
                    drv_strerror(e));
        return;
    }
    json_t *body = json_pack("{s:I, s:I}", "stored", (json_int_t)res.stored, "refused",
                             (json_int_t)res.refused);
    if (body && res.why)
        json_object_set_new(body, "reason", json_string(res.why));
    api_json(x, 200, body);
}

/* -- CSV import -------------------------------------------------------------------------- */

/* A device of the file, looked up once per request. */
typedef struct dev_entry {
    drv_hnode h;
    const char *why; /* static: why its rows are refused; NULL: it takes samples */
    char id[];       /* the key */
} dev_entry;

/* One listed rejection. */
typedef struct rejection {
    uint32_t line;
    char reason[REASON_MAX];
} rejection;

/* Column positions in the header (-1: absent). */
typedef struct columns {
    int device, key, ts, value;
    size_t n; /* fields a row must have */
} columns;

typedef struct importer {
    api_ctx *x;
    drv_ts_store *ts;
    bool dry_run;
    bool failed;   /* an answer (5xx) is set: stop */
    drv_hmap devs; /* dev_entry by id */
    /* The batch: samples of one device, in file order. */
    char device[DRV_TS_MAX_ID + 1];
    size_t device_len;      /* 0: no current device */
    const char *device_why; /* the current device's refusal, NULL: fine */
    drv_sample s[IMPORT_BATCH];
    uint32_t line[IMPORT_BATCH]; /* the file line of each sample */
    uint32_t n;
    char *arena; /* keys and strings of the batch */
    size_t used;
    drv_span last_key; /* the previous row's key in the arena (consecutive rows share it) */
    uint64_t accepted, rejected;
    rejection listed[IMPORT_MAX_LISTED];
    uint32_t nlisted;
} importer;

static void reject(importer *im, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reject(importer *im, size_t line, const char *fmt, ...)
{
    im->rejected++;
    if (im->nlisted == IMPORT_MAX_LISTED)
        return;
    rejection *r = &im->listed[im->nlisted++];
    r->line = line > UINT32_MAX ? UINT32_MAX : (uint32_t)line;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
    va_end(ap);
}

/* The store failed as a whole: the request ends with 503 (429 for the
 * tenant's storage quota), nothing acknowledged. */
static void store_failed(importer *im, drv_err e)
{
    if (e == DRV_LIMIT) {
        api_problem(im->x, 429, "quota-exceeded",
                    "the tenant's telemetry storage quota is used up: nothing of this request "
                    "is acknowledged");
        im->failed = true;
        return;
    }
    drv_warn("telemetry import: the store failed", "tenant", im->x->tenant, "error",
             drv_strerror(e));
    drv_http_add_header(im->x->resp, "Retry-After", "1");
    api_problem(im->x, 503, NULL,
                "the telemetry store failed (%s); nothing of this request is acknowledged: send "
                "it again",
                drv_strerror(e));
    im->failed = true;
}

/* Store the batch.  A store that refuses some samples reports only the first:
 * the ones after it are then sent one by one (the rare path), so each
 * refused row is reported with its own line and reason. */
static void flush(importer *im)
{
    uint32_t n = im->n;
    im->n = 0;
    im->used = 0;
    im->last_key = (drv_span){NULL, 0};
    if (n == 0 || im->failed)
        return;
    if (im->dry_run) {
        im->accepted += n;
        return;
    }
    drv_ts_append_result res;
    drv_err e = im->ts->ops->append(im->ts->st, im->x->tenant, im->device, im->s, n, &res);
    if (e != DRV_OK) {
        store_failed(im, e);
        return;
    }
    if (res.refused == 0) {
        im->accepted += n;
        return;
    }
    uint32_t k = res.why_index < n ? res.why_index : 0;
    im->accepted += k;
    reject(im, im->line[k], "the store refused the sample: %s", res.why ? res.why : "refused");
    if (res.refused == 1) {
        im->accepted += n - k - 1;
        return;
    }
    /* Samples after k that were stored are stored again: the same value at the
     * same time, in the same order, so the series does not change. */
    for (uint32_t i = k + 1; i < n; i++) {
        e = im->ts->ops->append(im->ts->st, im->x->tenant, im->device, &im->s[i], 1, &res);
        if (e != DRV_OK) {
            store_failed(im, e);
            return;
        }
        if (res.stored)
            im->accepted++;
        else
            reject(im, im->line[i], "the store refused the sample: %s",
                   res.why ? res.why : "refused");
    }
}

/* Make `id` the current device: look it up (once per request) and say why
 * its rows are refused, if they are. */
static void set_device(importer *im, const char *id, size_t n)
{
    flush(im);
    memcpy(im->device, id, n);
    im->device[n] = '\0';
    im->device_len = n;
    uint64_t h = drv_hash_bytes(id, n, 0);
    dev_entry *d = (dev_entry *)drv_hmap_get(&im->devs, h, id, (uint32_t)n);
    if (d) {
        im->device_why = d->why;
        return;
    }
    const char *why = NULL;
    drv_store *st = im->x->api->store;
    json_t *doc = NULL;
    drv_err e = st->ops->doc_get(st, &im->x->scope, DRV_KIND_DEVICE, im->device, &doc);
    if (e == DRV_NOTFOUND) {
        why = "no such device";
    } else if (e != DRV_OK) {
        json_decref(doc);
        drv_http_add_header(im->x->resp, "Retry-After", "1");
        api_problem(im->x, 503, NULL, "the registry failed (%s); nothing was acknowledged",
                    drv_strerror(e));
        im->failed = true;
        return;
    } else {
        const char *status = json_string_value(json_object_get(doc, "status"));
        if (status && strcmp(status, "decommissioned") == 0)
            why = "the device is decommissioned";
    }
    json_decref(doc);
    im->device_why = why;
    d = drv_malloc(sizeof(*d) + n + 1);
    if (!d)
        return;                       /* not cached: looked up again at its next run of rows */
    memcpy(d->id, im->device, n + 1); /* id is a span of the body: not terminated */
    d->why = why;
    d->h.hash = h;
    d->h.key = d->id;
    d->h.klen = (uint32_t)n;
    if (drv_hmap_put(&im->devs, &d->h) != DRV_OK)
        drv_free(d);
}

/* Copy n bytes into the batch's arena (room was made by the caller). */
static const char *keep(importer *im, const char *p, size_t n)
{
    char *dst = im->arena + im->used;
    memcpy(dst, p, n);
    im->used += n;
    return dst;
}

/* A value cell: integer → INT, decimal → DOUBLE, true/false → BOOL, else STRING. */
static const char *parse_value(const char *v, size_t n, drv_value *out)
{
    if (n == 0)
        return "the value is empty";
    char c = v[0];
    if ((c >= '0' && c <= '9') || c == '-' || c == '+') {
        if (parse_int(v, n, &out->i)) {
            out->type = DRV_VALUE_INT;
            return NULL;
        }
        if (drv_parse_double(v, n, &out->d)) {
            if (isinf(out->d))
                return "the number is too large for a double";
            out->type = DRV_VALUE_DOUBLE;
            return NULL;
        }
    }
    if ((n == 4 && strncasecmp(v, "true", 4) == 0) || (n == 5 && strncasecmp(v, "false", 5) == 0)) {
        out->type = DRV_VALUE_BOOL;
        out->b = n == 4;
        return NULL;
    }
    if (n > DRV_SAMPLE_MAX_STRING)
        return "the string value is longer than 4096 bytes";
    if (!utf8_ok(v, n))
        return "the string value is not valid UTF-8";
    out->type = DRV_VALUE_STRING;
    out->s = (drv_span){v, n};
    return NULL;
}

/*
 * One data record: its fields f[0..nf) (only the first cols->n are set),
 * starting on file line `line`.  stable: the fields point into the request
 * body, which outlives the batch; else into the CSV reader's record buffer,
 * so the key and a string value are copied into the arena.
 */
static void import_row(importer *im, const columns *cols, const drv_span *f, size_t nf, size_t line,
                       bool stable)
{
    if (nf != cols->n) {
        reject(im, line, "the row has %zu fields; the header has %zu", nf, cols->n);
        return;
    }
    drv_span dev = f[cols->device], key = f[cols->key], tsv = f[cols->ts], val = f[cols->value];
    if (dev.n != im->device_len || memcmp(dev.p, im->device, dev.n) != 0) {
        if (!drv_id_valid_n(dev.p, dev.n)) {
            reject(im, line,
                   "device: not a device id (1 to 128 characters of A-Z a-z 0-9 . _ : -)");
            return;
        }
        set_device(im, dev.p, dev.n);
        if (im->failed)
            return;
    }
    if (im->device_why) {
        reject(im, line, "%s", im->device_why);
        return;
    }
    bool same_key =
        im->last_key.p && im->last_key.n == key.n && memcmp(im->last_key.p, key.p, key.n) == 0;
    if (!same_key && !key_ok(key.p, key.n)) {
        reject(im, line, "key: 1 to 128 bytes of UTF-8 without control characters");
        return;
    }
    drv_sample *s = &im->s[im->n];
    if (!parse_time(tsv.p, tsv.n, &s->ts_ms)) {
        reject(im, line, "ts: not a time (ms since the epoch or RFC 3339)");
        return;
    }
    const char *why = parse_value(val.p, val.n, &s->v);
    if (why) {
        reject(im, line, "value: %s", why);
        return;
    }
    size_t need = stable ? 0 : (same_key ? 0 : key.n) + (s->v.type == DRV_VALUE_STRING ? val.n : 0);
    if (im->used + need > IMPORT_ARENA) {
        int64_t ts = s->ts_ms;
        drv_value v = s->v;
        flush(im); /* the batch's arena is full: the sample moves to a new batch */
        if (im->failed)
            return;
        s = &im->s[0];
        s->ts_ms = ts;
        s->v = v;
        same_key = false;
    }
    if (!same_key)
        im->last_key = stable ? key : (drv_span){keep(im, key.p, key.n), key.n};
    s->key = im->last_key;
    if (s->v.type == DRV_VALUE_STRING && !stable)
        s->v.s.p = keep(im, val.p, val.n);
    im->line[im->n++] = line > UINT32_MAX ? UINT32_MAX : (uint32_t)line;
    if (im->n == IMPORT_BATCH)
        flush(im);
}

/*
 * The record at c->p when it is plain — no quote, no carriage return but
 * one ending the line, no NUL — split in place: fields point into the input
 * (at most cap set, all counted in *nf).  The CSV reader would read such a
 * record the same way, only slower (it copies every field).  1: read, c
 * advanced past it; 0: not plain, nothing consumed (api_csv_next reads it);
 * -1: the input is used up.  Blank lines are skipped either way.
 */
static int plain_record(api_csv *c, drv_span *f, size_t cap, size_t *nf)
{
    const char *p = c->p, *end = c->end;
    while (p < end && (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n'))) {
        p += *p == '\r' ? 2 : 1;
        c->line++;
    }
    c->p = p;
    if (p == end)
        return -1;
    const char *s = p;
    size_t n = 0;
    for (; p < end; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch > ',') /* digits, letters, '.', '-', ':': most bytes */
            continue;
        if (ch == ',') {
            if (n < cap)
                f[n] = (drv_span){s, (size_t)(p - s)};
            n++;
            s = p + 1;
        } else if (ch == '\n' || (ch == '\r' && p + 1 < end && p[1] == '\n')) {
            break;
        } else if (ch == '"' || ch == '\r' || ch == '\0') {
            return 0;
        }
    }
    if (n < cap)
        f[n] = (drv_span){s, (size_t)(p - s)};
    *nf = n + 1;
    c->record_line = c->line;
    if (p < end) {
        p += *p == '\r' ? 2 : 1;
        c->line++;
    }
    c->p = p;
    return 1;
}

/* A column name as problem text: printable ASCII, at most 40 characters. */
static const char *shown(const char *h, char out[48])
{
    size_t o = 0;
    for (; *h && o < 40; h++)
        out[o++] = *h >= 0x20 && *h < 0x7f ? *h : '?';
    out[o] = '\0';
    return out;
}

/* The header record; false with 400 answered when it is not one. */
static bool read_header(api_ctx *x, const api_csv *c, columns *cols)
{
    static const struct {
        const char *name;
        int which; /* 0 device, 1 key, 2 ts, 3 value */
    } names[] = {{"device", 0}, {"key", 1},       {"metric", 1}, {"ts", 2},
                 {"ts_ms", 2},  {"timestamp", 2}, {"value", 3}};
    int at[4] = {-1, -1, -1, -1};
    size_t n = api_csv_nfields(c);
    char show[48];
    for (size_t i = 0; i < n; i++) {
        const char *h = api_csv_field(c, i, NULL);
        int which = -1;
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
            if (strcasecmp(h, names[k].name) == 0)
                which = names[k].which;
        if (which < 0) {
            api_problem(x, 400, "invalid",
                        "CSV column \"%s\" is unknown; the columns are device, key (or metric), "
                        "ts (or ts_ms, timestamp) and value",
                        shown(h, show));
            return false;
        }
        if (at[which] >= 0) {
            api_problem(x, 400, "invalid",
                        "CSV column \"%s\" appears twice (or with another "
                        "of its names)",
                        shown(h, show));
            return false;
        }
        at[which] = (int)i;
    }
    static const char *const need[] = {"device", "key", "ts", "value"};
    for (int k = 0; k < 4; k++) {
        if (at[k] < 0) {
            api_problem(x, 400, "invalid", "the CSV header has no \"%s\" column", need[k]);
            return false;
        }
    }
    *cols = (columns){.device = at[0], .key = at[1], .ts = at[2], .value = at[3], .n = n};
    return true;
}

static json_t *import_answer(const importer *im)
{
    json_t *list = json_array();
    for (uint32_t i = 0; list && i < im->nlisted; i++) {
        json_t *r = json_pack("{s:I, s:s}", "line", (json_int_t)im->listed[i].line, "reason",
                              im->listed[i].reason);
        if (!r || json_array_append_new(list, r) != 0) {
            json_decref(list);
            return NULL;
        }
    }
    if (!list)
        return NULL;
    return json_pack("{s:I, s:I, s:o, s:b}", "accepted", (json_int_t)im->accepted, "rejected_count",
                     (json_int_t)im->rejected, "rejected", list, "dry_run", im->dry_run);
}

static void importer_free(importer *im)
{
    size_t b;
    for (drv_hnode *h = drv_hmap_first(&im->devs, &b), *next; h; h = next) {
        next = drv_hmap_next(&im->devs, h, &b);
        drv_free(h);
    }
    drv_hmap_free(&im->devs);
    drv_free(im->arena);
    drv_free(im);
}

void api_telemetry_import(api_ctx *x)
{
    if (!telemetry_on(x))
        return;
    char dry[8];
    bool dry_run = false;
    if (api_query(x, "dry_run", dry, sizeof(dry))) {
        if (strcmp(dry, "true") != 0 && strcmp(dry, "false") != 0) {
            api_problem(x, 400, "bad-parameter", "dry_run must be true or false");
            return;
        }
        dry_run = strcmp(dry, "true") == 0;
    }
    if (api_failed(x))
        return;
    if (!api_content_type_is(x, "text/csv")) {
        api_problem(x, 415, NULL, "send the samples as text/csv");
        return;
    }
    importer *im = drv_calloc(1, sizeof(*im));
    char *arena = im ? drv_malloc(IMPORT_ARENA) : NULL;
    if (!arena) {
        drv_free(im);
        api_problem(x, 503, NULL, "out of memory");
        return;
    }
    im->x = x;
    im->ts = x->api->cfg.telemetry;
    im->dry_run = dry_run;
    im->arena = arena;
    drv_hmap_init(&im->devs);

    api_csv c;
    columns cols;
    drv_span *fields = NULL; /* the current record's fields, one per column */
    api_csv_init(&c, x->req->body.p, x->req->body.n, NULL);
    drv_err e = api_csv_next(&c);
    if (e == DRV_NOTFOUND) {
        api_problem(x, 400, "invalid", "the CSV is empty: it needs a header row");
        goto out;
    }
    if (e != DRV_OK) {
        api_problem(x, e == DRV_NOMEM ? 503 : 400, "bad-csv", "CSV line %zu: %s", c.error_line,
                    c.error ? c.error : drv_strerror(e));
        goto out;
    }
    if (!read_header(x, &c, &cols))
        goto out;
    fields = drv_malloc(cols.n * sizeof(*fields));
    if (!fields) {
        api_problem(x, 503, NULL, "out of memory");
        goto out;
    }
    while (!im->failed) {
        size_t nf = 0;
        int plain = plain_record(&c, fields, cols.n, &nf);
        if (plain < 0) {
            e = DRV_NOTFOUND;
            break;
        }
        if (plain) {
            import_row(im, &cols, fields, nf, c.record_line, true);
            continue;
        }
        /* Quoted fields (or an error to report): the CSV reader's way. */
        if ((e = api_csv_next(&c)) != DRV_OK)
            break;
        nf = api_csv_nfields(&c);
        for (size_t i = 0; i < nf && i < cols.n; i++) {
            fields[i].p = api_csv_field(&c, i, &fields[i].n);
        }
        import_row(im, &cols, fields, nf, c.record_line, false);
    }
    if (!im->failed && e != DRV_NOTFOUND) {
        if (e == DRV_NOMEM) {
            api_problem(x, 503, NULL, "out of memory");
            goto out;
        }
        /* What follows cannot be read: the rows so far stand, the rest is refused. */
        reject(im, c.error_line, "CSV: %s; the rest of the file was not read",
               c.error ? c.error : drv_strerror(e));
    }
    flush(im);
    if (im->failed)
        goto out;
    if (!dry_run && im->accepted) {
        e = im->ts->ops->commit(im->ts->st);
        if (e != DRV_OK) {
            store_failed(im, e);
            goto out;
        }
    }
    json_t *body = import_answer(im);
    if (!body) {
        api_problem(x, 503, NULL, "out of memory");
        goto out;
    }
    api_json(x, 200, body);
out:
    drv_free(fields);
    api_csv_free(&c);
    importer_free(im);
}

/* -- streamed export ---------------------------------------------------------------------- */

typedef struct exporter {
    drv_ts_store *ts;
    char tenant[API_PARAM_MAX];
    char device[API_PARAM_MAX];
    char (*keys)[DRV_SAMPLE_MAX_KEY + 1]; /* the series to write, in order */
    uint32_t nkeys, cap;
    uint32_t ki;        /* the series being written */
    int64_t from, to;   /* the range */
    int64_t next;       /* where the current series' next scan starts */
    bool json;          /* JSON array, else CSV */
    bool any;           /* JSON: an element was written (a comma goes before the next) */
    bool too_many;      /* more than EXPORT_MAX_KEYS series */
    uint32_t prefix_ki; /* the series `prefix` was made for */
    drv_buf *out;       /* during a scan: where rows go */
    bool full;          /* during a scan: out holds a slice; the scan stopped */
    bool oom;           /* an append failed: the stream is aborted */
    uint32_t got;       /* during a scan: samples written */
    int64_t last_ts;    /* during a scan: the last sample's time */
    drv_buf prefix;     /* the current series' text before each value (device and key) */
} exporter;

static void put(exporter *ex, const char *s, size_t n)
{
    if (drv_buf_append(ex->out, s, n) != DRV_OK)
        ex->oom = true; /* out of memory (the cap is far away): the row is cut, abort */
}

static void put_i64(exporter *ex, int64_t v)
{
    char buf[24], *p = buf + sizeof(buf);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    put(ex, p, (size_t)(buf + sizeof(buf) - p));
}

/* s as a CSV field: quoted (quotes doubled) when it must be, or always. */
static drv_err csv_field(drv_buf *b, const char *s, size_t n, bool always)
{
    if (n == 0) /* s may be NULL */
        return always ? drv_buf_append(b, "\"\"", 2) : DRV_OK;
    bool quote = always;
    for (size_t i = 0; i < n && !quote; i++)
        quote = s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
    if (!quote)
        return drv_buf_append(b, s, n);
    drv_err e = drv_buf_append(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < n && e == DRV_OK; i++) {
        if (s[i] == '"') {
            e = drv_buf_append(b, s + start, i + 1 - start); /* the quote, then its double */
            start = i;
        }
    }
    if (e == DRV_OK)
        e = drv_buf_append(b, s + start, n - start);
    return e == DRV_OK ? drv_buf_append(b, "\"", 1) : e;
}

/* s as a JSON string (quotes included; the store keeps UTF-8). */
static drv_err json_str(drv_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (n == 0) /* s may be NULL */
        return drv_buf_append(b, "\"\"", 2);
    drv_err e = drv_buf_append(b, "\"", 1);
    size_t start = 0;
    for (size_t i = 0; i < n && e == DRV_OK; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        e = drv_buf_append(b, s + start, i - start);
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            if (e == DRV_OK)
                e = drv_buf_append(b, esc, 2);
        } else if (e == DRV_OK) {
            e = drv_buf_append(b, esc, 6);
        }
        start = i + 1;
    }
    if (e == DRV_OK)
        e = drv_buf_append(b, s + start, n - start);
    return e == DRV_OK ? drv_buf_append(b, "\"", 1) : e;
}

/* The text every row of the current series starts with. */
static drv_err make_prefix(exporter *ex)
{
    drv_buf *b = &ex->prefix;
    const char *key = ex->keys[ex->ki];
    b->off = b->len = 0;
    drv_err e;
    if (ex->json) {
        e = drv_buf_append(b, "{\"key\":", 7);
        if (e == DRV_OK)
            e = json_str(b, key, strlen(key));
        if (e == DRV_OK)
            e = drv_buf_append(b, ",\"ts\":", 6);
    } else {
        e = csv_field(b, ex->device, strlen(ex->device), false);
        if (e == DRV_OK)
            e = drv_buf_append(b, ",", 1);
        if (e == DRV_OK)
            e = csv_field(b, key, strlen(key), false);
        if (e == DRV_OK)
            e = drv_buf_append(b, ",", 1);
    }
    return e;
}

static bool on_export_sample(void *ud, const drv_sample *s)
{
    exporter *ex = ud;
    if (ex->json && ex->any)
        put(ex, ",\n", 2);
    put(ex, (const char *)ex->prefix.data + ex->prefix.off, drv_buf_avail(&ex->prefix));
    put_i64(ex, s->ts_ms);
    put(ex, ex->json ? ",\"value\":" : ",", ex->json ? 9 : 1);
    char num[DRV_NUM_FORMAT_CAP];
    int n;
    switch (s->v.type) {
    case DRV_VALUE_DOUBLE:
        n = drv_format_double(s->v.d, num);
        if (n > 0)
            put(ex, num, (size_t)n);
        else if (ex->json)
            put(ex, "null", 4); /* NaN and infinities: JSON null, an empty CSV cell */
        break;
    case DRV_VALUE_INT:
        put_i64(ex, s->v.i);
        break;
    case DRV_VALUE_BOOL:
        put(ex, s->v.b ? "true" : "false", s->v.b ? 4 : 5);
        break;
    case DRV_VALUE_STRING:
        if ((ex->json ? json_str(ex->out, s->v.s.p, s->v.s.n)
                      : csv_field(ex->out, s->v.s.p, s->v.s.n, true)) != DRV_OK)
            ex->oom = true;
        break;
    }
    if (ex->json)
        put(ex, "}", 1);
    else
        put(ex, "\r\n", 2);
    ex->any = true;
    ex->got++;
    ex->last_ts = s->ts_ms;
    if (drv_buf_avail(ex->out) >= DRV_HTTP_STREAM_SLICE)
        ex->full = true;
    return !ex->full && !ex->oom;
}

/* The producer (http.h): about one slice of rows per call, series after series. */
static drv_err export_produce(void *ud, drv_buf *out)
{
    exporter *ex = ud;
    ex->out = out;
    while (drv_buf_avail(out) < DRV_HTTP_STREAM_SLICE) {
        if (ex->ki == ex->nkeys) {
            if (ex->json && drv_buf_append(out, "\n]\n", 3) != DRV_OK)
                return DRV_NOMEM;
            return DRV_OK;
        }
        if (ex->prefix_ki != ex->ki) {
            if (make_prefix(ex) != DRV_OK)
                return DRV_NOMEM;
            ex->prefix_ki = ex->ki;
        }
        ex->full = false;
        ex->got = 0;
        drv_err e = ex->ts->ops->scan(ex->ts->st, ex->tenant, ex->device, ex->keys[ex->ki],
                                      ex->next, ex->to, EXPORT_SCAN, on_export_sample, ex);
        if (ex->oom)
            return DRV_NOMEM;
        if (e != DRV_OK && e != DRV_NOTFOUND) /* NOTFOUND: the series was dropped meanwhile */
            return e;
        if (e == DRV_OK && (ex->full || ex->got == EXPORT_SCAN) && ex->last_ts + 1 < ex->to) {
            ex->next = ex->last_ts + 1; /* more of this series from there */
        } else {
            ex->ki++;
            ex->next = ex->from;
        }
    }
    return DRV_AGAIN;
}

static void export_free(void *ud)
{
    exporter *ex = ud;
    drv_buf_free(&ex->prefix);
    drv_free(ex->keys);
    drv_free(ex);
}

/* Collect the device's series names (ops->series: sorted by key). */
static bool collect_key(void *ud, const drv_ts_series_info *si)
{
    exporter *ex = ud;
    if (ex->nkeys == EXPORT_MAX_KEYS) {
        ex->too_many = true;
        return false;
    }
    if (ex->nkeys == ex->cap) {
        uint32_t cap = ex->cap ? ex->cap * 2 : 16;
        void *k = drv_realloc(ex->keys, cap * sizeof(*ex->keys));
        if (!k) {
            ex->oom = true;
            return false;
        }
        ex->keys = k;
        ex->cap = cap;
    }
    snprintf(ex->keys[ex->nkeys++], sizeof(ex->keys[0]), "%s", si->key);
    return true;
}

void api_telemetry_export(api_ctx *x)
{
    drv_ts_store *ts = x->api->cfg.telemetry;
    if (!ts) {
        api_problem(x, 503, "telemetry-disabled", "telemetry is not enabled on this server");
        return;
    }
    char key[DRV_SAMPLE_MAX_KEY + 1], format[8] = "csv";
    bool one_key = api_query(x, "key", key, sizeof(key)) && key[0];
    if (api_failed(x))
        return;
    if (api_query(x, "format", format, sizeof(format)) && strcmp(format, "csv") != 0 &&
        strcmp(format, "json") != 0) {
        api_problem(x, 400, "bad-parameter", "format: csv or json");
        return;
    }
    int64_t from, to;
    if (api_failed(x) || !api_time_range(x, &from, &to))
        return;
    const char *device = api_param(x, 1);
    /* A device of the registry (a decommissioned one still has its history): an
     * id of another tenant's is no more than a missing one. */
    json_t *doc = NULL;
    drv_err e =
        x->api->store->ops->doc_get(x->api->store, &x->scope, DRV_KIND_DEVICE, device, &doc);
    json_decref(doc);
    if (e != DRV_OK) {
        api_store_error(x, e, "device");
        return;
    }
    exporter *ex = drv_calloc(1, sizeof(*ex));
    if (!ex) {
        api_problem(x, 503, NULL, "out of memory");
        return;
    }
    ex->ts = ts;
    snprintf(ex->tenant, sizeof(ex->tenant), "%s", x->tenant);
    snprintf(ex->device, sizeof(ex->device), "%s", device);
    ex->from = ex->next = from;
    ex->to = to;
    ex->json = strcmp(format, "json") == 0;
    ex->prefix_ki = UINT32_MAX;
    drv_buf_init(&ex->prefix, 2 * DRV_SAMPLE_MAX_KEY * 6 + 2 * API_PARAM_MAX + 64);
    /* The series, listed now so that a missing one is a 404, not an empty stream. */
    e = ts->ops->series(ts->st, x->tenant, device, collect_key, ex);
    if (e == DRV_OK && ex->oom) {
        api_problem(x, 503, NULL, "out of memory");
        goto fail;
    }
    if (e == DRV_OK && ex->too_many) {
        api_problem(x, 400, "too-many-series",
                    "the device has more than %u series; export them one ?key= at a time",
                    EXPORT_MAX_KEYS);
        goto fail;
    }
    if (e != DRV_OK && e != DRV_NOTFOUND) {
        api_problem(x, 500, NULL, "the telemetry store failed: %s", drv_strerror(e));
        goto fail;
    }
    if (one_key) {
        bool found = false;
        for (uint32_t i = 0; i < ex->nkeys && !found; i++)
            found = strcmp(ex->keys[i], key) == 0;
        if (!found) {
            api_problem(x, 404, "no-data", "no such series (device and key)");
            goto fail;
        }
        snprintf(ex->keys[0], sizeof(ex->keys[0]), "%s", key);
        ex->nkeys = 1;
    }
    drv_http_response *r = x->resp;
    r->status = 200;
    r->content_type = ex->json ? "application/json" : "text/csv; charset=utf-8";
    drv_http_add_header(r, "Content-Disposition", "attachment; filename=\"%s.%s\"", device,
                        ex->json ? "json" : "csv");
    drv_http_add_header(r, "Cache-Control", "no-store");
    if (ex->json)
        drv_buf_append(&r->body, "[\n", 2);
    else
        drv_buf_append(&r->body, "device,key,ts,value\r\n", 21);
    r->stream = export_produce;
    r->stream_ud = ex;
    r->stream_free = export_free;
    return;
fail:
    export_free(ex);
}
