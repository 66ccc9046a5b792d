/*
 * sim.c — `drover sim`: simulated devices for demos (see sim.h, docs/cli.md).
 *
 * Three phases:
 *
 *  1. Provisioning, over the REST API with the blocking client of the
 *     administrator commands (cli_http.c).  The tenant is used when it
 *     exists and created when it does not (which takes a platform token);
 *     devices PREFIX0001 .. are created, or reused when they exist, and each
 *     gets a new secret credential that the server generates and shows once.
 *     A second run therefore adds a credential to each device; the older
 *     ones stay valid until revoked.
 *
 *  2. The run.  Every device connects over MQTT 3.1.1 (client id = device
 *     id, user name TENANT/DEVICE, password its secret) and publishes a JSON
 *     object of readings on devices/DEVICE/telemetry every 1/rate seconds.
 *     One thread, one poll() over every socket.  Each device follows
 *
 *       D_WAIT ─due─▶ D_CONNECTING ─writable─▶ D_CONNACK ─CONNACK 0─▶ D_READY
 *         ▲                                                              │
 *         └──── error, refusal, timeout or close (backoff 1 s .. 30 s) ◀─┘
 *
 *     A line a second tells how many devices are connected and how many
 *     messages were sent, acknowledged (QoS 1) and failed.  --duration
 *     counts from the moment every device is connected (or CONNECT_GRACE_MS
 *     after the start, when some cannot connect), so a short run is not
 *     eaten by the password checks of the connects.
 *
 *  3. The end (--duration, SIGINT, SIGTERM): no new messages; outstanding
 *     QoS 1 acknowledgements are awaited for up to STOP_WAIT_MS, then every
 *     connection is closed with DISCONNECT.
 *
 * Readings are plausible rather than uniform noise: temperature is a random
 * walk pulled back towards the device's own mean near 21 °C (two decimals),
 * humidity likewise near 45 %, the battery drains a little with every
 * message, rssi wobbles around the device's own level (integer dBm), the
 * door flips rarely, and the firmware version is sent once, in a device's
 * first message.  Each message is {"ts": T, "values": {...}} with T the
 * time it was due (wall clock, ms): a device's times are distinct and in
 * order however the messages bunch up on the way, so none of them is
 * overwritten by a neighbour that arrived in the same millisecond.
 *
 * Not here: TLS, MQTT 5, QoS 2, subscriptions, load measurement (that is
 * `drover bench`).  Like src/bench/bench_sys.c, the "system" section below
 * makes the few calls src/platform does not offer (a non-blocking outgoing
 * connect, poll(), the descriptor limit, signal flags); reads and writes go
 * through platform/net.h.
 */
#include "server/sim.h"

#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/num.h"
#include "mqtt/mqtt.h"
#include "platform/clock.h"
#include "platform/net.h"
#include "server/cli_http.h"

#define DEFAULT_URL "http://127.0.0.1:8080"
#define DEFAULT_MQTT_PORT "1883"
#define MAX_DEVICES 10000u
#define MAX_RATE 1000.0           /* messages per second per device */
#define MAX_DEVICE_ID 128u        /* the registry's longest device id */
#define KEEP_ALIVE_S 60u          /* CONNECT keep alive; a PINGREQ after half of it idle */
#define CONNECT_TIMEOUT_MS 10000u /* TCP connect + CONNACK */
#define CONNECT_GRACE_MS 10000u   /* --duration starts at the latest this long after the start */
#define BACKOFF_MIN_MS 1000u      /* first wait before a reconnect */
#define BACKOFF_MAX_MS 30000u     /* longest wait before a reconnect */
#define MAX_INFLIGHT 100u         /* unacknowledged QoS 1 messages per device; more: skipped */
#define MAX_BURST 10u             /* messages one device may catch up with in one turn */
#define STOP_WAIT_MS 2000u        /* longest wait for outstanding acknowledgements at the end */
#define TICK_MS 100               /* longest poll() wait */
#define IN_CAP (64u * 1024)       /* a device's partial packet from the broker */
#define OUT_CAP (1024u * 1024)    /* a device's unwritten output */
#define MAX_ERROR_LINES 20u       /* error messages printed; later ones are only counted */

/* -- options -------------------------------------------------------------------------------- */

typedef struct sim_opts {
    const char *url;    /* --url, $DROVER_URL, DEFAULT_URL */
    const char *token;  /* --token, $DROVER_TOKEN; never printed */
    const char *cacert; /* --cacert, $DROVER_CACERT */
    const char *tenant; /* --tenant (required) */
    const char *mqtt;   /* --mqtt HOST[:PORT]; NULL: the URL's host, port 1883 */
    const char *prefix; /* --prefix, "sim-" */
    uint32_t devices;   /* --devices, 10 */
    double rate;        /* --rate: messages per second per device, 1 */
    double duration_s;  /* --duration: seconds; 0: until SIGINT/SIGTERM */
    uint8_t qos;        /* --qos: 0 or 1 */
} sim_opts;

