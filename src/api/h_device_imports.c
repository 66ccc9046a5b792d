/*
 * h_device_imports.c — bulk provisioning: POST .../device-imports with a CSV
 * file or a JSON list of devices.
 *
 *   text/csv          header row, then one device per row.  Columns: id,
 *                     name, profile, groups (ids separated by ';'), secret,
 *                     tag.<key>, attribute.<key>; any subset, in any order,
 *                     but id is required.  An empty cell is an absent field.
 *   application/json  {"devices": [{device fields..., "secret"?}, ...]}
 *
 * Up to IMPORT_MAX_ROWS rows per request (413 beyond: the client splits the
 * file; `drover device import` sends chunks and shows progress between them,
 * since one request is answered only when it is done).  ?dry_run=true runs
 * every check, the store's included, and stores nothing.
 *
 * The steps, each over every row:
 *   1. read the rows (a CSV that is not CSV, or a body that is not the JSON
 *      above, fails the whole request with 400: its rows cannot be trusted);
 *   2. validate each row exactly as POST .../devices does (the same
 *      function: api_device_check_new), plus an id, a secret of 16 to 256
 *      characters and no id twice in the file; a bad row is rejected with
 *      the reason a single create would have given, the rest go on;
 *   3. the tenant's device quota, for the whole batch: if the valid rows do
 *      not all fit, nothing is created (403) — a half-imported file is
 *      harder to finish than a refused one;
 *   4. hash the secrets (Argon2id, ~20 ms each: slow by design, which is why
 *      clients send chunks of a few hundred rows);
 *   5. store the valid rows, DRV_STORE_BATCH_MAX per transaction; a row
 *      whose id is taken (or was ever used) is rejected by the store.
 * The answer is 200 {"total", "created", "rejected": [{"row", "id",
 * "reason"}], "dry_run"}, rows numbered from 1 without the header; a real
 * import writes one audit entry with the counts.  The request holds the API
 * thread while it runs (ADR-0008: one API thread), so other API requests
 * wait; device traffic does not.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "api/api_docs.h"
#include "api/csv.h"
#include "api/h_devices.h"
#include "core/ident.h"
#include "broker/auth.h"
#include "core/alloc.h"
#include "core/hmap.h"
#include "core/log.h"

#define IMPORT_MAX_ROWS 10000
#define SECRET_MIN 16
#define SECRET_MAX 256

typedef struct import_row {
    drv_hnode h;  /* in the id table, keyed by the doc's "id" */
    json_t *doc;  /* the device as a create would take it; NULL if unreadable */
    char *secret; /* the row's secret (drv_malloc'd), or NULL */
    char *hash;   /* its Argon2id hash in a real import (drv_malloc'd) */
    char *reason; /* why the row is rejected (drv_malloc'd; NULL if that failed) */
    bool bad;     /* rejected */
    bool created; /* stored (or, in a dry run, would be) */
} import_row;

typedef struct import {
    import_row *rows;
    size_t n, cap;
    bool dry_run;
    const char *format; /* "csv" or "json", for the audit log */
} import;

/* -- rows ----------------------------------------------------------------------- */

static void too_many_rows(api_ctx *x)
{
    api_problem(x, 413, "too-many-rows",
                "an import takes at most %d rows; split the file into several requests "
                "(`drover device import` sends it in chunks)",
                IMPORT_MAX_ROWS);
}

static import_row *add_row(api_ctx *x, import *im)
{
    if (im->n == IMPORT_MAX_ROWS) {
        too_many_rows(x);
        return NULL;
    }
    if (im->n == im->cap) {
        size_t cap = im->cap ? im->cap * 2 : 256;
        import_row *r = drv_realloc(im->rows, cap * sizeof(*r));
        if (!r) {
            api_problem(x, 503, NULL, "out of memory");
            return NULL;
        }
        im->rows = r;
        im->cap = cap;
    }
    import_row *r = &im->rows[im->n++];
    memset(r, 0, sizeof(*r));
    return r;
}

