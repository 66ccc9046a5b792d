/*
 * auth_static.c — the static authentication backend: a password file of
 * Argon2id hashes and a Mosquitto-style ACL file.
 *
 * Password file: one `username:$argon2id$...` per line (`drover passwd`
 * writes them).  ACL file:
 *
 *   topic read $SYS/#              # before any `user` line: anonymous clients
 *   user alice
 *   topic readwrite sensors/#      # rules for alice
 *   pattern readwrite devices/%c/# # every client; %c = client id, %u = user name
 *
 * Access is granted when any applicable rule matches.  Without an ACL file
 * every authenticated client may do everything.  Anonymous clients are
 * admitted never, always, or (the development default) from loopback only.
 *
 * With `namespace_per_user` every user of the password file gets namespace
 * "$T/<user name>" (ADR-0009), and ACL topics are then the topics as that user's
 * clients see them, inside the namespace.  Anonymous clients, and every client
 * when there is no password file (user names are then unchecked), stay global.
 */
#include <argon2.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "broker/auth.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "mqtt/mqtt.h"
#include "platform/fs.h"

typedef struct acl_rule {
    struct acl_rule *next;
    char *user;   /* NULL: anonymous (topic lines before any user line) */
    bool pattern; /* applies to every client, with %c/%u substitution */
    int access;   /* DRV_ACL_READ | DRV_ACL_WRITE */
    char *topic;
} acl_rule;

typedef struct user_entry {
    struct user_entry *next;
    char *name;
    char *hash;
} user_entry;

typedef struct static_auth {
    int allow_anonymous;
    bool namespace_per_user; /* verified users get namespace "$T/<user name>" */
    bool have_passwords;
    bool have_acl;
    user_entry *users;
    acl_rule *rules;
} static_auth;

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
}

/* Split a file into lines; calls fn for each non-empty, non-comment line. */
static drv_err each_line(const char *path, drv_err (*fn)(static_auth *, char *, int),
                         static_auth *a)
{
    drv_buf data;
    drv_buf_init(&data, 64u << 20);
    drv_err e = drv_file_read_all(path, &data);
    if (e) {
        drv_error("cannot read auth file", "path", path, "error", drv_strerror(e));
        drv_buf_free(&data);
        return e;
    }
    if (drv_buf_append(&data, "", 1) != DRV_OK) {
        drv_buf_free(&data);
        return DRV_NOMEM;
    }
    char *save = NULL;
    int lineno = 0;
    for (char *line = strtok_r((char *)data.data, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        trim(line);
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == '\0' || *line == '#')
            continue;
        e = fn(a, line, lineno);
        if (e) {
            char n[16];
            snprintf(n, sizeof(n), "%d", lineno);
            drv_error("bad line in auth file", "path", path, "line", n);
            break;
        }
    }
    drv_buf_free(&data);
    return e;
}

static drv_err password_line(static_auth *a, char *line, int lineno)
{
    (void)lineno;
    char *colon = strchr(line, ':');
    if (!colon || colon == line)
        return DRV_CONFIG;
    *colon = '\0';
    user_entry *u = drv_calloc(1, sizeof(*u));
    if (!u)
        return DRV_NOMEM;
    u->name = drv_strdup(line);
    u->hash = drv_strdup(colon + 1);
    u->next = a->users;
    a->users = u;
    return u->name && u->hash ? DRV_OK : DRV_NOMEM;
}

static char *acl_current_user; /* parse state: only used during drv_static_auth_new */

static drv_err acl_line(static_auth *a, char *line, int lineno)
{
    (void)lineno;
    char *save = NULL;
    char *kw = strtok_r(line, " \t", &save);
    if (strcmp(kw, "user") == 0) {
        char *name = strtok_r(NULL, "", &save);
        if (!name)
            return DRV_CONFIG;
        drv_free(acl_current_user);
        acl_current_user = drv_strdup(name);
        return acl_current_user ? DRV_OK : DRV_NOMEM;
    }
    bool pattern = strcmp(kw, "pattern") == 0;
    if (!pattern && strcmp(kw, "topic") != 0)
        return DRV_CONFIG;
    char *rest = strtok_r(NULL, "", &save);
    if (!rest)
        return DRV_CONFIG;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    int access = DRV_ACL_READ | DRV_ACL_WRITE;
    char *sp = strpbrk(rest, " \t");
    if (sp) {
        *sp = '\0';
        if (strcmp(rest, "read") == 0)
            access = DRV_ACL_READ;
        else if (strcmp(rest, "write") == 0)
            access = DRV_ACL_WRITE;
        else if (strcmp(rest, "readwrite") == 0)
            access = DRV_ACL_READ | DRV_ACL_WRITE;
        else
            return DRV_CONFIG;
        rest = sp + 1;
        while (*rest == ' ' || *rest == '\t')
            rest++;
    }
    acl_rule *r = drv_calloc(1, sizeof(*r));
    if (!r)
        return DRV_NOMEM;
    r->pattern = pattern;
    r->access = access;
    r->topic = drv_strdup(rest);
    r->user = !pattern && acl_current_user ? drv_strdup(acl_current_user) : NULL;
    r->next = a->rules;
    a->rules = r;
    return r->topic ? DRV_OK : DRV_NOMEM;
}

static void static_free(void *state)
{
    static_auth *a = state;
    if (!a)
        return;
    for (user_entry *u = a->users, *n; u; u = n) {
        n = u->next;
        drv_free(u->name);
        drv_free(u->hash);
        drv_free(u);
    }
    for (acl_rule *r = a->rules, *n; r; r = n) {
        n = r->next;
        drv_free(r->user);
        drv_free(r->topic);
        drv_free(r);
    }
    drv_free(a);
}