/* -- state ---------------------------------------------------------------------------------- */

typedef enum {
    D_WAIT,       /* not connected; connect at due_ms */
    D_CONNECTING, /* TCP connect in progress, CONNECT queued */
    D_CONNACK,    /* CONNECT sent, waiting for CONNACK */
    D_READY,      /* connected: publishing */
} dev_state;

typedef struct sim_dev {
    char id[MAX_DEVICE_ID + 1];     /* device id: prefix + number */
    char user[200];                 /* TENANT/DEVICE, the MQTT user name */
    char secret[128];               /* its secret, as the server made it */
    char topic[MAX_DEVICE_ID + 32]; /* devices/DEVICE/telemetry */
    int fd;                         /* socket, -1 when closed */
    uint8_t state;                  /* a dev_state */
    bool ever_connected;            /* has had a CONNACK 0 (the exit status counts it) */
    bool firmware_sent;             /* the firmware version has gone out */
    drv_buf in;                     /* a partial packet from the broker (IN_CAP) */
    drv_buf out;                    /* bytes not yet written (OUT_CAP) */
    uint16_t next_pid;              /* next QoS 1 packet id (never 0) */
    uint32_t inflight;              /* QoS 1 messages awaiting PUBACK */
    uint64_t due_ns;                /* D_READY: the next message; D_WAIT: the next connect */
    uint64_t deadline_ms;           /* D_CONNECTING, D_CONNACK: give up then */
    uint64_t last_tx_ms;            /* last write, for keep alive */
    uint32_t backoff_ms;            /* wait after the next failure */
    /* the simulated readings */
    uint64_t rng;                   /* xorshift64* state, never 0 */
    double temp, temp_mean;         /* °C */
    double humidity, humidity_mean; /* % */
    double battery;                 /* % */
    int rssi_level;                 /* dBm around which rssi wobbles */
    bool door;                      /* open */
    const char *firmware;           /* version string, sent once */
} sim_dev;

typedef struct sim {
    sim_opts o;
    cli_http http;                /* the REST API */
    char mqtt_host[256];          /* broker host (IPv6 without brackets) */
    char mqtt_port[8];            /* broker port */
    struct sockaddr_storage addr; /* the broker, resolved once */
    socklen_t addrlen;
    sim_dev *devs; /* o.devices of them (drv_calloc) */
    uint32_t ndevs;
    uint64_t period_ns; /* between two messages of one device */
    int64_t wall0_ms;   /* wall clock at mono0_ns: message times from due times */
    uint64_t mono0_ns;
    uint32_t connected;   /* devices in D_READY */
    uint64_t sent, acked; /* messages written; PUBACKs received */
    uint64_t errors;      /* connects failed or refused, connections lost, bad packets */
    uint64_t skipped;     /* messages not sent: MAX_INFLIGHT unacknowledged, or late */
    uint32_t error_lines; /* error messages printed so far */
    bool stopping;        /* phase 3 */
    struct pollfd *pfds;  /* ndevs entries, rebuilt every turn */
    uint32_t *pdev;       /* pfds[i] belongs to devs[pdev[i]] */
} sim;

/* -- system: sockets, poll, limits, signals --------------------------------------------------- */

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* SIGINT and SIGTERM end the run cleanly; a closed socket must not kill us. */
static void catch_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* Room for `need` descriptors, if the hard limit allows. */
static void raise_nofile(uint32_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static bool resolve(sim *s, char *why, size_t cap)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(s->mqtt_host, s->mqtt_port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(why, cap, "cannot resolve %s: %s", s->mqtt_host, gai_strerror(rc));
        return false;
    }
    bool ok = res->ai_addrlen <= sizeof(s->addr);
    if (ok) {
        memcpy(&s->addr, res->ai_addr, res->ai_addrlen);
        s->addrlen = res->ai_addrlen;
    }
    freeaddrinfo(res);
    return ok;
}

/* Start a non-blocking connect; *done when it completed at once. */
static drv_err sock_connect(const sim *s, int *fd_out, bool *done, char *why, size_t cap)
{
    const struct sockaddr *sa = (const struct sockaddr *)&s->addr;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, cap, "socket: %s", strerror(errno));
        return drv_err_from_errno(errno);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *done = connect(fd, sa, s->addrlen) == 0;
    if (!*done && errno != EINPROGRESS) {
        snprintf(why, cap, "cannot connect to %s:%s: %s", s->mqtt_host, s->mqtt_port,
                 strerror(errno));
        drv_err e = drv_err_from_errno(errno);
        close(fd);
        return e == DRV_AGAIN ? DRV_IO : e;
    }
    *fd_out = fd;
    return DRV_OK;
}

/* How a non-blocking connect ended. */
static drv_err sock_connect_result(const sim *s, int fd, char *why, size_t cap)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (!soerr)
        return DRV_OK;
    snprintf(why, cap, "cannot connect to %s:%s: %s", s->mqtt_host, s->mqtt_port, strerror(soerr));
    drv_err e = drv_err_from_errno(soerr);
    return e == DRV_OK || e == DRV_AGAIN ? DRV_IO : e;
}

