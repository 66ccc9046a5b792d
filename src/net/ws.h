/*
 * ws.h — the server side of WebSocket (RFC 6455) as a transport: MQTT over
 * WebSocket (MQTT 5.0 §6), over a TCP or a TLS lower stream.
 *
 * A ws stream first reads an HTTP/1.1 request head from the lower stream and
 * answers it: `101 Switching Protocols` for an upgrade on the configured path,
 * or a small error response (`Connection: close`) after which read() reports
 * DRV_CLOSED.  After the 101 it carries MQTT bytes: read() returns the
 * payload of the client's binary data frames (unmasked, as they arrive, not
 * waiting for a message to end — MQTT is a byte stream), write() sends each
 * call's bytes as one unmasked binary frame.  Ping, pong and close are
 * handled inside the stream.
 *
 * What it is not: a WebSocket client, an HTTP server (other paths go to the
 * on_http hook, or get 404), or a message API (message boundaries are not
 * reported; text frames are refused with close 1003, as MQTT §6 requires
 * binary).  No extensions (permessage-deflate) are negotiated.
 *
 * Memory: the stream's state is one small allocation.  The request head
 * buffer is freed after the 101, the output buffer exists only while a frame
 * is partly written, and a control frame's payload only while it arrives, so
 * an idle connection holds no buffers.  Every buffer has a hard cap.
 *
 * Errors: a peer that breaks RFC 6455 gets a close frame with the status
 * code (1002 protocol error, 1003 text frame, 1009 message too big), sent
 * best effort, and read() returns DRV_PROTOCOL (after first returning any
 * payload bytes that arrived before the fault).
 */
#ifndef DRV_NET_WS_H
#define DRV_NET_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"
#include "net/transport.h"

/* Largest payload one write() call takes; a longer write is taken in part. */
#define DRV_WS_MAX_WRITE (4u << 20)
/* max_handshake when the config says 0. */
#define DRV_WS_DEFAULT_MAX_HANDSHAKE 8192u
/* max_message when the config says 0: MQTT's largest packet (256 MB + header). */
#define DRV_WS_DEFAULT_MAX_MESSAGE 268435460u

/* A request head for a path other than the WebSocket one (see on_http). */
typedef struct drv_ws_http_request {
    const char *method; /* "GET", "POST", ... (not NUL-terminated) */
    size_t method_len;  /* bytes in method */
    const char *target; /* request target as sent, query string included (not NUL-terminated) */
    size_t target_len;  /* bytes in target */
    const char *head;   /* the whole head, request line to the blank line, for headers */
    size_t head_len;    /* bytes in head, final CRLF CRLF included */
} drv_ws_http_request;

/*
 * HOOK — the REST API (a later issue) shares this port.  Called on the
 * loop thread for a request whose path is not `path`, with the head only
 * (request bodies are not read yet).  It appends a complete HTTP/1.1
 * response, `Connection: close` included, to `response` (capped) and
 * returns DRV_OK; the connection ends once it is written.  DRV_DECLINED
 * gives the built-in 404; any other error a 500.  The views in `req` are
 * valid during the call only.
 */
typedef drv_err (*drv_ws_http_fn)(void *ud, const drv_ws_http_request *req, drv_buf *response);

typedef struct drv_ws_config {
    const char *path;       /* request path served, "/mqtt" (query string ignored) */
    uint32_t max_message;   /* largest message payload accepted (→ close 1009); 0 = default */
    uint32_t max_handshake; /* largest HTTP request head accepted (→ 431); 0 = default */
    drv_ws_http_fn on_http; /* other paths answered in place (→ 404 when NULL) */
    /* Other paths go to the HTTP server instead: read() returns DRV_DECLINED and
     * the owner calls drv_ws_detach (on_http is then not used). */
    bool handoff;
    void *on_http_ud; /* passed to on_http */
} drv_ws_config;

/*
 * Server side of a WebSocket over `lower` (a TCP or TLS stream, already
 * connected).  On success the new stream sits on top of `lower`:
 * drv_stream_free(*out, code) sends a close frame, then frees both.  On
 * error (DRV_INVAL for a config without a path starting with '/', DRV_NOMEM)
 * nothing is allocated and `lower` is still the caller's.  `cfg` is not
 * copied: it must outlive the stream (it is the listener's).
 *
 * Set max_message to at least the broker's maximum packet size: a client
 * may carry several MQTT packets in one WebSocket message.
 *
 * Driving it (all on the connection's loop thread, as for any transport):
 *   - read() performs the handshake, then returns MQTT bytes;
 *   - after every read/write call, watch the events wants() reports: WRITE
 *     while the stream has its own output pending (a partly written frame,
 *     the 101, a pong, a close);
 *   - when the fd becomes writable, call write() (with the caller's pending
 *     bytes, or with len 0) or wants(): each first flushes that output;
 *   - write() returns DRV_AGAIN before the handshake has completed and while
 *     an earlier frame is still partly unsent.
 */
drv_err drv_ws_stream_new(const drv_ws_config *cfg, drv_stream *lower, drv_stream **out);

extern const drv_transport_ops drv_ws_ops;

/*
 * The Sec-WebSocket-Accept value (RFC 6455 §4.2.2) for the client's
 * Sec-WebSocket-Key key[0..n) (not NUL-terminated): base64(SHA-1(key GUID)),
 * 28 characters and a NUL into out.  False, out unspecified, when the key is
 * not base64 of 16 bytes (24 characters ending in "==") or hashing failed.
 * Pure; any thread.  Used here and by the live hub's upgrade (src/live).
 */
bool drv_ws_accept_key(const char *key, size_t n, char out[29]);

/*
 * Server→client frame header: unmasked, FIN set, `opcode`, for a payload of
 * len bytes, into h (room for 10 bytes).  Returns the header length: 2 (len
 * < 126), 4 (len < 65536) or 10.  The payload follows it unchanged.  Pure;
 * used by this transport and by the live hub's message frames (src/live).
 */
size_t drv_ws_frame_header(uint8_t h[10], uint8_t opcode, uint64_t len);

/*
 * After read() returned DRV_DECLINED (cfg->handoff): take the lower stream
 * and the bytes read so far (the request head and anything behind it) and
 * free the WebSocket layer alone.  *read_so_far is the caller's to free.
 * DRV_INVAL when st is not a ws stream waiting to be handed off.
 */
drv_err drv_ws_detach(drv_stream *st, drv_stream **lower, drv_buf *read_so_far);

#endif
