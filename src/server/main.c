/*
 * main.c — the drover binary: subcommands and wiring.
 *
 *   drover serve [--config FILE] [--data-dir DIR] [--log-level L] [--set key=value]...
 *   drover passwd USER [PASSWORD]     print a password-file line (Argon2id)
 *   drover token create --platform    a platform admin token, straight into the registry
 *   drover tenant|device|token|telemetry ...  administration through the REST API (cli.c)
 *   drover sim --tenant T ...         simulated devices: provisioned over REST, publishing over MQTT
 *   drover routes                     the REST routes (checked against docs/openapi.yaml)
 *   drover config --list              document every configuration key
 *   drover version
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "bench/bench.h"
#include "net/tls.h"
#include "broker/broker.h"
#include "core/alloc.h"
#include "core/log.h"
#include "server/api_wiring.h"
#include "server/cli.h"
#include "server/config.h"
#include "server/sim.h"

static int usage(void)
{
    fprintf(stderr, "usage: drover serve [--config FILE] [--data-dir DIR] [--log-level LEVEL]\n"
                    "                    [--set key=value]...\n"
                    "       drover bench --help\n"
                    "       drover passwd USER [PASSWORD]\n"
                    "       drover token create --platform [--name NAME] [--data-dir DIR]\n"
                    "       drover tenant|device|token|telemetry --help   (administration)\n"
                    "       drover sim --tenant TENANT [--devices N] ...   (simulated devices)\n"
                    "       drover routes\n"
                    "       drover config --list\n"
                    "       drover version\n");
    return 2;
}

static drv_err apply_set(drv_settings *s, const char *kv)
{
    char key[256];
    const char *eq = strchr(kv, '=');
    if (!eq || (size_t)(eq - kv) >= sizeof(key))
        return DRV_CONFIG;
    memcpy(key, kv, (size_t)(eq - kv));
    key[eq - kv] = '\0';
    drv_err e = drv_settings_set(s, key, eq + 1);
    if (e)
        drv_error("bad --set", "arg", kv);
    return e;
}

static drv_err configure_logging(const drv_settings *s)
{
    drv_log_level lvl;
    if (!drv_log_parse_level(s->log_level, &lvl)) {
        drv_error("config: bad log.level", "value", s->log_level);
        return DRV_CONFIG;
    }
    drv_log_set_level(lvl);
    if (!strcmp(s->log_format, "json"))
        drv_log_set_json(true);
    else if (!strcmp(s->log_format, "text"))
        drv_log_set_json(false);
    else
        drv_log_set_json(!isatty(STDERR_FILENO));
    return DRV_OK;
}

static void broker_config_from(const drv_settings *s, drv_broker_config *c)
{
    memset(c, 0, sizeof(*c)); /* every value below comes from the settings table */
    c->data_dir = s->data_dir[0] ? s->data_dir : NULL;
    c->persist_sync = s->persist_sync;
    c->persist_compact_bytes = s->persist_compact_bytes;
    c->max_connections = (uint32_t)s->max_connections;
    c->max_packet_size =
        (uint32_t)(s->max_packet_size > 268435460u ? 268435460u : s->max_packet_size);
    c->receive_maximum =
        (uint16_t)(s->receive_maximum ? s->receive_maximum > 65535 ? 65535 : s->receive_maximum
                                      : 1);
    c->max_inflight =
        (uint16_t)(s->max_inflight ? s->max_inflight > 65535 ? 65535 : s->max_inflight : 1);
    c->max_queued = (uint32_t)s->max_queued;
    c->topic_alias_maximum =
        (uint16_t)(s->topic_alias_maximum > 65535 ? 65535 : s->topic_alias_maximum);
    c->connect_timeout_ms = (uint32_t)s->connect_timeout_ms;
    c->max_topic_length = (uint32_t)s->max_topic_length;
    c->max_topic_levels = (uint32_t)s->max_topic_levels;
    c->max_subscriptions = (uint32_t)s->max_subscriptions;
    c->max_session_expiry =
        (uint32_t)(s->max_session_expiry > UINT32_MAX ? UINT32_MAX : s->max_session_expiry);
    c->max_keepalive = (uint16_t)(s->max_keepalive > 65535 ? 65535 : s->max_keepalive);
    c->memory_limit = s->memory_limit;
    c->max_client_out_buffer = s->max_client_out_buffer;
    c->sys_interval_s = (uint32_t)s->sys_interval_s;
    c->retain_available = s->retain_available;
    c->tls_enabled = s->mqtt_tls_listen[0] || s->https_listen[0];
    c->tls_cert_file = s->tls_cert_file;
    c->tls_key_file = s->tls_key_file;
    c->tls_client_ca_file = s->tls_client_ca_file;
    c->tls_require_client_cert = s->tls_require_client_cert;
    c->tls_crl_file = s->tls_crl_file;
    c->tls_accept_unverified = s->tls_accept_unverified_client_certs;
    c->ws_path = s->ws_path;
    c->workers = (uint32_t)(s->workers > 64 ? 64 : s->workers);
    c->maximum_qos = (uint8_t)(s->maximum_qos > 2 ? 2 : s->maximum_qos);
}

