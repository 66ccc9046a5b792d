/*
 * h_users.c — the people of a tenant: {"id", "name", "email", "role"}.
 * Tokens may name a user; a user's role is the most a token made for them
 * may have.
 */
#include <string.h>

#include "api/api_docs.h"

static bool check_user(api_ctx *x, json_t *doc, bool creating)
{
    if (!api_check_string(x, doc, "name", 200, true) ||
        !api_check_string(x, doc, "email", 254, false) ||
        !api_check_string(x, doc, "role", 32, true))
        return false;
    api_role r = api_role_from_name(json_string_value(json_object_get(doc, "role")));
    if (r == ROLE_NONE || r == ROLE_PLATFORM_ADMIN) {
        api_problem(x, 400, "invalid", "\"role\" must be viewer, operator or tenant_admin");
        return false;
    }
    if (r > x->role) {
        api_problem(x, 403, "forbidden", "a user cannot be given more than the caller's role");
        return false;
    }
    json_t *email = json_object_get(doc, "email");
    if (email && !strchr(json_string_value(email), '@')) {
        api_problem(x, 400, "invalid", "\"email\" must be an e-mail address");
        return false;
    }
    return true;
}

static const char *const user_fields[] = {"id", "name", "email", "role", NULL};
static const doc_kind users = {
    .kind = DRV_KIND_USER,
    .what = "user",
    .collection = "users",
    .check = check_user,
    .writable = user_fields,
};

void api_users_create(api_ctx *x)
{
    doc_create(x, &users);
}
void api_users_list(api_ctx *x)
{
    drv_doc_filter f = {0};
    char name[200];
    if (api_query(x, "name_prefix", name, sizeof(name)) && name[0])
        f.name_prefix = name;
    if (api_failed(x))
        return;
    doc_list(x, &users, &f);
}
void api_users_get(api_ctx *x)
{
    doc_get(x, &users, api_param(x, 1));
}
void api_users_patch(api_ctx *x)
{
    doc_patch(x, &users, api_param(x, 1));
}
void api_users_delete(api_ctx *x)
{
    doc_delete(x, &users, api_param(x, 1));
}