static void reject(import_row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reject(import_row *r, const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    drv_free(r->reason);
    r->reason = drv_strdup(buf); /* NULL when out of memory: the row is rejected all the same */
    r->bad = true;
}

static bool rejected(const import_row *r)
{
    return r->bad;
}

static void import_free(import *im)
{
    for (size_t i = 0; i < im->n; i++) {
        import_row *r = &im->rows[i];
        json_decref(r->doc);
        if (r->secret) {
            memset(r->secret, 0, strlen(r->secret));
            drv_free(r->secret);
        }
        drv_free(r->hash);
        drv_free(r->reason);
    }
    drv_free(im->rows);
}

/* Take a secret for the row (copied). */
static bool set_secret(api_ctx *x, import_row *r, const char *s, size_t n)
{
    r->secret = drv_strndup(s, n);
    if (!r->secret)
        api_problem(x, 503, NULL, "out of memory");
    return r->secret != NULL;
}

/* -- CSV ------------------------------------------------------------------------ */

typedef enum {
    COL_ID,
    COL_NAME,
    COL_PROFILE,
    COL_GROUPS,
    COL_SECRET,
    COL_TAG,
    COL_ATTR
} col_type;

typedef struct column {
    col_type type;
    char key[130]; /* tag or attribute key */
} column;

/* A column name as problem text: printable ASCII, at most 60 characters, others
 * as '?' (the detail must stay valid UTF-8 whatever the file holds). */
static const char *shown(const char *h, char out[64])
{
    size_t o = 0;
    for (; *h && o < 60; h++)
        out[o++] = *h >= 0x20 && *h < 0x7f ? *h : '?';
    if (*h)
        out[o - 1] = '~';
    out[o] = '\0';
    return out;
}

/* The header row into cols; false with 400 answered when it is not one. */
static bool read_header(api_ctx *x, api_csv *c, column **cols_out, size_t *ncols)
{
    static const struct {
        const char *name;
        col_type type;
    } plain[] = {{"id", COL_ID},
                 {"name", COL_NAME},
                 {"profile", COL_PROFILE},
                 {"groups", COL_GROUPS},
                 {"secret", COL_SECRET}};
    size_t n = api_csv_nfields(c);
    column *cols = drv_calloc(n, sizeof(*cols));
    if (!cols) {
        api_problem(x, 503, NULL, "out of memory");
        return false;
    }
    bool have_id = false;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *h = api_csv_field(c, i, &len);
        char show[64];
        bool known = false;
        for (size_t k = 0; k < sizeof(plain) / sizeof(plain[0]) && !known; k++) {
            if (strcmp(h, plain[k].name) == 0) {
                cols[i].type = plain[k].type;
                known = true;
            }
        }
        const char *key = NULL;
        if (!known && strncmp(h, "tag.", 4) == 0)
            cols[i].type = COL_TAG, key = h + 4;
        else if (!known && strncmp(h, "attribute.", 10) == 0)
            cols[i].type = COL_ATTR, key = h + 10;
        if (!known && !key) {
            api_problem(x, 400, "invalid",
                        "CSV column \"%s\" is unknown; the columns are id, name, profile, "
                        "groups, secret, tag.<key> and attribute.<key>",
                        shown(h, show));
            goto bad;
        }
        if (key) {
            size_t kl = strlen(key);
            json_t *utf8 = json_stringn(key, kl); /* NULL: not UTF-8, so no JSON key */
            json_decref(utf8);
            if (kl < 1 || kl > 128 || strchr(key, '=') || !utf8) {
                api_problem(x, 400, "invalid",
                            "CSV column \"%s\": a key is 1 to 128 bytes of UTF-8 without '='",
                            shown(h, show));
                goto bad;
            }
            memcpy(cols[i].key, key, kl + 1);
        }
        for (size_t k = 0; k < i; k++) {
            if (cols[k].type == cols[i].type && strcmp(cols[k].key, cols[i].key) == 0) {
                api_problem(x, 400, "invalid", "CSV column \"%s\" appears twice", shown(h, show));
                goto bad;
            }
        }
        have_id = have_id || cols[i].type == COL_ID;
    }
    if (!have_id) {
        api_problem(x, 400, "invalid", "the CSV header has no \"id\" column");
        goto bad;
    }
    *cols_out = cols;
    *ncols = n;
    return true;
bad:
    drv_free(cols);
    return false;
}

/* A JSON string of a CSV cell; NULL when it is not UTF-8. */
static json_t *cell_string(const char *s, size_t n)
{
    return json_stringn(s, n);
}

/* The "groups" cell: ids separated by ';' (empty pieces are skipped). */
static json_t *cell_groups(const char *s)
{
    json_t *arr = json_array();
    while (arr && *s) {
        const char *end = strchr(s, ';');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        if (n) {
            json_t *v = json_stringn(s, n);
            if (!v || json_array_append_new(arr, v) != 0) {
                json_decref(arr);
                return NULL;
            }
        }
        s += n + (end != NULL);
    }
    return arr;
}