/* Start a listener for every "host:port" in a comma-separated list (empty: none). */
static bool listen_all(drv_broker *broker, const char *list, drv_listen_kind kind)
{
    char *copy = drv_strdup(list);
    if (!copy)
        return false;
    bool ok = true;
    char *save = NULL;
    for (char *hp = strtok_r(copy, ",", &save); hp; hp = strtok_r(NULL, ",", &save)) {
        while (*hp == ' ')
            hp++;
        if (!*hp)
            continue;
        drv_err e = drv_broker_listen(broker, hp, kind, NULL);
        if (e) {
            drv_error("cannot listen", "address", hp, "error", drv_strerror(e));
            ok = false;
        }
    }
    drv_free(copy);
    return ok;
}

/*
 * Settings from defaults, --config FILE, the environment and the flags
 * --data-dir, --log-level and --set, in that order of precedence.  `rest`
 * (may be NULL) gets any other argument; without it they are an error.
 */
static bool load_settings(drv_settings *s, int argc, char **argv,
                          bool (*rest)(void *ud, const char *arg, const char *next, int *skip),
                          void *ud)
{
    const char *config = NULL;
    /* Flags win over the environment, which wins over the file: read the file first. */
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            config = argv[i + 1];
    if (config && drv_settings_load_file(s, config))
        return false;
    if (drv_settings_load_env(s))
        return false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int skip = 0;
        if (!strcmp(a, "--config") && v) {
            i++;
        } else if (!strcmp(a, "--data-dir") && v) {
            if (drv_settings_set(s, "data_dir", v))
                return false;
            i++;
        } else if (!strcmp(a, "--log-level") && v) {
            if (drv_settings_set(s, "log.level", v))
                return false;
            i++;
        } else if (!strcmp(a, "--set") && v) {
            if (apply_set(s, v))
                return false;
            i++;
        } else if (rest && rest(ud, a, v, &skip)) {
            i += skip;
        } else {
            usage();
            return false;
        }
    }
    return true;
}

static int cmd_serve(int argc, char **argv)
{
    drv_settings s;
    if (drv_settings_defaults(&s))
        return 1;
    int rc = 1;
    api_wiring *api = NULL;
    if (!load_settings(&s, argc, argv, NULL, NULL))
        goto out;
    if (configure_logging(&s))
        goto out;

    void *auth_state = NULL;
    drv_static_auth_config ac = {
        .password_file = s.password_file,
        .acl_file = s.acl_file,
        .allow_anonymous = s.allow_anonymous,
        .namespace_per_user = s.namespace_per_user,
    };
    if (drv_static_auth_new(&ac, &auth_state)) {
        drv_error("cannot load authentication files");
        goto out;
    }
    drv_broker_config bc;
    broker_config_from(&s, &bc);
    bc.auth_ops = &drv_static_auth_ops;
    bc.auth_state = auth_state;

    signal(SIGPIPE, SIG_IGN);
    if (api_wiring_start(&s, &bc, &api))
        goto out_auth;
    drv_broker *broker = NULL;
    if (drv_broker_new(&bc, &broker))
        goto out_api;
    api_wiring_set_broker(api, broker);
    bool ok = listen_all(broker, s.mqtt_listen, DRV_LISTEN_MQTT) &&
              listen_all(broker, s.mqtt_tls_listen, DRV_LISTEN_MQTTS) &&
              listen_all(broker, s.http_listen, DRV_LISTEN_WS) &&
              listen_all(broker, s.https_listen, DRV_LISTEN_WSS);
    if (ok) {
        drv_info("drover started", "version", DROVER_VERSION, "data_dir", s.data_dir);
        drv_broker_run(broker);
        drv_info("shutting down");
        rc = 0;
    }
    api_wiring_set_broker(api, NULL); /* nothing publishes into it from here */
    drv_broker_free(broker);
out_api:
    api_wiring_stop(api);
out_auth:
    drv_static_auth_ops.free(auth_state);
out:
    drv_settings_free(&s);
    return rc;
}

