/*
 * sim.h — `drover sim`: a fleet of simulated devices that provisions itself
 * through the REST API and publishes telemetry over MQTT with real
 * credentials, for demos and the README's quick start (docs/cli.md).
 */
#ifndef DRV_SERVER_SIM_H
#define DRV_SERVER_SIM_H

/*
 * Run `drover sim ...`: argv[0] is "sim".  Returns the process exit status:
 * 0 the run ended (--duration, SIGINT or SIGTERM) after at least one device
 * connected, 1 provisioning failed or no device could connect, 2 a usage
 * error.
 */
int drv_sim_main(int argc, char **argv);

#endif
