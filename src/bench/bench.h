/*
 * bench.h — `drover bench`: an MQTT load generator and latency meter built on
 * the codec library (src/mqtt), used by bench/broker.sh against Drover and
 * Mosquitto alike.  See docs/benchmarks.md.
 */
#ifndef DRV_BENCH_H
#define DRV_BENCH_H

/* Entry point of the subcommand; argv excludes "drover bench". Returns an exit code. */
int drv_bench_main(int argc, char **argv);

#endif
