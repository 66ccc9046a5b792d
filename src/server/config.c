/*
 * config.c — parsing driven by config_keys.def: one table gives the keys,
 * their types, defaults, environment names and documentation.
 */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "platform/fs.h"

enum ktype {
    T_STR,
    T_UINT,
    T_BOOL,
    T_ANON
};

static const struct key {
    const char *name;
    size_t offset;
    enum ktype type;
    const char *def;
    const char *desc;
} keys[] = {
#define CONFIG_KEY(name, field, type, def, desc) \
    {name, offsetof(drv_settings, field), T_##type, def, desc},
#include "server/config_keys.def"
#undef CONFIG_KEY
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static bool parse_uint(const char *v, uint64_t *out)
{
    if (!isdigit((unsigned char)*v))
        return false;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno)
        return false;
    uint64_t mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1024, end++;
    else if (*end == 'M')
        mul = 1024 * 1024, end++;
    else if (*end == 'G')
        mul = 1024ull * 1024 * 1024, end++;
    if (*end != '\0' || (mul > 1 && n > UINT64_MAX / mul))
        return false;
    *out = (uint64_t)n * mul;
    return true;
}

static drv_err set_key(drv_settings *s, const struct key *k, const char *v)
{
    char *base = (char *)s + k->offset;
    switch (k->type) {
    case T_STR: {
        char *copy = drv_strdup(v);
        if (!copy)
            return DRV_NOMEM;
        drv_free(*(char **)base);
        *(char **)base = copy;
        return DRV_OK;
    }
    case T_UINT:
        return parse_uint(v, (uint64_t *)base) ? DRV_OK : DRV_CONFIG;
    case T_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
            *(bool *)base = true;
        else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
            *(bool *)base = false;
        else
            return DRV_CONFIG;
        return DRV_OK;
    case T_ANON:
        if (!strcmp(v, "never") || !strcmp(v, "false"))
            *(int *)base = 0;
        else if (!strcmp(v, "always") || !strcmp(v, "true"))
            *(int *)base = 1;
        else if (!strcmp(v, "loopback"))
            *(int *)base = 2;
        else
            return DRV_CONFIG;
        return DRV_OK;
    }
    return DRV_CONFIG;
}

drv_err drv_settings_set(drv_settings *s, const char *key, const char *value)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, key) == 0)
            return set_key(s, &keys[i], value);
    return DRV_NOTFOUND;
}

drv_err drv_settings_defaults(drv_settings *s)
{
    memset(s, 0, sizeof(*s));
    for (size_t i = 0; i < NKEYS; i++) {
        drv_err e = set_key(s, &keys[i], keys[i].def);
        if (e)
            return e;
    }
    return DRV_OK;
}

static char *strip(char *p)
{
    while (isspace((unsigned char)*p))
        p++;
    size_t n = strlen(p);
    while (n && isspace((unsigned char)p[n - 1]))
        p[--n] = '\0';
    return p;
}

drv_err drv_settings_load_file(drv_settings *s, const char *path)
{
    drv_buf data;
    drv_buf_init(&data, 16u << 20);
    drv_err e = drv_file_read_all(path, &data);
    if (e == DRV_OK)
        e = drv_buf_append(&data, "", 1);
    if (e) {
        drv_error("cannot read the config file", "path", path, "error", drv_strerror(e));
        drv_buf_free(&data);
        return DRV_CONFIG;
    }
    int lineno = 0;
    char *save = NULL;
    char *text = (char *)data.data;
    for (char *line = text; line; line = save) {
        save = strchr(line, '\n');
        if (save)
            *save++ = '\0';
        lineno++;
        char *hash = strchr(line, '#');
        if (hash && (hash == line || isspace((unsigned char)hash[-1])))
            *hash = '\0';
        char *l = strip(line);
        if (*l == '\0')
            continue;
        char *eq = strchr(l, '=');
        char where[32];
        snprintf(where, sizeof(where), "%d", lineno);
        if (!eq) {
            drv_error("config: expected key = value", "path", path, "line", where);
            e = DRV_CONFIG;
            break;
        }
        *eq = '\0';
        char *key = strip(l), *val = strip(eq + 1);
        size_t vl = strlen(val);
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
            val[vl - 1] = '\0';
            val++;
        }
        e = drv_settings_set(s, key, val);
        if (e) {
            drv_error(e == DRV_NOTFOUND ? "config: unknown key" : "config: bad value", "path", path,
                      "line", where, "key", key);
            e = DRV_CONFIG;
            break;
        }
    }
    drv_buf_free(&data);
    return e;
}

static void env_name(const char *key, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "DROVER_");
    for (const char *p = key; *p && n + 1 < cap; p++)
        out[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

drv_err drv_settings_load_env(drv_settings *s)
{
    for (size_t i = 0; i < NKEYS; i++) {
        char name[128];
        env_name(keys[i].name, name, sizeof(name));
        const char *v = getenv(name);
        if (!v)
            continue;
        if (set_key(s, &keys[i], v) != DRV_OK) {
            drv_error("config: bad value in environment", "variable", name);
            return DRV_CONFIG;
        }
    }
    return DRV_OK;
}

void drv_settings_print_keys(FILE *out)
{
    for (size_t i = 0; i < NKEYS; i++) {
        char name[128];
        env_name(keys[i].name, name, sizeof(name));
        fprintf(out, "%s = %s\n    env: %s\n    %s\n\n", keys[i].name, keys[i].def, name,
                keys[i].desc);
    }
}

void drv_settings_free(drv_settings *s)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].type == T_STR)
            drv_free(*(char **)((char *)s + keys[i].offset));
}
