/*
 * api_docs.h — the five operations every document resource shares (users,
 * devices, profiles and groups): create, list, get, merge-patch with
 * If-Match, delete.  A resource supplies its kind, names and a validator.
 */
#ifndef DRV_API_API_DOCS_H
#define DRV_API_API_DOCS_H

#include "api/api_int.h"

typedef struct doc_kind {
    const char *kind;       /* store kind (DRV_KIND_*) */
    const char *what;       /* "device", for messages */
    const char *collection; /* "devices", for paths and audit actions */
    /* Validate a whole document (after a patch too); answer 400 and return false. */
    bool (*check)(api_ctx *x, json_t *doc, bool creating);
    /* Fields a client may set (NULL-terminated); the rest are read-only. */
    const char *const *writable;
    /* Optional: called before a create is stored (quotas, defaults); false: answered. */
    bool (*before_create)(api_ctx *x, json_t *doc);
    /* Optional: called after a create is stored (events). */
    void (*after_create)(api_ctx *x, json_t *stored);
} doc_kind;

void doc_create(api_ctx *x, const doc_kind *k);
void doc_list(api_ctx *x, const doc_kind *k, const drv_doc_filter *f);
void doc_get(api_ctx *x, const doc_kind *k, const char *id);
void doc_patch(api_ctx *x, const doc_kind *k, const char *id);
void doc_delete(api_ctx *x, const doc_kind *k, const char *id);

/* "/api/v1/tenants/<tenant>/<collection>/<id>" into buf. */
const char *doc_path(api_ctx *x, const doc_kind *k, const char *id, char *buf, size_t cap);

#endif