/* One data record into a row. */
static bool csv_row(api_ctx *x, api_csv *c, const column *cols, size_t ncols, import_row *r)
{
    size_t nf = api_csv_nfields(c);
    /* The id first, so that even a ragged row is reported with it. */
    for (size_t i = 0; i < ncols && i < nf; i++) {
        size_t len;
        const char *v = api_csv_field(c, i, &len);
        json_t *id = cols[i].type == COL_ID && len ? cell_string(v, len) : NULL;
        if (id)
            r->doc = json_pack("{s:o}", "id", id);
    }
    if (nf != ncols) {
        reject(r, "the row has %zu fields; the header has %zu", nf, ncols);
        return true;
    }
    if (!r->doc)
        r->doc = json_object();
    if (!r->doc) {
        api_problem(x, 503, NULL, "out of memory");
        return false;
    }
    for (size_t i = 0; i < ncols; i++) {
        size_t len;
        const char *v = api_csv_field(c, i, &len);
        if (len == 0)
            continue;
        if (cols[i].type == COL_ID) {
            if (!json_object_get(r->doc, "id")) {
                reject(r, "the id cell is not valid UTF-8");
                return true;
            }
            continue;
        }
        json_t *val = NULL;
        const char *field = NULL;
        switch (cols[i].type) {
        case COL_SECRET:
            if (!set_secret(x, r, v, len))
                return false;
            continue;
        case COL_NAME:
            field = "name";
            val = cell_string(v, len);
            break;
        case COL_PROFILE:
            field = "profile";
            val = cell_string(v, len);
            break;
        case COL_GROUPS:
            field = "groups";
            val = cell_groups(v);
            break;
        case COL_TAG:
        case COL_ATTR:
            field = cols[i].type == COL_TAG ? "tags" : "attributes";
            val = cell_string(v, len);
            if (val) {
                json_t *map = json_object_get(r->doc, field);
                if (!map) {
                    map = json_object();
                    json_object_set_new(r->doc, field, map);
                }
                json_object_set_new(map, cols[i].key, val);
                continue;
            }
            break;
        case COL_ID:
            break;
        }
        if (!val) {
            reject(r, "the %s cell is not valid UTF-8", field);
            return true;
        }
        json_object_set_new(r->doc, field, val);
    }
    return true;
}

static bool read_csv(api_ctx *x, import *im)
{
    api_csv c;
    column *cols = NULL;
    size_t ncols = 0;
    bool ok = false;
    api_csv_init(&c, x->req->body.p, x->req->body.n, NULL);
    drv_err e = api_csv_next(&c);
    if (e == DRV_NOTFOUND) {
        api_problem(x, 400, "invalid", "the CSV is empty: it needs a header row");
        goto out;
    }
    if (e == DRV_OK && !read_header(x, &c, &cols, &ncols))
        goto out;
    while (e == DRV_OK && (e = api_csv_next(&c)) == DRV_OK) {
        import_row *r = add_row(x, im);
        if (!r || !csv_row(x, &c, cols, ncols, r))
            goto out;
    }
    if (e == DRV_NOMEM) {
        api_problem(x, 503, NULL, "out of memory");
        goto out;
    }
    if (e != DRV_NOTFOUND) {
        char limits[96] = "";
        if (e == DRV_TOOBIG)
            snprintf(limits, sizeof(limits), " (at most %d bytes a field, %d fields a row)",
                     API_CSV_MAX_FIELD, API_CSV_MAX_FIELDS);
        api_problem(x, 400, "bad-csv", "CSV line %zu: %s%s", c.error_line, c.error, limits);
        goto out;
    }
    ok = true;
out:
    drv_free(cols);
    api_csv_free(&c);
    return ok;
}

/* -- JSON ----------------------------------------------------------------------- */

static bool read_json(api_ctx *x, import *im)
{
    json_t *body;
    if (!api_body(x, &body))
        return false;
    static const char *const fields[] = {"devices", NULL};
    json_t *list = json_object_get(body, "devices");
    bool ok = false;
    if (!api_check_fields(x, body, fields))
        goto out;
    if (!json_is_array(list)) {
        api_problem(x, 400, "invalid", "the body must be {\"devices\": [...]}");
        goto out;
    }
    if (json_array_size(list) > IMPORT_MAX_ROWS) {
        too_many_rows(x);
        goto out;
    }
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d)
    {
        import_row *r = add_row(x, im);
        if (!r)
            goto out;
        if (!json_is_object(d)) {
            reject(r, "a device must be a JSON object");
            continue;
        }
        r->doc = json_incref(d);
        json_t *secret = json_object_get(d, "secret");
        if (secret) {
            if (!json_is_string(secret)) {
                reject(r, "\"secret\" must be a string");
                continue;
            }
            if (!set_secret(x, r, json_string_value(secret), json_string_length(secret)))
                goto out;
            json_object_del(d, "secret");
        }
    }
    ok = true;
