/*
 * alloc.h — the one allocation wrapper.
 *
 * All heap memory in Drover goes through these functions so that:
 *   - the bytes in use are known (drv_mem_used), which the broker's global
 *     memory cap and the /metrics endpoint read;
 *   - tests can make the Nth allocation fail (drv_mem_fail_at) and prove that
 *     every caller handles NULL (curl "torture" style).
 * Accounting uses malloc_usable_size, so there is no per-block header.
 * drv_free(NULL) is a no-op.  Who frees what is stated at each call site's
 * contract, not here.
 */
#ifndef DRV_CORE_ALLOC_H
#define DRV_CORE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *drv_malloc(size_t size);
void *drv_calloc(size_t n, size_t size);
void *drv_realloc(void *ptr, size_t size);
void drv_free(void *ptr);
/* Copy of s (NUL-terminated); caller frees with drv_free. */
char *drv_strdup(const char *s);
/* Copy of the first n bytes of s plus a NUL; caller frees with drv_free. */
char *drv_strndup(const char *s, size_t n);

/* Bytes currently allocated through the wrapper. */
size_t drv_mem_used(void);
/* Highest value drv_mem_used has had. */
size_t drv_mem_peak(void);

/* Test hook: make the nth allocation from now fail (1 = the next one);
 * 0 disables. Each subsequent allocation succeeds again. */
void drv_mem_fail_at(uint64_t nth);

#endif
