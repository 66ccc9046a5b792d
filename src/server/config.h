/*
 * config.h — the server's settings, loaded from defaults, a config file,
 * the environment and flags, in that order of precedence (ADR-0004).
 */
#ifndef DRV_SERVER_CONFIG_H
#define DRV_SERVER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"

typedef struct drv_settings {
#define CONFIG_KEY(name, field, type, def, desc) CONFIG_FIELD_##type field;
#define CONFIG_FIELD_STR char *
#define CONFIG_FIELD_UINT uint64_t
#define CONFIG_FIELD_BOOL bool
#define CONFIG_FIELD_ANON int
#include "server/config_keys.def"
#undef CONFIG_KEY
} drv_settings;

/* Apply every default. */
drv_err drv_settings_defaults(drv_settings *s);
/* Set one key from text; DRV_NOTFOUND for an unknown key, DRV_CONFIG for a bad value. */
drv_err drv_settings_set(drv_settings *s, const char *key, const char *value);
/* Load a `key = value` file; errors name the file and line. */
drv_err drv_settings_load_file(drv_settings *s, const char *path);
/* Apply DROVER_* environment variables. */
drv_err drv_settings_load_env(drv_settings *s);
/* Print the key table (name, default, env var, description). */
void drv_settings_print_keys(FILE *out);
void drv_settings_free(drv_settings *s);

#endif