out:
    json_decref(body);
    return ok;
}

/* -- validation ---------------------------------------------------------------- */

/*
 * The single-create validator on one row, its answer captured: 1 valid,
 * 0 rejected (reason set), -1 a server failure (answered on x).
 */
static int validate_row(api_ctx *x, import_row *r)
{
    drv_http_response tmp = {.status = 200};
    drv_buf_init(&tmp.headers, 4096);
    drv_buf_init(&tmp.body, 8192);
    api_ctx rx = *x; /* the same request, its answers going to tmp */
    rx.resp = &tmp;
    int verdict = api_device_check_new(&rx, r->doc) ? 1 : 0;
    if (verdict == 0) {
        json_t *p = json_loadb((const char *)tmp.body.data + tmp.body.off, drv_buf_avail(&tmp.body),
                               0, NULL);
        const char *detail = json_string_value(json_object_get(p, "detail"));
        if (tmp.status >= 500) {
            if (tmp.status == 503)
                drv_http_add_header(x->resp, "Retry-After", "1");
            api_problem(x, tmp.status, NULL, "%s", detail ? detail : "registry error");
            verdict = -1;
        } else {
            reject(r, "%s", detail ? detail : "invalid device");
        }
        json_decref(p);
    }
    drv_buf_free(&tmp.headers);
    drv_buf_free(&tmp.body);
    return verdict;
}

/* Step 2 of the top; false with the answer set on a server failure. */
static bool validate(api_ctx *x, import *im)
{
    drv_hmap ids;
    drv_hmap_init(&ids);
    bool ok = true;
    for (size_t i = 0; i < im->n && ok; i++) {
        import_row *r = &im->rows[i];
        if (rejected(r))
            continue;
        json_t *jid = json_object_get(r->doc, "id");
        const char *id = json_string_value(jid);
        size_t sl = r->secret ? strlen(r->secret) : 0;
        if (!jid) {
            reject(r, "\"id\" is required in an import");
            continue;
        }
        if (!id || !drv_id_valid(id)) {
            reject(r, "\"id\" must be 1 to 128 characters of A-Z a-z 0-9 . _ : -");
            continue;
        }
        if (r->secret && (sl < SECRET_MIN || sl > SECRET_MAX)) {
            reject(r, "a device secret has %d to %d characters", SECRET_MIN, SECRET_MAX);
            continue;
        }
        int v = validate_row(x, r);
        if (v < 0) {
            ok = false;
            break;
        }
        if (v == 0)
            continue;
        size_t n = strlen(id);
        uint64_t h = drv_hash_bytes(id, n, 0);
        drv_hnode *prev = drv_hmap_get(&ids, h, id, (uint32_t)n);
        if (prev) {
            reject(r, "the id \"%s\" is also on row %zu", id,
                   (size_t)((import_row *)prev - im->rows) + 1);
            continue;
        }
        r->h.hash = h;
        r->h.key = id; /* owned by r->doc, which does not change from here on */
        r->h.klen = (uint32_t)n;
        if (drv_hmap_put(&ids, &r->h) != DRV_OK) {
            api_problem(x, 503, NULL, "out of memory");
            ok = false;
        }
    }
    drv_hmap_free(&ids);
    return ok;
}

/* -- storing ---------------------------------------------------------------------- */

