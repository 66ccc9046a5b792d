/* alloc.c — accounting allocation wrapper; see alloc.h. */
#include "core/alloc.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_size_t mem_used;
static atomic_size_t mem_peak;
static atomic_uint_fast64_t fail_countdown;

static int should_fail(void)
{
    uint_fast64_t n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (n == 0)
        return 0;
    if (atomic_fetch_sub(&fail_countdown, 1) == 1)
        return 1;
    return 0;
}

static void account_add(void *p)
{
    if (!p)
        return;
    size_t now = atomic_fetch_add_explicit(&mem_used, malloc_usable_size(p), memory_order_relaxed) +
                 malloc_usable_size(p);
    size_t peak = atomic_load_explicit(&mem_peak, memory_order_relaxed);
    while (now > peak && !atomic_compare_exchange_weak(&mem_peak, &peak, now))
        ;
}

static void account_sub(void *p)
{
    if (p)
        atomic_fetch_sub_explicit(&mem_used, malloc_usable_size(p), memory_order_relaxed);
}

void *drv_malloc(size_t size)
{
    if (should_fail())
        return NULL;
    void *p = malloc(size ? size : 1);
    account_add(p);
    return p;
}

void *drv_calloc(size_t n, size_t size)
{
    if (should_fail())
        return NULL;
    void *p = calloc(n ? n : 1, size ? size : 1);
    account_add(p);
    return p;
}

void *drv_realloc(void *ptr, size_t size)
{
    if (should_fail())
        return NULL;
    size_t old = ptr ? malloc_usable_size(ptr) : 0;
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        return NULL;
    atomic_fetch_sub_explicit(&mem_used, old, memory_order_relaxed);
    account_add(p);
    return p;
}

void drv_free(void *ptr)
{
    account_sub(ptr);
    free(ptr);
}

char *drv_strndup(const char *s, size_t n)
{
    char *p = drv_malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *drv_strdup(const char *s)
{
    return drv_strndup(s, strlen(s));
}

size_t drv_mem_used(void)
{
    return atomic_load_explicit(&mem_used, memory_order_relaxed);
}

size_t drv_mem_peak(void)
{
    return atomic_load_explicit(&mem_peak, memory_order_relaxed);
}

void drv_mem_fail_at(uint64_t nth)
{
    atomic_store(&fail_countdown, nth);
}
