/*
 * bench_int.h — private types of `drover bench` shared by its files.
 *
 *   bench.c         options, the run's phases (driven by the main thread),
 *                   broker /proc sampling, the report (text or JSON)
 *   bench_client.c  one client thread: its own epoll loop, the MQTT client
 *                   state machine, pacing, batched writes, latency and loss
 *   bench_hist.c    the log-linear latency histogram
 *   bench_sys.c     the operating-system calls the tool needs that
 *                   src/platform does not offer (yet)
 *   bench_tls.c     the TLS client (--tls) on OpenSSL, non-blocking
 *
 * Threads share only the bench_run: options and phase timestamps written by
 * the main thread before it publishes the phase (release/acquire), and
 * progress counters that client threads update with relaxed atomics for the
 * main thread to watch.  Everything else belongs to exactly one thread and
 * is merged by the main thread after the threads have been joined.
 */
#ifndef DRV_BENCH_INT_H
#define DRV_BENCH_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

/* -- options ---------------------------------------------------------------- */

typedef enum {
    BENCH_FANIN,   /* N publishers, 1 subscriber, one topic */
    BENCH_FANOUT,  /* 1 publisher, N subscribers, one topic */
    BENCH_P2P,     /* N publisher/subscriber pairs, a topic per pair */
    BENCH_IDLE,    /* N connections that CONNECT and then stay idle */
    BENCH_CONNECT, /* N concurrent connect/CONNACK/DISCONNECT loops */
} bench_scenario;

/* Smallest payload: send time (8 bytes), sequence (4), publisher number (4). */
#define BENCH_MIN_PAYLOAD 16u

typedef struct bench_opts {
    char host[256];            /* broker address (numeric or name), loopback by default */
    uint16_t port;             /* broker TCP port */
    bench_scenario scenario;   /* what load to generate */
    uint32_t clients;          /* publishers (fanin), subscribers (fanout), pairs (p2p),
                                  connections (idle) or concurrent connectors (connect) */
    uint8_t qos;               /* QoS of PUBLISH and of the subscriptions */
    uint32_t size;             /* payload bytes, >= BENCH_MIN_PAYLOAD */
    uint64_t rate;             /* total offered PUBLISH rate in msg/s; 0 = unpaced */
    uint32_t inflight;         /* per publisher: unacknowledged QoS 1/2 window, or the QoS 0
                                  batch per loop turn when unpaced */
    uint64_t duration_ms;      /* measured window (idle: how long connections are held) */
    uint64_t warmup_ms;        /* load before the measured window starts */
    uint32_t threads;          /* client threads, each with its own epoll loop */
    uint8_t protocol;          /* MQTT protocol level: 4 (3.1.1) or 5 */
    int broker_pid;            /* broker process to sample in /proc; 0 = none */
    bool json;                 /* one JSON object on stdout instead of text */
    uint16_t keepalive;        /* keep alive sent in CONNECT, seconds */
    uint64_t setup_timeout_ms; /* longest wait for every client to be ready */
    uint64_t drain_timeout_ms; /* longest wait for in-flight messages after the window */
    uint32_t connect_burst;    /* per thread: connects outstanding at once */
    bool tls;                  /* speak TLS (full handshake per connection) */
    char cafile[1024];         /* --cafile: CA(s) the server certificate must chain to */
    char servername[256];      /* --servername: SNI and the name verified (default localhost) */
} bench_opts;

/* -- latency histogram (bench_hist.c) ---------------------------------------- */

/*
 * HDR-like log-linear histogram of nanosecond values: exact below 128 ns,
 * then 64 linear sub-buckets per power of two (relative error < 1.6%), up to
 * 2^38 ns (about 275 s; larger values land in the last bucket).  Fixed size,
 * no allocation per sample.
 */
#define BENCH_HIST_BUCKETS (128 + 31 * 64)

typedef struct bench_hist {
    uint64_t counts[BENCH_HIST_BUCKETS]; /* samples per bucket */
    uint64_t total;                      /* samples recorded */
    uint64_t sum_ns;                     /* sum of all samples, for the mean */
    uint64_t max_ns;                     /* exact largest sample */
    uint64_t min_ns;                     /* exact smallest sample (UINT64_MAX when empty) */
} bench_hist;

/* Reset h to empty. */
void bench_hist_init(bench_hist *h);
/* Record one sample of v nanoseconds. */
void bench_hist_record(bench_hist *h, uint64_t v);
/* Add every sample of src to dst. */
void bench_hist_merge(bench_hist *dst, const bench_hist *src);
/*
 * The value at quantile q (0..1): the highest value of the bucket holding
 * the ceil(q * total)-th sample, never above max_ns; 0 when empty.
 */