/* Steps 3 to 5; false with the answer set when nothing could be stored. */
static bool store_rows(api_ctx *x, import *im)
{
    size_t valid = 0;
    for (size_t i = 0; i < im->n; i++)
        valid += !rejected(&im->rows[i]);
    int64_t quota, used;
    if (!api_device_quota(x, &quota, &used))
        return false;
    if (quota > 0 && valid > 0 && used + (int64_t)valid > quota) {
        api_problem(x, 403, "quota-exceeded",
                    "the %zu valid rows do not fit the tenant's device quota (%lld, %lld in use); "
                    "nothing was imported",
                    valid, (long long)quota, (long long)used);
        return false;
    }
    for (size_t i = 0; i < im->n && !im->dry_run; i++) {
        import_row *r = &im->rows[i];
        if (rejected(r) || !r->secret)
            continue;
        if (drv_password_hash(r->secret, &r->hash) != DRV_OK) {
            api_problem(x, 500, NULL, "cannot hash a secret");
            return false;
        }
    }

    drv_store *st = x->api->store;
    drv_doc_batch_item items[DRV_STORE_BATCH_MAX];
    size_t at[DRV_STORE_BATCH_MAX];
    size_t next = 0, stored_batches = 0;
    while (next < im->n) {
        size_t k = 0;
        for (; next < im->n && k < DRV_STORE_BATCH_MAX; next++) {
            import_row *r = &im->rows[next];
            if (rejected(r))
                continue;
            json_object_set_new(r->doc, "status", json_string("active"));
            items[k] = (drv_doc_batch_item){.doc = r->doc, .secret_hash = r->hash};
            at[k++] = next;
        }
        if (k == 0)
            break;
        drv_err e = st->ops->doc_create_many(st, &x->scope, DRV_KIND_DEVICE, items, k, im->dry_run);
        if (e != DRV_OK && stored_batches == 0) {
            api_store_error(x, e, "device");
            return false;
        }
        for (size_t j = 0; j < k; j++) {
            import_row *r = &im->rows[at[j]];
            if (e != DRV_OK)
                reject(r, "not stored: the registry failed (%s); retry this row", drv_strerror(e));
            else if (items[j].result == DRV_OK)
                r->created = true;
            else if (items[j].result == DRV_EXISTS)
                reject(r, "this device id is taken (ids are never reused)");
            else
                reject(r, "the registry refused the device (%s)", drv_strerror(items[j].result));
        }
        if (e != DRV_OK) {
            drv_error("device import stopped", "tenant", x->scope.tenant, "error", drv_strerror(e));
            /* Later rows are not tried: say so for each of them. */
            for (; next < im->n; next++)
                if (!rejected(&im->rows[next]))
                    reject(&im->rows[next], "not stored: the import stopped at a registry "
                                            "failure; retry this row");
            break;
        }
        stored_batches++;
    }
    return true;
}

/* -- the handler ----------------------------------------------------------------- */

static json_t *answer(import *im, size_t *created, size_t *nrej)
{
    json_t *rej = json_array();
    *created = *nrej = 0;
    for (size_t i = 0; rej && i < im->n; i++) {
        import_row *r = &im->rows[i];
        if (r->created) {
            (*created)++;
            continue;
        }
        const char *id = json_string_value(json_object_get(r->doc, "id"));
        json_t *item = json_pack("{s:I, s:o, s:s}", "row", (json_int_t)(i + 1), "id",
                                 id ? json_string(id) : json_null(), "reason",
                                 r->reason ? r->reason : "not stored");
        if (!item || json_array_append_new(rej, item) != 0) {
            json_decref(rej);
            return NULL;
        }
        (*nrej)++;
    }
    if (!rej)
        return NULL;
    return json_pack("{s:I, s:I, s:o, s:b}", "total", (json_int_t)im->n, "created",
                     (json_int_t)*created, "rejected", rej, "dry_run", im->dry_run);
}

void api_device_imports_create(api_ctx *x)
{
import im = {0 };
    char dry[8];
    if (api_query(x, "dry_run", dry, sizeof(dry))) {
        if (strcmp(dry, "true") && strcmp(dry, "false")) {
            api_problem(x, 400, "invalid", "dry_run must be true or false");
            return;
        }
        im.dry_run = strcmp(dry, "true") == 0;
    }
    if (api_failed(x))
        return;
    bool ok;
    if (api_content_type_is(x, "text/csv")) {
        im.format = "csv";
        ok = read_csv(x, &im);
    } else if (api_content_type_is(x, "application/json")) {
        im.format = "json";
        ok = read_json(x, &im);
    } else {
        api_problem(x, 415, NULL, "send the devices as text/csv or application/json");
        return;
    }
    if (!ok || !validate(x, &im) || !store_rows(x, &im))
        goto out;
    size_t created, nrej;
    json_t *body = answer(&im, &created, &nrej);
    if (!body) {
        api_problem(x, 503, NULL, "out of memory");
        goto out;
    }
    if (!im.dry_run) {
        char path[200];
        json_t *detail =
            json_pack("{s:s, s:I, s:I, s:I}", "format", im.format, "total", (json_int_t)im.n,
                      "created", (json_int_t)created, "rejected", (json_int_t)nrej);
        snprintf(path, sizeof(path), "/api/v1/tenants/%s/devices", x->scope.tenant);
        api_audit(x, "device.import", path, detail);
        json_decref(detail);
    }
    api_json(x, 200, body);
out:
    import_free(&im);
}
