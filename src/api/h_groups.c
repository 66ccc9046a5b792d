/*
 * h_groups.c — groups of devices, static or dynamic.
 *
 *   {"id", "name", "description"?, "kind": "static" | "dynamic",
 *    "query"?: {"tag"?, "attribute"?, "name_prefix"?, "profile"?}}
 *
 * A static group's members are the devices whose "groups" list names it
 * (h_devices.c checks that each listed group exists and is static); a
 * dynamic group's members are the devices its query matches now, with the
 * meaning of the device list's filters (tag "key" or "key=value",
 * attribute "key=value", name prefix, profile id; every one given must
 * match).  GET .../groups/{group}/devices lists the members with the device
 * list's pagination and sort.
 *
 * Invariant: no device names a group that is missing or dynamic.  So a
 * static group with members cannot be deleted, nor turned dynamic (409,
 * in-use); a dynamic group may become static (its query goes; it starts
 * empty).  Membership is not stored twice: the device documents are the
 * one record of it.
 */
#include <stdio.h>
#include <string.h>

#include "api/api_docs.h"
#include "api/h_devices.h"

/* The devices whose "groups" list names this group; *first (may be NULL)
 * gets the first one's id.  False with the answer set on a store error. */
static bool static_members(api_ctx *x, const char *id, bool *any, char *first, size_t cap)
{
    char eq[160];
    snprintf(eq, sizeof(eq), "groups=%s", id);
    drv_doc_filter f = {.array_contains = eq};
    drv_page pg = {.limit = 1};
    drv_store *st = x->api->store;
    json_t *l = NULL;
    drv_err e = st->ops->doc_list(st, &x->scope, DRV_KIND_DEVICE, &f, &pg, &l);
    if (e != DRV_OK) {
        api_store_error(x, e, "group");
        return false;
    }
    json_t *item = json_array_get(json_object_get(l, "items"), 0);
    *any = item != NULL;
    if (item)
        snprintf(first, cap, "%s", json_string_value(json_object_get(item, "id")));
    json_decref(l);
    return true;
}

/* "key" (value_optional) or "key=value" with a non-empty key. */
static bool pair_ok(const char *s, bool value_optional)
{
    const char *eq = strchr(s, '=');
    return *s && eq != s && (eq || value_optional);
}

static bool check_query(api_ctx *x, json_t *q)
{
    static const char *const fields[] = {"tag", "attribute", "name_prefix", "profile", NULL};
    if (!json_is_object(q) || json_object_size(q) == 0) {
        api_problem(x, 400, "invalid",
                    "a dynamic group needs a \"query\" with at least one of tag, attribute, "
                    "name_prefix, profile");
        return false;
    }
    if (!api_check_fields(x, q, fields) || !api_check_string(x, q, "tag", 299, false) ||
        !api_check_string(x, q, "attribute", 1199, false) ||
        !api_check_string(x, q, "name_prefix", 199, false) ||
        !api_check_string(x, q, "profile", 128, false))
        return false;
    const char *tag = json_string_value(json_object_get(q, "tag"));
    const char *attr = json_string_value(json_object_get(q, "attribute"));
    if ((tag && !pair_ok(tag, true)) || (attr && !pair_ok(attr, false))) {
        api_problem(x, 400, "invalid",
                    "query.tag is \"key\" or \"key=value\", query.attribute \"key=value\"");
        return false;
    }
    return true;
}

static bool check_group(api_ctx *x, json_t *doc, bool creating)
{
    if (!api_check_string(x, doc, "name", 200, true) ||
        !api_check_string(x, doc, "description", 1000, false) ||
        !api_check_string(x, doc, "kind", 16, true))
        return false;
    const char *kind = json_string_value(json_object_get(doc, "kind"));
    json_t *q = json_object_get(doc, "query");
    if (strcmp(kind, "static") == 0) {
        if (q) {
            api_problem(x, 400, "invalid",
                        "a static group has no \"query\": devices join it by listing it in "
                        "their \"groups\"");
            return false;
        }
        return true;
    }
    if (strcmp(kind, "dynamic") != 0) {
        api_problem(x, 400, "invalid", "\"kind\" must be static or dynamic");
        return false;
    }
    if (!check_query(x, q))
        return false;
    /* Turning a static group dynamic would leave devices naming a dynamic group. */
    const char *id = json_string_value(json_object_get(doc, "id"));
    bool any = false;
    char first[130] = "";
    if (!creating && id && !static_members(x, id, &any, first, sizeof(first)))
        return false;
    if (any) {
        api_problem(x, 409, "in-use",
                    "devices list this group as a static member (\"%s\" among them); take it out "
                    "of their \"groups\" first",
                    first);
        return false;
    }
    return true;
}