/* -- arguments ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: drover sim --tenant TENANT [--devices N] [--rate R] [--duration S]\n"
            "                  [--mqtt HOST[:PORT]] [--prefix P] [--qos 0|1]\n"
            "                  [--url URL] [--token TOKEN] [--cacert FILE]\n"
            "\n"
            "Simulated devices: creates TENANT (when the token may) and devices P0001..PNNNN\n"
            "with a secret each through the REST API, then publishes their readings over\n"
            "MQTT until --duration seconds have passed (0: until Ctrl-C).\n"
            "  --devices N     devices (default 10, at most %u)\n"
            "  --rate R        messages per second per device (default 1; 0.1 = every 10 s)\n"
            "  --duration S    seconds to run once connected (default 0: until Ctrl-C)\n"
            "  --mqtt H[:P]    the broker (default: the URL's host, port " DEFAULT_MQTT_PORT ")\n"
            "  --prefix P      device id prefix (default sim-)\n"
            "  --qos Q         0 or 1 (default 1)\n"
            "  --url, --token, --cacert   as for `drover device` ($DROVER_URL, $DROVER_TOKEN)\n",
            MAX_DEVICES);
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && v[0] ? v : dflt;
}

static bool tenant_id_ok(const char *t)
{
    size_t n = strlen(t);
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '-'))
            return false;
    return true;
}

/* A device id's characters ([A-Za-z0-9._:-]): they need no escaping in a path or a topic. */
static bool prefix_ok(const char *p)
{
    if (strlen(p) > MAX_DEVICE_ID - 5)
        return false;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == ':' || *p == '-'))
            return false;
    return true;
}

static bool parse_number(const char *v, double min, double max, double *out)
{
    double d;
    if (!v || !drv_parse_double(v, strlen(v), &d) || !(d >= min && d <= max))
        return false;
    *out = d;
    return true;
}

/* Parse argv (after "sim"); false after printing why. */
static bool parse_args(sim_opts *o, int argc, char **argv)
{
    *o = (sim_opts){.prefix = "sim-", .devices = 10, .rate = 1, .qos = 1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        char name[32];
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (strncmp(a, "--", 2) != 0 || nl >= sizeof(name)) {
            fprintf(stderr, "drover sim: unexpected argument \"%s\"\n", a);
            return false;
        }
        memcpy(name, a, nl);
        name[nl] = '\0';
        if (eq)
            v = eq + 1;
        else if (i + 1 < argc)
            v = argv[++i];
        if (!v) {
            fprintf(stderr, "drover sim: %s needs a value\n", name);
            return false;
        }
        double d;
        bool ok = true;
        if (!strcmp(name, "--url")) {
            o->url = v;
        } else if (!strcmp(name, "--token")) {
            o->token = v;
        } else if (!strcmp(name, "--cacert")) {
            o->cacert = v;
        } else if (!strcmp(name, "--tenant")) {
            o->tenant = v;
            ok = tenant_id_ok(v);
        } else if (!strcmp(name, "--mqtt")) {
            o->mqtt = v;
        } else if (!strcmp(name, "--prefix")) {
            o->prefix = v;
            ok = prefix_ok(v);
        } else if (!strcmp(name, "--devices")) {
            ok = parse_number(v, 1, MAX_DEVICES, &d) && d == (double)(uint32_t)d;
            o->devices = ok ? (uint32_t)d : 0;
        } else if (!strcmp(name, "--rate")) {
            ok = parse_number(v, 0.001, MAX_RATE, &o->rate);
        } else if (!strcmp(name, "--duration")) {
            ok = parse_number(v, 0, 365.0 * 86400, &o->duration_s);
        } else if (!strcmp(name, "--qos")) {
            ok = (!strcmp(v, "0") || !strcmp(v, "1"));
            o->qos = (uint8_t)(v[0] == '1');
        } else {
            fprintf(stderr, "drover sim: unknown flag %s\n", name);
            return false;
        }
        if (!ok) {
            fprintf(stderr, "drover sim: bad value for %s: \"%s\"\n", name, v);
            return false;
        }
    }
    if (!o->tenant) {
        fprintf(stderr, "drover sim: --tenant is required\n");
        return false;
    }
    return true;
}