static int cmd_passwd(int argc, char **argv)
{
    if (argc < 1)
        return usage();
    char buf[1024];
    const char *pw = argc >= 2 ? argv[1] : NULL;
    if (!pw) {
        if (!fgets(buf, sizeof(buf), stdin))
            return 1;
        buf[strcspn(buf, "\r\n")] = '\0';
        pw = buf;
    }
    char *enc;
    if (drv_password_hash(pw, &enc)) {
        fprintf(stderr, "drover passwd: hashing failed\n");
        return 1;
    }
    printf("%s:%s\n", argv[0], enc);
    drv_free(enc);
    return 0;
}

/* drover token create --platform [--name NAME] [serve's settings flags] */
typedef struct token_args {
    bool platform;
    const char *name;
} token_args;

static bool token_arg(void *ud, const char *arg, const char *next, int *skip)
{
    token_args *t = ud;
    if (!strcmp(arg, "--platform")) {
        t->platform = true;
        return true;
    }
    if (!strcmp(arg, "--name") && next) {
        t->name = next;
        *skip = 1;
        return true;
    }
    return false;
}

static int cmd_token(int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "create") != 0)
        return usage();
    token_args t = {false, "cli"};
    drv_settings s;
    if (drv_settings_defaults(&s))
        return 1;
    int rc = 1;
    drv_store *st = NULL;
    if (!load_settings(&s, argc - 1, argv + 1, token_arg, &t) || configure_logging(&s))
        goto out;
    if (!t.platform) {
        fprintf(stderr, "drover token create: only --platform tokens are made here; tenant "
                        "tokens come from POST /api/v1/tenants/{tenant}/tokens\n");
        goto out;
    }
    if (api_wiring_open_store(&s, &st) != DRV_OK)
        goto out;
    char token[64];
    if (drv_api_create_platform_token(st, t.name, token, sizeof(token)) != DRV_OK) {
        fprintf(stderr, "drover token create: the registry refused the token\n");
        goto out;
    }
    printf("%s\n", token);
    rc = 0;
out:
    drv_store_close(st);
    drv_settings_free(&s);
    return rc;
}

int main(int argc, char **argv)
{
    drv_tls_init(); /* before anything touches OpenSSL, so its memory is accounted */
    if (argc < 2)
        return cmd_serve(0, NULL);
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve"))
        return cmd_serve(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return drv_bench_main(argc - 2, argv + 2);
    if (!strcmp(cmd, "passwd"))
        return cmd_passwd(argc - 2, argv + 2);
    if (!strcmp(cmd, "tenant") || !strcmp(cmd, "device") || !strcmp(cmd, "telemetry"))
        return drv_cli_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "token")) {
        /* --platform writes to the registry file (recovery); every other form is an API call. */
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--platform"))
                return cmd_token(argc - 2, argv + 2);
        return drv_cli_main(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "sim"))
        return drv_sim_main(argc - 1, argv + 1);
    if (!strcmp(cmd, "routes")) {
        drv_api_print_routes(stdout);
        return 0;
    }
    if (!strcmp(cmd, "config") && argc >= 3 && !strcmp(argv[2], "--list")) {
        drv_settings_print_keys(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version")) {
        printf("drover %s\n", DROVER_VERSION);
        return 0;
    }
    return usage();
}
