/*
 * twin_store.c — the parts of the twin store contract (twin_store.h) that
 * do not depend on a backend: command state names and releasing the heap
 * parts of the structs the store fills.  The SQLite backend is
 * twin_sqlite.c.
 */
#include "twin/twin_store.h"

#include <string.h>

#include "core/alloc.h"

/* Indexed by drv_cmd_state; the names are the API's and the stored ones. */
static const char *const state_names[DRV_CMD_STATE_COUNT] = {
    [DRV_CMD_QUEUED] = "queued",       [DRV_CMD_SENT] = "sent",
    [DRV_CMD_DELIVERED] = "delivered", [DRV_CMD_SUCCEEDED] = "succeeded",
    [DRV_CMD_FAILED] = "failed",       [DRV_CMD_TIMED_OUT] = "timed_out",
    [DRV_CMD_EXPIRED] = "expired",     [DRV_CMD_CANCELLED] = "cancelled",
};

const char *drv_cmd_state_name(drv_cmd_state s)
{
    if ((unsigned)s >= DRV_CMD_STATE_COUNT)
        return "unknown";
    return state_names[s];
}

int drv_cmd_state_parse(const char *name)
{
    for (int i = 0; name && i < DRV_CMD_STATE_COUNT; i++)
        if (strcmp(name, state_names[i]) == 0)
            return i;
    return -1;
}

void drv_command_clear(drv_command *c)
{
    if (!c)
        return;
    drv_free(c->params);
    drv_free(c->result);
    drv_free(c->error);
    memset(c, 0, sizeof(*c));
}

void drv_shadow_row_clear(drv_shadow_row *r)
{
    if (!r)
        return;
    json_decref(r->stored);
    memset(r, 0, sizeof(*r));
}