drv_err drv_static_auth_new(const drv_static_auth_config *cfg, void **state_out)
{
    static_auth *a = drv_calloc(1, sizeof(*a));
    if (!a)
        return DRV_NOMEM;
    a->allow_anonymous = cfg->allow_anonymous;
    a->namespace_per_user = cfg->namespace_per_user;
    drv_err e = DRV_OK;
    if (cfg->password_file && cfg->password_file[0]) {
        a->have_passwords = true;
        e = each_line(cfg->password_file, password_line, a);
    }
    if (e == DRV_OK && cfg->acl_file && cfg->acl_file[0]) {
        a->have_acl = true;
        acl_current_user = NULL;
        e = each_line(cfg->acl_file, acl_line, a);
        drv_free(acl_current_user);
        acl_current_user = NULL;
    }
    if (e) {
        static_free(a);
        return e == DRV_NOMEM ? e : DRV_CONFIG;
    }
    *state_out = a;
    return DRV_OK;
}

/* A verified user's namespace: "$T/<user name>"; DRV_DENIED for a name that is not one
 * topic level (it could reach into another user's namespace). */
static drv_err user_namespace(const char *user, drv_auth_result *result)
{
    int n = snprintf(result->ns, sizeof(result->ns), "$T/%s", user);
    if (n < 0 || (size_t)n >= sizeof(result->ns) || !drv_auth_ns_valid(result->ns, (size_t)n)) {
        result->ns[0] = '\0';
        drv_warn("user name cannot be a namespace: refused", "user", user);
        return DRV_DENIED;
    }
    return DRV_OK;
}

static drv_err static_authenticate(void *state, const drv_client_identity *who,
                                   const uint8_t *password, size_t password_len, bool has_password,
                                   drv_auth_result *result)
{
    static_auth *a = state;
    result->unrestricted = !a->have_acl; /* without an ACL file every topic is allowed */
    if (who->username && a->have_passwords) {
        for (user_entry *u = a->users; u; u = u->next) {
            if (strcmp(u->name, who->username) != 0)
                continue;
            if (!has_password)
                return DRV_AUTH;
            if (argon2id_verify(u->hash, password, password_len) != ARGON2_OK)
                return DRV_AUTH;
            return a->namespace_per_user ? user_namespace(u->name, result) : DRV_OK;
        }
        return DRV_AUTH;
    }
    /* Anonymous (or no password file to check against). */
    if (a->allow_anonymous == 1 || (a->allow_anonymous == 2 && who->peer && who->peer->loopback))
        return DRV_OK;
    return who->username ? DRV_AUTH : DRV_DENIED;
}

/* Expand %c and %u in a pattern; false if a needed value is missing or too long. */
static bool expand(const char *pat, const drv_client_identity *who, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = pat; *p; p++) {
        const char *sub = NULL;
        if (p[0] == '%' && (p[1] == 'c' || p[1] == 'u')) {
            sub = p[1] == 'c' ? who->client_id : who->username;
            if (!sub || strchr(sub, '/') || strchr(sub, '+') || strchr(sub, '#'))
                return false; /* ids that would widen the rule never match */
            p++;
        }
        size_t l = sub ? strlen(sub) : 1;
        if (n + l + 1 > cap)
            return false;
        memcpy(out + n, sub ? sub : p, l);
        n += l;
    }
    out[n] = '\0';
    return true;
}

static drv_err static_authorize(void *state, const drv_client_identity *who, drv_acl_access access,
                                const char *topic)
{
    static_auth *a = state;
    if (!a->have_acl)
        return DRV_OK;
    size_t tlen = strlen(topic);
    char buf[1024];
    for (acl_rule *r = a->rules; r; r = r->next) {
        if (!(r->access & (int)access))
            continue;
        const char *rule = r->topic;
        if (r->pattern) {
            if (!expand(r->topic, who, buf, sizeof(buf)))
                continue;
            rule = buf;
        } else if (r->user ? !who->username || strcmp(r->user, who->username) != 0
                           : who->username != NULL) {
            continue;
        }
        if (strcmp(rule, topic) == 0 ||
            mqtt_topic_matches((const uint8_t *)rule, strlen(rule), (const uint8_t *)topic, tlen))
            return DRV_OK;
    }
    return DRV_DENIED;
}

static bool static_restricts(void *state)
{
    return ((static_auth *)state)->have_acl;
}

/* Only a password check is work (Argon2id); anonymous decisions are immediate. */
static bool static_slow(void *state, const drv_client_identity *who, bool has_password)
{
    static_auth *a = state;
    return who->username && a->have_passwords && has_password;
}

const drv_auth_ops drv_static_auth_ops = {
    .name = "static",
    .authenticate = static_authenticate,
    .authorize = static_authorize,
    .slow = static_slow,
    .restricts = static_restricts,
    .free = static_free,
};

drv_err drv_password_hash(const char *password, char **encoded_out)
{
    uint8_t salt[16];
    if (getrandom(salt, sizeof(salt), 0) != (ssize_t)sizeof(salt))
        return DRV_IO;
    /* OWASP's Argon2id baseline: 19 MiB, 2 passes, 1 lane. */
    const uint32_t t = 2, m = 19456, par = 1;
    size_t len = argon2_encodedlen(t, m, par, sizeof(salt), 32, Argon2_id);
    char *enc = drv_malloc(len);
    if (!enc)
        return DRV_NOMEM;
    if (argon2id_hash_encoded(t, m, par, password, strlen(password), salt, sizeof(salt), 32, enc,
                              len) != ARGON2_OK) {
        drv_free(enc);
        return DRV_INVAL;
    }
    *encoded_out = enc;
    return DRV_OK;
}
