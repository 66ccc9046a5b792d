/*
 * shadow_doc.h — the shadow document model (ADR-0017): pure functions over
 * jansson values, no I/O, no threads.
 *
 * A shadow holds two JSON objects, `desired` (what applications want) and
 * `reported` (what the device says it has), and a metadata mirror of each:
 * for every leaf of a section (a value that is not an object: numbers,
 * strings, booleans, arrays) the mirror has, at the same path, an object
 * {"timestamp": <ms since the epoch when that value last changed>}; for
 * every object it has an object of the same keys.  The `delta` is computed,
 * never stored: the members of desired whose value differs from reported
 * (recursively for objects; arrays and scalars compare whole).
 *
 * Updates are JSON merge patches (RFC 7386) applied to each section on its
 * own: a member set to null is removed, an object merges recursively, any
 * other value replaces.  A section patch that is JSON null clears the
 * section.  An update that changes no value changes nothing (no version, no
 * timestamps): devices that report the same state again cost nothing.
 *
 * Limits: a section nests at most DRV_SHADOW_MAX_DEPTH objects/arrays deep;
 * the state ({"desired":..,"reported":..} serialised compactly) is at most
 * the caller's max_bytes (the `shadow.max_bytes` setting, 64 KiB by default).
 */
#ifndef DRV_TWIN_SHADOW_DOC_H
#define DRV_TWIN_SHADOW_DOC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Longest shadow name; "" is the classic (unnamed) shadow. */
#define DRV_SHADOW_NAME_MAX 64
/* Deepest nesting of objects and arrays inside desired or reported (the
 * section object itself is depth 1). */
#define DRV_SHADOW_MAX_DEPTH 8
/* Longest client_token echoed back. */
#define DRV_SHADOW_TOKEN_MAX 64

/* A shadow document in memory.  All four json_t are objects owned by the
 * struct (never NULL once initialised). */
typedef struct drv_shadow {
    json_t *desired;
    json_t *reported;
    json_t *meta_desired;  /* metadata mirror of desired */
    json_t *meta_reported; /* metadata mirror of reported */
    int64_t version;       /* +1 on every change; 0: never written */
    int64_t ts_ms;         /* time of the last change; 0: never */
} drv_shadow;

/* An empty shadow (version 0).  DRV_NOMEM. */
drv_err drv_shadow_init(drv_shadow *sh);
void drv_shadow_clear(drv_shadow *sh);

/*
 * Shadow names: "" (classic) or 1..DRV_SHADOW_NAME_MAX of [A-Za-z0-9_:-].
 * "classic" is reserved (the REST API's name for the classic shadow), and so
 * is anything starting with '$'.
 */
bool drv_shadow_name_valid(const char *name);

/* One update request, parsed.  Pointers borrow from the request value. */
typedef struct drv_shadow_update {
    json_t *desired;          /* patch object, json null (clear), or NULL: untouched */
    json_t *reported;         /* the same for reported */
    int64_t expected_version; /* 0: none; else the update applies only at this version */
    const char *client_token; /* echoed in the answer; NULL: none */
} drv_shadow_update;

/*
 * Parse an update request: {"state": {"desired"?: object|null, "reported"?:
 * object|null}, "version"?: integer >= 1, "client_token"?: string (≤
 * DRV_SHADOW_TOKEN_MAX bytes)}.  Unknown top-level members are refused, so
 * are a state with neither section and sections nested deeper than
 * DRV_SHADOW_MAX_DEPTH.  DRV_INVAL with *why a static English reason.
 */
drv_err drv_shadow_parse_update(json_t *req, drv_shadow_update *out, const char **why);

/* The client_token of a request, even of one that did not parse (for the
 * rejected answer); NULL: none or not a short string. */
const char *drv_shadow_client_token(const json_t *req);

/*
 * Apply an update at now_ms.  DRV_CONFLICT when expected_version is set and
 * differs from sh->version; DRV_TOOBIG when the resulting state would be
 * larger than max_bytes and larger than it is now (a shadow left over a
 * lowered limit can still be trimmed); DRV_INVAL (why) for a nesting too
 * deep; DRV_NOMEM.
 * On any error sh is unchanged.  On success *changed says whether any value
 * changed; if so sh->version is incremented, sh->ts_ms = now_ms, and the
 * metadata timestamps of exactly the leaves that were added or changed are
 * now_ms (removed leaves lose their metadata).
 */
drv_err drv_shadow_apply(drv_shadow *sh, const drv_shadow_update *up, int64_t now_ms,
                         size_t max_bytes, bool *changed, const char **why);

/* apply never changes the section objects it replaces (it merges into
 * copies and swaps them in), so a caller may keep a reference to the old
 * desired across the call to compare (the twin service does). */

/* The delta of sh: a new object (empty when desired and reported agree on
 * every desired member); NULL only when out of memory. */
json_t *drv_shadow_delta(const drv_shadow *sh);

/* The metadata of exactly the paths present in `part` (a patch or a
 * delta), taken from `meta` (a metadata mirror): a new object; paths
 * missing in meta (removals) are left out. */
json_t *drv_shadow_meta_of(const json_t *part, const json_t *meta);

/*
 * The stored form and back: {"desired": {..}, "reported": {..},
 * "metadata": {"desired": {..}, "reported": {..}}} (version and time are
 * kept beside it by the store).  drv_shadow_from_stored takes a borrowed
 * value and fills sh (initialised by it); DRV_CORRUPT when the value does
 * not have that shape.
 */
json_t *drv_shadow_to_stored(const drv_shadow *sh);
drv_err drv_shadow_from_stored(const json_t *stored, int64_t version, int64_t ts_ms,
                               drv_shadow *sh);

/*
 * The document applications and devices read (a new object):
 *   {"state": {"desired": {..}, "reported": {..}, "delta"?: {..}},
 *    "metadata": {"desired": {..}, "reported": {..}},
 *    "version": N, "timestamp": ms}
 * with "delta" only when not empty.
 */
json_t *drv_shadow_render(const drv_shadow *sh);

#endif