/* Split --mqtt (or the URL's host) into host and port. */
static bool mqtt_address(sim *s)
{
    const char *m = s->o.mqtt;
    const char *port = DEFAULT_MQTT_PORT;
    if (!m) {
        snprintf(s->mqtt_host, sizeof(s->mqtt_host), "%s", s->http.url.host);
    } else if (m[0] == '[') {
        const char *end = strchr(m, ']');
        if (!end || end == m + 1 || (size_t)(end - m - 1) >= sizeof(s->mqtt_host) ||
            (end[1] && end[1] != ':'))
            return false;
        memcpy(s->mqtt_host, m + 1, (size_t)(end - m - 1));
        s->mqtt_host[end - m - 1] = '\0';
        if (end[1])
            port = end + 2;
    } else {
        const char *colon = strrchr(m, ':');
        size_t hl = colon ? (size_t)(colon - m) : strlen(m);
        if (hl == 0 || hl >= sizeof(s->mqtt_host) || (colon && memchr(m, ':', hl)))
            return false;
        memcpy(s->mqtt_host, m, hl);
        s->mqtt_host[hl] = '\0';
        if (colon)
            port = colon + 1;
    }
    int64_t p;
    if (!drv_parse_i64(port, strlen(port), &p) || p < 1 || p > 65535 || port[0] == '+' ||
        port[0] == '-')
        return false;
    snprintf(s->mqtt_port, sizeof(s->mqtt_port), "%d", (int)p);
    return true;
}

/* -- provisioning over the REST API ------------------------------------------------------------ */

/* One request; returns the HTTP status with *r filled (the caller frees it), or
 * -1 after printing why the request could not be made. */
static int api(sim *s, const char *method, const char *target, json_t *body, cli_http_resp *r)
{
    char why[512];
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text) {
        fprintf(stderr, "drover sim: out of memory\n");
        return -1;
    }
    drv_err e = cli_http_request(&s->http, method, target, text ? "application/json" : NULL, text,
                                 text ? strlen(text) : 0, r, why, sizeof(why));
    free(text); /* jansson's allocation */
    if (e != DRV_OK) {
        fprintf(stderr, "drover sim: %s\n", why);
        return -1;
    }
    return r->status;
}

/* "drover sim: WHAT: TITLE: DETAIL" for an answer that says no. */
static void print_refusal(const char *what, const cli_http_resp *r)
{
    json_t *p = cli_http_is_json(r) ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    const char *title = json_string_value(json_object_get(p, "title"));
    const char *detail = json_string_value(json_object_get(p, "detail"));
    if (title || detail)
        fprintf(stderr, "drover sim: %s: %s%s%s\n", what, title ? title : "",
                title && detail ? ": " : "", detail ? detail : "");
    else
        fprintf(stderr, "drover sim: %s: the server answered %d\n", what, r->status);
    if (r->status == 401)
        fprintf(stderr, "drover sim: check --token or $DROVER_TOKEN\n");
    json_decref(p);
}

/* Use the tenant, or create it. */
static bool provision_tenant(sim *s)
{
    char target[128];
    cli_http_resp r;
    snprintf(target, sizeof(target), "/api/v1/tenants/%s", s->o.tenant);
    const char *what = "tenant";
    int st = api(s, "GET", target, NULL, &r);
    if (st < 0)
        return false;
    bool ok = st == 200;
    if (st == 404) {
        what = "create the tenant";
        cli_http_resp_free(&r);
        json_t *doc = json_pack("{s:s, s:s}", "id", s->o.tenant, "name", s->o.tenant);
        st = api(s, "POST", "/api/v1/tenants", doc, &r);
        json_decref(doc);
        if (st < 0)
            return false;
        ok = st == 201;
        if (ok)
            printf("drover sim: created tenant %s\n", s->o.tenant);
    }
    if (!ok)
        print_refusal(what, &r);
    cli_http_resp_free(&r);
    return ok;
}

/* Create device d (or find it there) and give it a new secret. */
static bool provision_device(sim *s, sim_dev *d, uint32_t num, bool *created)
{
    char target[256], what[200];
    cli_http_resp r;
    snprintf(target, sizeof(target), "/api/v1/tenants/%s/devices", s->o.tenant);
    char name[64];
    snprintf(name, sizeof(name), "Simulated device %u", num);
    json_t *doc =
        json_pack("{s:s, s:s, s:{s:s}}", "id", d->id, "name", name, "tags", "simulated", "true");
    int st = api(s, "POST", target, doc, &r);
    json_decref(doc);
    if (st < 0)
        return false;
    *created = st == 201;
    if (st != 201 && st != 409) {
        snprintf(what, sizeof(what), "create device %s", d->id);
        print_refusal(what, &r);
        cli_http_resp_free(&r);
        return false;
    }
    cli_http_resp_free(&r);

    snprintf(target, sizeof(target), "/api/v1/tenants/%s/devices/%s/credentials", s->o.tenant,
             d->id);
    doc = json_pack("{s:s}", "kind", "secret");
    st = api(s, "POST", target, doc, &r);
    json_decref(doc);
    if (st < 0)
        return false;
    json_t *cred = st == 201 ? json_loadb(r.body, r.body_len, 0, NULL) : NULL;
    const char *secret = json_string_value(json_object_get(cred, "secret"));
    bool ok = secret && strlen(secret) < sizeof(d->secret);
    if (ok) {
        snprintf(d->secret, sizeof(d->secret), "%s", secret);
    } else {
        snprintf(what, sizeof(what), "a secret for device %s", d->id);
        print_refusal(what, &r);
    }
    json_decref(cred);
    cli_http_resp_free(&r);
    return ok;
}