static const char *const group_fields[] = {"id", "name", "description", "kind", "query", NULL};
static const doc_kind groups = {
    .kind = DRV_KIND_GROUP,
    .what = "group",
    .collection = "groups",
    .check = check_group,
    .writable = group_fields,
};
/* The devices a member list returns (doc_list needs only kind and names). */
static const doc_kind members = {
    .kind = DRV_KIND_DEVICE,
    .what = "device",
    .collection = "devices",
};

void api_groups_create(api_ctx *x)
{
    doc_create(x, &groups);
}

void api_groups_list(api_ctx *x)
{
    drv_doc_filter f = {0};
    char name[200], kind[16], eq[32];
    if (api_query(x, "name_prefix", name, sizeof(name)) && name[0])
        f.name_prefix = name;
    if (api_query(x, "kind", kind, sizeof(kind)) && kind[0]) {
        snprintf(eq, sizeof(eq), "kind=%s", kind);
        f.field_eq = eq;
    }
    if (api_failed(x))
        return;
    doc_list(x, &groups, &f);
}

void api_groups_get(api_ctx *x)
{
    doc_get(x, &groups, api_param(x, 1));
}

void api_groups_patch(api_ctx *x)
{
    doc_patch(x, &groups, api_param(x, 1));
}

void api_groups_delete(api_ctx *x)
{
    const char *id = api_param(x, 1);
    bool any = false;
    char first[130] = "";
    if (!static_members(x, id, &any, first, sizeof(first)))
        return;
    if (any) {
        api_problem(x, 409, "in-use",
                    "devices list this group (\"%s\" among them); take it out of their "
                    "\"groups\" first",
                    first);
        return;
    }
    doc_delete(x, &groups, id);
}

/* The filter that selects a group's members: a static group's by the
 * devices' lists, a dynamic one's by its query.  Strings are borrowed from g
 * or written to eq (160 bytes). */
static void member_filter(json_t *g, const char *group, drv_doc_filter *f, char *eq)
{
    memset(f, 0, sizeof(*f));
    const char *kind = json_string_value(json_object_get(g, "kind"));
    json_t *q = json_object_get(g, "query");
    if (kind && strcmp(kind, "dynamic") == 0) {
        f->tag = json_string_value(json_object_get(q, "tag"));
        f->attr = json_string_value(json_object_get(q, "attribute"));
        f->name_prefix = json_string_value(json_object_get(q, "name_prefix"));
        const char *profile = json_string_value(json_object_get(q, "profile"));
        if (profile) {
            snprintf(eq, 160, "profile=%s", profile);
            f->field_eq = eq;
        }
    } else {
        snprintf(eq, 160, "groups=%s", group);
        f->array_contains = eq;
    }
}

void api_groups_devices(api_ctx *x)
{
    drv_store *st = x->api->store;
    json_t *g = NULL;
    drv_err e = st->ops->doc_get(st, &x->scope, DRV_KIND_GROUP, api_param(x, 1), &g);
    if (e != DRV_OK) {
        api_store_error(x, e, "group");
        return;
    }
    drv_doc_filter f;
    char eq[160], sort[16];
    member_filter(g, api_param(x, 1), &f, eq);
    if (api_sort_param(x, sort, sizeof(sort), &f.sort))
        doc_list(x, &members, &f);
    json_decref(g);
}

drv_err api_group_members(api_ctx *x, const char *group, bool (*fn)(void *ud, const char *id),
                          void *ud)
{
    return api_members(x->api->store, &x->scope, group, NULL, fn, ud);
}

drv_err api_members(drv_store *st, const drv_scope *sc, const char *group, const char *tag,
                    bool (*fn)(void *ud, const char *id), void *ud)
{
    json_t *g = NULL;
    drv_doc_filter f;
    char eq[160], cursor[256] = "";
    drv_err e = DRV_OK;
    if (group) {
        e = st->ops->doc_get(st, sc, DRV_KIND_GROUP, group, &g);
        if (e != DRV_OK)
            return e;
        member_filter(g, group, &f, eq);
    } else {
        memset(&f, 0, sizeof(f));
        f.tag = tag;
    }
    for (;;) {
        drv_page pg = {.cursor = cursor[0] ? cursor : NULL, .limit = 1000};
        json_t *page = NULL;
        e = st->ops->doc_list(st, sc, DRV_KIND_DEVICE, &f, &pg, &page);
        if (e != DRV_OK)
            break;
        json_t *item;
        size_t i;
        json_array_foreach(json_object_get(page, "items"), i, item)
        {
            const char *id = json_string_value(json_object_get(item, "id"));
            if (id && !fn(ud, id))
                e = DRV_NOMEM;
        }
        const char *next = json_string_value(json_object_get(page, "next_cursor"));
        if (e == DRV_OK && next)
            snprintf(cursor, sizeof(cursor), "%s", next);
        json_decref(page);
        if (e != DRV_OK || !next)
            break;
    }
    json_decref(g);
    return e;
}