uint64_t bench_hist_quantile(const bench_hist *h, double q);

/* -- operating system (bench_sys.c) ------------------------------------------ */

/* A resolved socket address, opaque outside bench_sys.c. */
typedef struct bench_addr {
    _Alignas(8) uint8_t raw[128]; /* a struct sockaddr_storage */
    uint32_t len;                 /* bytes of raw in use */
} bench_addr;

/* An epoll instance with its event array, opaque outside bench_sys.c. */
typedef struct bench_poll bench_poll;

/* One ready descriptor as returned by bench_poll_wait. */
typedef struct bench_event {
    void *ptr;       /* the pointer registered with the descriptor */
    uint32_t events; /* DRV_EV_READ / DRV_EV_WRITE / DRV_EV_ERROR (platform/loop.h) */
} bench_event;

/* Resolve host (numeric or name) and port; DRV_INVAL if it does not resolve. */
drv_err bench_sys_resolve(const char *host, uint16_t port, bench_addr *out);
/*
 * Start a non-blocking TCP connect with TCP_NODELAY; *fd_out is the socket.
 * *done is true if the connection completed at once, false if it is in
 * progress (wait for writability, then call bench_sys_connect_result).
 */
drv_err bench_sys_connect(const bench_addr *a, int *fd_out, bool *done);
/* Outcome of a connect that was in progress: DRV_OK or why it failed. */
drv_err bench_sys_connect_result(int fd);
/* Raise the soft RLIMIT_NOFILE to the hard limit; *limit gets the new soft limit. */
drv_err bench_sys_raise_nofile(uint64_t *limit);

/* Create an epoll instance returning up to max_events per wait; free with bench_poll_free. */
drv_err bench_poll_new(uint32_t max_events, bench_poll **out);
void bench_poll_free(bench_poll *p);
/* Watch fd for events (DRV_EV_READ / DRV_EV_WRITE), reporting ptr. */
drv_err bench_poll_add(bench_poll *p, int fd, uint32_t events, void *ptr);
drv_err bench_poll_mod(bench_poll *p, int fd, uint32_t events, void *ptr);
/* Stop watching fd (before it is closed). */
void bench_poll_del(bench_poll *p, int fd);
/* Wait up to timeout_ms (0: poll) and fill out[]; returns the count (0 on EINTR). */
int bench_poll_wait(bench_poll *p, bench_event *out, int timeout_ms);

/* CPU time (user + system) of process pid from /proc/PID/stat, in ns. */
drv_err bench_sys_proc_cpu_ns(int pid, uint64_t *ns);
/* Resident set size of process pid from /proc/PID/status (VmRSS), in bytes. */
drv_err bench_sys_proc_rss(int pid, uint64_t *bytes);
/* CPU time (user + system) used by this process, all threads, in ns. */
uint64_t bench_sys_self_cpu_ns(void);
/* Sleep for ns nanoseconds (returns early on a signal). */
void bench_sys_sleep_ns(uint64_t ns);
/* Make SIGINT and SIGTERM set a flag (bench_sys_interrupted) instead of killing us. */
void bench_sys_catch_signals(void);
/* True once SIGINT or SIGTERM has arrived. */
bool bench_sys_interrupted(void);
/* Number of online CPUs (for reporting). */
uint32_t bench_sys_ncpu(void);

/* -- TLS client (bench_tls.c) ------------------------------------------------ */

/* One connection's TLS state (an OpenSSL SSL), opaque outside bench_tls.c. */
typedef struct bench_tls bench_tls;

/* The run's client context verifying against cafile; *out is an SSL_CTX. */
drv_err bench_tls_ctx_new(const char *cafile, void **out);
void bench_tls_ctx_free(void *ctx);
/* A new TLS client (never resuming a session) on connected socket fd. */
drv_err bench_tls_new(void *ctx, const char *servername, int fd, bench_tls **out);
void bench_tls_free(bench_tls *tls);
/*
 * Handshake, read and write: DRV_OK, DRV_AGAIN with *want = DRV_EV_READ or
 * DRV_EV_WRITE (the socket event to wait for), DRV_CLOSED on close_notify,
 * another error on failure.
 */
