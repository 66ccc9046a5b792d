/*
 * h_devices.h — what other handlers share with h_devices.c: the device
 * validator (a bulk import checks each row exactly as a single create
 * does), the tenant's device quota, and the ?sort parameter of device
 * lists (also used by group member lists).
 */
#ifndef DRV_API_H_DEVICES_H
#define DRV_API_H_DEVICES_H

#include "api/api_int.h"

/* A new device document as POST .../devices takes it: only client-writable
 * fields, each valid, its profile and static groups existing in the tenant.
 * Answers 400 (and returns false) on the first problem. */
bool api_device_check_new(api_ctx *x, json_t *doc);

/* The tenant's device quota (*quota 0: none) and the devices it counts
 * (*used); false with the answer set when the tenant cannot be read. */
bool api_device_quota(api_ctx *x, int64_t *quota, int64_t *used);

/* ?sort= into buf (cap >= 16): *sort is NULL when absent, else one of id,
 * name, created_at, updated_at, each optionally with a leading '-'.  False
 * with a 400 answered for anything else. */
bool api_sort_param(api_ctx *x, char *buf, size_t cap, const char **sort);

#endif