/* -- readings ----------------------------------------------------------------------------------- */

static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, 1). */
static double uniform(uint64_t *x)
{
    return (double)(rng_next(x) >> 11) * (1.0 / 9007199254740992.0);
}

/* About N(0, 1): the sum of four uniforms, centred and scaled (Irwin–Hall). */
static double gauss(uint64_t *x)
{
    return (uniform(x) + uniform(x) + uniform(x) + uniform(x) - 2.0) * 1.7320508075688772;
}

static void readings_init(sim_dev *d, uint32_t num)
{
    static const char *const firmware[] = {"2.3.1", "2.3.1", "2.3.1", "2.4.0-rc1", "2.2.7"};
    uint64_t seed = drv_wall_ms() * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)num << 32 | num);
    d->rng = seed ? seed : 1;
    d->temp_mean = 19.5 + 3.0 * uniform(&d->rng);
    d->temp = d->temp_mean + gauss(&d->rng) * 0.3;
    d->humidity_mean = 35.0 + 20.0 * uniform(&d->rng);
    d->humidity = d->humidity_mean;
    d->battery = 70.0 + 30.0 * uniform(&d->rng);
    d->rssi_level = -90 + (int)(40.0 * uniform(&d->rng));
    d->door = uniform(&d->rng) < 0.1;
    d->firmware = firmware[num % (sizeof(firmware) / sizeof(firmware[0]))];
}