drv_err bench_tls_handshake(bench_tls *tls, uint32_t *want);
drv_err bench_tls_read(bench_tls *tls, void *buf, size_t len, size_t *n, uint32_t *want);
drv_err bench_tls_write(bench_tls *tls, const void *buf, size_t len, size_t *n, uint32_t *want);
/* Decrypted or buffered bytes OpenSSL holds that the socket will not signal. */
bool bench_tls_pending(bench_tls *tls);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384 x25519" of a finished handshake. */
void bench_tls_describe(bench_tls *tls, char *buf, size_t len);
/* Why a handshake failed (verification result or OpenSSL's last error). */
void bench_tls_why(bench_tls *tls, char *buf, size_t len);

/* -- a run ------------------------------------------------------------------- */

/* Phases, set by the main thread only, in this order. */
typedef enum {
    BENCH_PH_SETUP, /* connect, CONNECT, SUBSCRIBE */
    BENCH_PH_RUN,   /* publish (or hold, or cycle connections) */
    BENCH_PH_DRAIN, /* stop publishing; collect what is still in flight */
    BENCH_PH_STOP,  /* DISCONNECT, close, exit the thread */
} bench_phase;

/* Counters one thread accumulates; merged after join. */
typedef struct bench_counts {
    uint64_t sent;            /* PUBLISH written, whole run */
    uint64_t sent_window;     /* ... with a send time in the measured window */
    uint64_t recv;            /* PUBLISH received with a bench payload, whole run */
    uint64_t recv_unique;     /* ... advancing their publisher's sequence (not duplicates) */
    uint64_t recv_window;     /* ... received inside the measured window */
    uint64_t gaps;            /* sequence numbers skipped on arrival */
    uint64_t reordered;       /* arrivals at or below a sequence already seen */
    uint64_t foreign;         /* PUBLISH without a payload from this run */
    uint64_t acked;           /* QoS 1/2 publishes completed (PUBACK / PUBCOMP) */
    uint64_t connects_ok;     /* CONNACKs with success */
    uint64_t connects_failed; /* connect errors, refusals, timeouts */
    uint64_t cycles;          /* connect scenario: full cycles ended in the window */
    uint64_t dropped;         /* connections closed by the broker unexpectedly */
    uint64_t protocol_errors; /* undecodable or unexpected packets */
    uint64_t pings;           /* PINGREQ sent */
} bench_counts;

typedef struct bench_thread bench_thread;

typedef struct bench_run {
    const bench_opts *o;        /* the options (read-only once threads start) */
    bench_addr addr;            /* the broker's address */
    uint32_t run_id;            /* our pid, in client ids and topics so runs do not mix */
    uint32_t npub;              /* publishers in the run */
    uint32_t nsub;              /* subscribers in the run */
    uint32_t nconn;             /* connections (clients) in the run */
    uint64_t start_ns;          /* RUN began (valid once phase >= RUN) */
    uint64_t window_ns;         /* measured window starts (start_ns + warm-up) */
    uint64_t end_ns;            /* measured window ends */
    _Atomic int phase;          /* a bench_phase */
    _Atomic uint32_t ready;     /* clients connected (and subscribed) */
    _Atomic uint32_t failed;    /* clients that failed during setup */
    _Atomic uint32_t open;      /* clients currently connected */
    _Atomic uint32_t inflight;  /* unacknowledged QoS 1/2 publishes, all threads */
    _Atomic uint64_t sent;      /* PUBLISH written, all threads (progress) */
    _Atomic uint64_t delivered; /* bench PUBLISH received, all threads (progress) */
    void *tls_ctx;              /* --tls: the shared SSL_CTX */
    bench_thread **threads;     /* the client threads */
    uint32_t nthreads;          /* entries in threads */
} bench_run;

/*
 * Create client thread `index` of `run`, owning the run's clients whose
 * number modulo nthreads is index.  It runs until the phase is STOP and it
 * has closed its connections.  Free with bench_thread_free after joining.
 */
drv_err bench_thread_new(bench_run *run, uint32_t index, bench_thread **out);
/* Start the thread. */
drv_err bench_thread_start(bench_thread *t);
/* Wait for the thread to finish. */
void bench_thread_join(bench_thread *t);
/* The thread's results: valid after bench_thread_join. */
const bench_counts *bench_thread_counts(const bench_thread *t);
const bench_hist *bench_thread_latency(const bench_thread *t);
const bench_hist *bench_thread_ack_latency(const bench_thread *t);
/* Connect scenario: connect → close of each cycle.  Others: empty. */
const bench_hist *bench_thread_cycle_latency(const bench_thread *t);
/* --tls: protocol, cipher and group of the thread's first handshake ("" if none). */
const char *bench_thread_tls_desc(const bench_thread *t);
void bench_thread_free(bench_thread *t);

#endif
