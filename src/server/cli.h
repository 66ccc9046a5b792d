/*
 * cli.h — the administrator subcommands: `drover tenant ...`, `drover device
 * ...` and `drover token ...` (all but `token create --platform`, which
 * main.c keeps: it writes to the registry file directly, for recovery).
 *
 * They are clients of the REST API (docs/openapi.yaml) and nothing more:
 * every action is one or more HTTP requests to --url with --token, so they
 * work against any Drover server the token reaches and obey the same
 * roles, tenant wall and audit log as every other client.  Output is a
 * table for people, or the API's JSON with --json for scripts.  See
 * docs/cli.md.
 */
#ifndef DRV_SERVER_CLI_H
#define DRV_SERVER_CLI_H

/*
 * Run `drover NOUN VERB ...`: argv[0] is "tenant", "device" or "token".
 * Returns the process exit status: 0 done, 1 the server or the connection
 * said no (the reason is on stderr), 2 a usage error.
 */
int drv_cli_main(int argc, char **argv);

#endif