/* Step the readings and write the message for time ts_ms into buf; returns its length. */
static size_t readings_next(sim_dev *d, int64_t ts_ms, char *buf, size_t cap)
{
    d->temp += 0.05 * (d->temp_mean - d->temp) + 0.06 * gauss(&d->rng);
    d->humidity += 0.05 * (d->humidity_mean - d->humidity) + 0.25 * gauss(&d->rng);
    d->humidity = d->humidity < 5 ? 5 : d->humidity > 95 ? 95 : d->humidity;
    d->battery -= 0.002 + 0.004 * uniform(&d->rng);
    if (d->battery < 0)
        d->battery = 0;
    double r = d->rssi_level + 2.5 * gauss(&d->rng);
    int rssi = (int)(r < 0 ? r - 0.5 : r + 0.5);
    if (uniform(&d->rng) < 0.01)
        d->door = !d->door;
    int n = snprintf(buf, cap,
                     "{\"ts\":%lld,\"values\":{\"temperature\":%.2f,\"humidity\":%.1f,"
                     "\"battery\":%.2f,\"rssi\":%d,\"door\":%s%s%s%s}}",
                     (long long)ts_ms, d->temp, d->humidity, d->battery, rssi,
                     d->door ? "true" : "false", d->firmware_sent ? "" : ",\"firmware\":\"",
                     d->firmware_sent ? "" : d->firmware, d->firmware_sent ? "" : "\"");
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* -- MQTT ------------------------------------------------------------------------------------- */

/* A problem worth a line on stderr (the first MAX_ERROR_LINES of them). */
static void report(sim *s, const sim_dev *d, const char *why)
{
    s->errors++;
    if (s->error_lines < MAX_ERROR_LINES)
        fprintf(stderr, "drover sim: %s: %s\n", d->id, why);
    else if (s->error_lines == MAX_ERROR_LINES)
        fprintf(stderr, "drover sim: further errors are only counted\n");
    s->error_lines++;
}

/* Close d's connection; `why` (NULL: a clean close) is reported and starts a backoff. */
static void dev_close(sim *s, sim_dev *d, const char *why)
{
    if (d->fd >= 0)
        drv_close(d->fd);
    d->fd = -1;
    if (d->state == D_READY)
        s->connected--;
    d->state = D_WAIT;
    d->inflight = 0;
    drv_buf_free(&d->in);
    drv_buf_free(&d->out);
    if (why) {
        report(s, d, why);
        d->due_ns = drv_mono_ns() + (uint64_t)d->backoff_ms * 1000000u;
        d->backoff_ms = d->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : d->backoff_ms * 2;
    }
}

/* Write what is pending; false when the connection failed (and was closed). */
static bool dev_flush(sim *s, sim_dev *d, uint64_t now_ms)
{
    while (d->fd >= 0 && drv_buf_avail(&d->out) > 0 && d->state != D_CONNECTING) {
        size_t n = 0;
        drv_err e = drv_write(d->fd, d->out.data + d->out.off, drv_buf_avail(&d->out), &n);
        if (e == DRV_AGAIN)
            break;
        if (e != DRV_OK) {
            dev_close(s, d, "connection lost");
            return false;
        }
        drv_buf_consume(&d->out, n);
        d->last_tx_ms = now_ms;
    }
    return true;
}

static bool encoded(sim *s, sim_dev *d, drv_err e)
{
    if (e == DRV_OK)
        return true;
    dev_close(s, d, e == DRV_TOOBIG ? "the broker does not read fast enough" : "out of memory");
    return false;
}

static void dev_connect(sim *s, sim_dev *d, uint64_t now_ms)
{
    char why[300];
    bool done;
    drv_buf_init(&d->in, IN_CAP);
    drv_buf_init(&d->out, OUT_CAP);
    if (sock_connect(s, &d->fd, &done, why, sizeof(why)) != DRV_OK) {
        d->fd = -1;
        dev_close(s, d, why);
        return;
    }
    d->state = done ? D_CONNACK : D_CONNECTING;
    d->deadline_ms = now_ms + CONNECT_TIMEOUT_MS;
    mqtt_connect_out co = {
        .version = MQTT_V311,
        .clean_start = true,
        .keep_alive = KEEP_ALIVE_S,
        .client_id = d->id,
        .username = d->user,
        .password = d->secret,
    };
    if (encoded(s, d, mqtt_encode_connect(&d->out, &co)))
        dev_flush(s, d, now_ms);
}

static void dev_publish(sim *s, sim_dev *d)
{
    if (s->o.qos == 1 && d->inflight >= MAX_INFLIGHT) {
        s->skipped++;
        return;
    }
    char payload[320];
    int64_t ts_ms = s->wall0_ms + (int64_t)((d->due_ns - s->mono0_ns) / 1000000u);
    size_t n = readings_next(d, ts_ms, payload, sizeof(payload));
    mqtt_publish_out p = {
        .qos = s->o.qos,
        .packet_id = s->o.qos ? d->next_pid : 0,
        .topic = (const uint8_t *)d->topic,
        .topic_len = (uint16_t)strlen(d->topic),
        .payload = (const uint8_t *)payload,
        .payload_len = (uint32_t)n,
    };
    if (!encoded(s, d, mqtt_encode_publish(&d->out, MQTT_V311, &p)))
        return;
    d->firmware_sent = true;
    s->sent++;
    if (s->o.qos) {
        d->inflight++;
        d->next_pid = d->next_pid == UINT16_MAX ? 1 : d->next_pid + 1;
    }
}

/* v3.1.1 CONNACK return codes. */
static const char *connack_text(uint8_t rc)
{
    static const char *const text[] = {
        "accepted",           "unacceptable protocol version", "client identifier rejected",
        "server unavailable", "bad user name or password",     "not authorised",
    };
    return rc < sizeof(text) / sizeof(text[0]) ? text[rc] : "refused";
}

/* Handle one packet from the broker; false when d was closed. */
static bool dev_packet(sim *s, sim_dev *d, const mqtt_packet *p, uint64_t now_ns)
{
    char why[128];
    switch (p->type) {
    case MQTT_CONNACK:
        if (d->state != D_CONNACK)
            break;
        if (p->u.connack.reason != 0) {
            snprintf(why, sizeof(why), "the broker refused the connection: %s",
                     connack_text(p->u.connack.reason));
            dev_close(s, d, why);
            return false;
        }
        d->state = D_READY;
        d->ever_connected = true;
        d->backoff_ms = BACKOFF_MIN_MS;
        d->due_ns = now_ns; /* the first message at once */
        s->connected++;
        return true;
    case MQTT_PUBACK:
        if (d->state != D_READY || d->inflight == 0)
            break;
        d->inflight--;
        s->acked++;
        return true;
    case MQTT_PINGRESP:
        return true;
    default:
        break;
    }
    snprintf(why, sizeof(why), "unexpected packet type %d from the broker", (int)p->type);
    dev_close(s, d, why);
    return false;
}

static void dev_readable(sim *s, sim_dev *d, uint64_t now_ns)
{
    for (;;) {
        drv_err e;
        uint8_t *dst = drv_buf_reserve(&d->in, 4096, &e);
        if (!dst) {
            dev_close(s, d, "a packet from the broker is too large");
            return;
        }
        size_t n = 0;
        e = drv_read(d->fd, dst, 4096, &n);
        if (e == DRV_AGAIN)
            return;
        if (e != DRV_OK) {
            dev_close(s, d,
                      d->state == D_CONNACK ? "the broker closed the connection before CONNACK"
                                            : "connection closed by the broker");
            return;
        }
        d->in.len += (uint32_t)n;
        while (drv_buf_avail(&d->in) > 0) {
            const uint8_t *b = d->in.data + d->in.off;
            size_t avail = drv_buf_avail(&d->in), hl;
            uint8_t first;
            uint32_t rem;
            e = mqtt_parse_fixed_header(b, avail, &first, &rem, &hl);
            if (e == DRV_AGAIN || (e == DRV_OK && avail - hl < rem))
                break;
            mqtt_packet pkt;
            mqtt_decode_error derr;
            if (e != DRV_OK || mqtt_decode(first, b + hl, rem, MQTT_V311, true, &pkt, &derr)) {
                dev_close(s, d, "a malformed packet from the broker");
                return;
            }
            if (!dev_packet(s, d, &pkt, now_ns))
                return;
            drv_buf_consume(&d->in, hl + rem);
        }
        drv_buf_compact(&d->in);
        if (n < 4096)
            return;
    }
}

/* Timers of one device: connects, timeouts, messages due, keep alive. */
static void dev_timers(sim *s, sim_dev *d, uint64_t now_ns, uint64_t now_ms)
{
    switch (d->state) {
    case D_WAIT:
        if (!s->stopping && now_ns >= d->due_ns)
            dev_connect(s, d, now_ms);
        break;
    case D_CONNECTING:
    case D_CONNACK:
        if (now_ms >= d->deadline_ms)
            dev_close(s, d, "no CONNACK in time");
        break;
    case D_READY:
        if (s->stopping)
            break;
        for (unsigned i = 0; i < MAX_BURST && d->state == D_READY && now_ns >= d->due_ns; i++) {
            dev_publish(s, d);
            d->due_ns += s->period_ns;
        }
        if (d->state == D_READY && now_ns >= d->due_ns + s->period_ns) {
            s->skipped += (now_ns - d->due_ns) / s->period_ns; /* too far behind: skip ahead */
            d->due_ns = now_ns + s->period_ns;
        }
        if (d->state == D_READY && now_ms - d->last_tx_ms >= KEEP_ALIVE_S * 1000u / 2)
            encoded(s, d, mqtt_encode_simple(&d->out, MQTT_PINGREQ));
        if (d->state == D_READY)
            dev_flush(s, d, now_ms);
        break;
    }
}

static int poll_timeout(const sim *s, uint64_t now_ns, uint64_t next_status_ns)
{
    uint64_t next = next_status_ns;
    for (uint32_t i = 0; i < s->ndevs; i++) {
        const sim_dev *d = &s->devs[i];
        if (!s->stopping && (d->state == D_READY || d->state == D_WAIT))
            next = d->due_ns < next ? d->due_ns : next;
    }
    if (next <= now_ns)
        return 0;
    uint64_t ms = (next - now_ns + 999999u) / 1000000u;
    return ms > TICK_MS ? TICK_MS : (int)ms;
}

static void poll_once(sim *s, uint64_t now_ns, uint64_t next_status_ns)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->ndevs; i++) {
        sim_dev *d = &s->devs[i];
        if (d->fd < 0)
            continue;
        bool want_write = d->state == D_CONNECTING || drv_buf_avail(&d->out) > 0;
        s->pfds[n] = (struct pollfd){.fd = d->fd, .events = POLLIN | (want_write ? POLLOUT : 0)};
        s->pdev[n++] = i;
    }
    int ready = poll(s->pfds, n, poll_timeout(s, now_ns, next_status_ns));
    if (ready <= 0)
        return; /* nothing, or a signal: the caller looks at the flags */
    now_ns = drv_mono_ns();
    uint64_t now_ms = now_ns / 1000000u;
    for (uint32_t i = 0; i < n; i++) {
        sim_dev *d = &s->devs[s->pdev[i]];
        short re = s->pfds[i].revents;
        if (!re || d->fd != s->pfds[i].fd)
            continue;
        if (d->state == D_CONNECTING) {
            char why[300];
            if (sock_connect_result(s, d->fd, why, sizeof(why)) != DRV_OK) {
                dev_close(s, d, why);
                continue;
            }
            d->state = D_CONNACK;
        }
        if (re & (POLLIN | POLLERR | POLLHUP))
            dev_readable(s, d, now_ns);
        if (d->fd >= 0)
            dev_flush(s, d, now_ms);
    }
}

