/* err.c — messages and names for drv_err, generated from the DRV_ERRORS table. */
#include "core/err.h"

static const char *const messages[] = {
#define DRV_ERR_MSG(name, msg) msg,
    DRV_ERRORS(DRV_ERR_MSG)
#undef DRV_ERR_MSG
};

static const char *const names[] = {
#define DRV_ERR_NAME(name, msg) #name,
    DRV_ERRORS(DRV_ERR_NAME)
#undef DRV_ERR_NAME
};

const char *drv_strerror(drv_err err)
{
    if ((unsigned)err >= DRV_ERR_COUNT)
        return "unknown error";
    return messages[err];
}

const char *drv_errname(drv_err err)
{
    if ((unsigned)err >= DRV_ERR_COUNT)
        return "UNKNOWN";
    return names[err];
}
