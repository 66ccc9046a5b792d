/*
 * api_docs.c — shared create/list/get/patch/delete for document resources.
 *
 * PATCH is a JSON merge patch (RFC 7386) over the client-writable fields;
 * the result is validated as a whole and stored only if the version still
 * matches If-Match (when given), so two editors cannot silently overwrite
 * each other.
 */
#include <stdio.h>
#include <string.h>

#include "api/api_docs.h"

const char *doc_path(api_ctx *x, const doc_kind *k, const char *id, char *buf, size_t cap)
{
    snprintf(buf, cap, "/api/v1/tenants/%s/%s/%s", x->scope.tenant, k->collection, id);
    return buf;
}

static void action(const doc_kind *k, const char *verb, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s.%s", k->what, verb);
}

void doc_create(api_ctx *x, const doc_kind *k)
{
    json_t *doc;
    if (!api_body(x, &doc))
        return;
    if (!api_check_fields(x, doc, k->writable) || !k->check(x, doc, true) ||
        (k->before_create && !k->before_create(x, doc)))
        goto out;
    drv_store *st = x->api->store;
    json_t *stored = NULL;
    drv_err e = st->ops->doc_create(st, &x->scope, k->kind, doc, &stored);
    if (e != DRV_OK) {
        api_store_error(x, e, k->what);
        goto out;
    }
    char path[400], act[64];
    doc_path(x, k, json_string_value(json_object_get(stored, "id")), path, sizeof(path));
    action(k, "create", act, sizeof(act));
    api_audit(x, act, path, NULL);
    if (k->after_create)
        k->after_create(x, stored);
    drv_http_add_header(x->resp, "Location", "%s", path);
    api_etag(x, stored);
    api_json(x, 201, stored);
out:
    json_decref(doc);
}

void doc_list(api_ctx *x, const doc_kind *k, const drv_doc_filter *f)
{
    drv_page pg;
    /* A sorted list's cursor carries the last key (a name of up to 200 bytes)
     * beside the id. */
    char cursor[1024];
    if (!api_page(x, &pg, cursor, sizeof(cursor)))
        return;
    json_t *out = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->doc_list(st, &x->scope, k->kind, f, &pg, &out);
    if (e != DRV_OK)
        api_store_error(x, e, k->what);
    else
        api_json(x, 200, out);
}

void doc_get(api_ctx *x, const doc_kind *k, const char *id)
{
    json_t *out = NULL;
    drv_store *st = x->api->store;
    drv_err e = st->ops->doc_get(st, &x->scope, k->kind, id, &out);
    if (e != DRV_OK) {
        api_store_error(x, e, k->what);
        return;
    }
    /* A conditional GET: the client's copy is current. */
    if (api_not_modified(x, out)) {
        json_decref(out);
        return;
    }
    api_etag(x, out);
    api_json(x, 200, out);
}

void doc_patch(api_ctx *x, const doc_kind *k, const char *id)
{
    int64_t expected;
    json_t *patch;
    if (!api_if_match(x, &expected) || !api_body(x, &patch))
        return;
    drv_store *st = x->api->store;
    json_t *cur = NULL, *stored = NULL;
    drv_err e = st->ops->doc_get(st, &x->scope, k->kind, id, &cur);
    if (e != DRV_OK) {
        api_store_error(x, e, k->what);
        goto out;
    }
    if (!api_check_fields(x, patch, k->writable))
        goto out;
    /* "id" may appear in a patch only unchanged. */
    json_t *pid = json_object_get(patch, "id");
    if (pid && (!json_is_string(pid) || strcmp(json_string_value(pid), id) != 0)) {
        api_problem(x, 400, "invalid", "\"id\" cannot be changed");
        goto out;
    }
    api_merge_patch(cur, patch);
    if (!k->check(x, cur, false))
        goto out;
    if (expected == 0 && json_integer_value(json_object_get(cur, "version")) > 0)
        expected = json_integer_value(json_object_get(cur, "version")); /* no lost update */
    e = st->ops->doc_replace(st, &x->scope, k->kind, id, cur, expected, &stored);
    if (e != DRV_OK) {
        api_store_error(x, e, k->what);
        goto out;
    }
    char path[400], act[64];
    action(k, "update", act, sizeof(act));
    api_audit(x, act, doc_path(x, k, id, path, sizeof(path)), patch);
    api_etag(x, stored);
    api_json(x, 200, stored);
out:
    json_decref(cur);
    json_decref(patch);
}

void doc_delete(api_ctx *x, const doc_kind *k, const char *id)
{
    drv_store *st = x->api->store;
    drv_err e = st->ops->doc_delete(st, &x->scope, k->kind, id);
    if (e != DRV_OK) {
        api_store_error(x, e, k->what);
        return;
    }
    char path[400], act[64];
    action(k, "delete", act, sizeof(act));
    api_audit(x, act, doc_path(x, k, id, path, sizeof(path)), NULL);
    x->resp->status = 204;
}