static void print_status(const sim *s, double elapsed_s)
{
    printf("[%5.0fs] connected %u/%u  sent %llu", elapsed_s, s->connected, s->ndevs,
           (unsigned long long)s->sent);
    if (s->o.qos)
        printf("  acked %llu", (unsigned long long)s->acked);
    printf("  errors %llu", (unsigned long long)s->errors);
    if (s->skipped)
        printf("  skipped %llu", (unsigned long long)s->skipped);
    printf("\n");
    fflush(stdout);
}

static uint64_t inflight_total(const sim *s)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < s->ndevs; i++)
        if (s->devs[i].state == D_READY)
            n += s->devs[i].inflight;
    return n;
}

/* Phase 2 and 3; returns the exit status. */
static int run(sim *s)
{
    uint64_t start_ns = drv_mono_ns(), next_status_ns = start_ns + 1000000000u;
    uint64_t end_ns = 0, stop_deadline_ns = 0;
    bool clock_started = false;
    printf("drover sim: %u devices of tenant %s publishing to %s:%s every %.3g s (QoS %u); "
           "Ctrl-C stops\n",
           s->ndevs, s->o.tenant, s->mqtt_host, s->mqtt_port, 1.0 / s->o.rate, s->o.qos);
    fflush(stdout);
    for (;;) {
        uint64_t now_ns = drv_mono_ns(), now_ms = now_ns / 1000000u;
        if (!clock_started &&
            (s->connected == s->ndevs || now_ns - start_ns >= CONNECT_GRACE_MS * 1000000ull)) {
            clock_started = true;
            end_ns = s->o.duration_s > 0 ? now_ns + (uint64_t)(s->o.duration_s * 1e9) : 0;
        }
        if (!s->stopping && (stop_signal || (end_ns && now_ns >= end_ns))) {
            s->stopping = true;
            stop_deadline_ns = now_ns + STOP_WAIT_MS * 1000000ull;
        }
        if (s->stopping && (inflight_total(s) == 0 || now_ns >= stop_deadline_ns))
            break;
        for (uint32_t i = 0; i < s->ndevs; i++)
            dev_timers(s, &s->devs[i], now_ns, now_ms);
        if (now_ns >= next_status_ns) {
            print_status(s, (double)(now_ns - start_ns) / 1e9);
            next_status_ns += 1000000000u;
            if (next_status_ns <= now_ns)
                next_status_ns = now_ns + 1000000000u;
        }
        poll_once(s, now_ns, next_status_ns);
    }
    print_status(s, (double)(drv_mono_ns() - start_ns) / 1e9);
    bool any = false;
    for (uint32_t i = 0; i < s->ndevs; i++) {
        sim_dev *d = &s->devs[i];
        any |= d->ever_connected;
        if (d->state == D_READY && encoded(s, d, mqtt_encode_simple(&d->out, MQTT_DISCONNECT)))
            dev_flush(s, d, drv_mono_ms());
        dev_close(s, d, NULL);
    }
    printf("drover sim: stopped%s\n", any ? "" : "; no device could connect");
    return any ? 0 : 1;
}

