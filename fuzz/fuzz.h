/*
 * fuzz.h — what every libFuzzer harness here shares: FUZZ_ASSERT aborts with
 * the failed invariant, so libFuzzer records the input as a crash.
 */
#ifndef DRV_FUZZ_H
#define DRV_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_ASSERT(cond)                                                                \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#endif
