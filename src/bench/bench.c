/* bench.c — placeholder until the load generator lands; see bench.h. */
#include "bench/bench.h"

#include <stdio.h>

int drv_bench_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "drover bench: not built yet\n");
    return 2;
}