/* -- the command -------------------------------------------------------------------------------- */

int drv_sim_main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    sim s = {0};
    if (!parse_args(&s.o, argc - 1, argv + 1)) {
        usage(stderr);
        return 2;
    }
    s.o.url = s.o.url ? s.o.url : env_or("DROVER_URL", DEFAULT_URL);
    s.o.token = s.o.token ? s.o.token : env_or("DROVER_TOKEN", NULL);
    s.o.cacert = s.o.cacert ? s.o.cacert : env_or("DROVER_CACERT", NULL);
    if (cli_url_parse(s.o.url, &s.http.url)) {
        fprintf(stderr, "drover sim: --url must be http://HOST[:PORT] or https://HOST[:PORT]\n");
        return 2;
    }
    if (!mqtt_address(&s)) {
        fprintf(stderr, "drover sim: --mqtt must be HOST[:PORT] or [IPV6][:PORT]\n");
        return 2;
    }
    s.http.token = s.o.token;
    s.http.cacert = s.o.cacert;
    s.period_ns = (uint64_t)(1e9 / s.o.rate);
    s.mono0_ns = drv_mono_ns();
    s.wall0_ms = (int64_t)drv_wall_ms();
    catch_signals();
    raise_nofile(s.o.devices + 64);

    int rc = 1;
    char why[300];
    s.devs = drv_calloc(s.o.devices, sizeof(*s.devs));
    s.pfds = drv_calloc(s.o.devices, sizeof(*s.pfds));
    s.pdev = drv_calloc(s.o.devices, sizeof(*s.pdev));
    if (!s.devs || !s.pfds || !s.pdev) {
        fprintf(stderr, "drover sim: out of memory\n");
        goto out;
    }
    if (!resolve(&s, why, sizeof(why))) {
        fprintf(stderr, "drover sim: %s\n", why);
        goto out;
    }
    if (!provision_tenant(&s))
        goto out;
    uint32_t created = 0;
    bool tty = isatty(STDERR_FILENO);
    for (uint32_t i = 0; i < s.o.devices && !stop_signal; i++) {
        sim_dev *d = &s.devs[i];
        snprintf(d->id, sizeof(d->id), "%s%04u", s.o.prefix, i + 1);
        snprintf(d->user, sizeof(d->user), "%s/%s", s.o.tenant, d->id);
        snprintf(d->topic, sizeof(d->topic), "devices/%s/telemetry", d->id);
        d->fd = -1;
        d->next_pid = 1;
        d->backoff_ms = BACKOFF_MIN_MS;
        d->due_ns = 0;
        readings_init(d, i + 1);
        bool made;
        if (!provision_device(&s, d, i + 1, &made))
            goto out;
        created += made;
        s.ndevs = i + 1;
        if (tty)
            fprintf(stderr, "\rdrover sim: provisioning %u/%u", i + 1, s.o.devices);
    }
    if (tty)
        fprintf(stderr, "\n");
    if (stop_signal) {
        rc = 0;
        goto out;
    }
    printf("drover sim: %u devices ready (%u created, %u reused), each with a new secret\n",
           s.ndevs, created, s.ndevs - created);
    rc = run(&s);
out:
    for (uint32_t i = 0; s.devs && i < s.o.devices; i++) {
        drv_buf_free(&s.devs[i].in);
        drv_buf_free(&s.devs[i].out);
    }
    drv_free(s.devs);
    drv_free(s.pfds);
    drv_free(s.pdev);
    cli_http_close(&s.http);
    fflush(stdout);
    return rc;
}
