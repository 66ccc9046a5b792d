/*
 * ws_frame.h — RFC 6455 frames as *messages*, for the live hub's WebSocket
 * streams (docs/stream.md): a reader that turns the client's bytes into whole
 * text/binary messages and control frames, and the close payload the server
 * sends (its frame headers come from drv_ws_frame_header in net/ws.h).
 *
 * What it is not: a connection.  It does no I/O, no handshake (the HTTP
 * server answers the upgrade; drv_ws_accept_key in net/ws.h computes the
 * accept value), sends nothing (the hub answers pings and closes), keeps no
 * timers and negotiates no extensions (any RSV bit is a protocol error).  It
 * is not src/net/ws.c either, which is a byte-stream transport for MQTT and
 * does not report message boundaries.
 *
 * Reading.  The caller owns an input buffer: it appends what the socket
 * gives, calls drv_wsf_next until it says DRV_AGAIN, and drops the first
 * *used bytes after *every* call (whatever it returned).  A frame is taken
 * only when it is whole in the buffer, so the buffer must be able to hold
 * DRV_WSF_FRAME_MAX(max_message) bytes; a frame that could not fit is
 * refused (1009) as soon as its header arrives, so a bigger buffer is never
 * needed.  Errors that a frame's first bytes decide (reserved bits, opcode,
 * mask bit, lengths) are reported as soon as those bytes are there.
 *
 * Memory.  An unfragmented message, and every control frame, is returned in
 * place: unmasked inside the caller's buffer, no copy.  A fragmented message
 * is reassembled in a buffer the reader allocates when the first fragment
 * with payload arrives (growing, capped at max_message) and frees on the
 * call after the one that returned the message, or in drv_wsf_reader_free.
 * An idle reader holds no memory.
 *
 * Threads: a reader belongs to one connection and one thread; the encoders
 * and drv_wsf_utf8_valid are pure.
 */
#ifndef DRV_LIVE_WS_FRAME_H
#define DRV_LIVE_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

/* Opcodes (RFC 6455 §5.2). */
enum {
    DRV_WSF_CONT = 0x0,
    DRV_WSF_TEXT = 0x1,
    DRV_WSF_BINARY = 0x2,
    DRV_WSF_CLOSE = 0x8,
    DRV_WSF_PING = 0x9,
    DRV_WSF_PONG = 0xA,
};

/* Close codes the reader reports (RFC 6455 §7.4.1). */
enum {
    DRV_WSF_CLOSE_NORMAL = 1000,
    DRV_WSF_CLOSE_PROTOCOL = 1002,
    DRV_WSF_CLOSE_NO_STATUS = 1005, /* a close frame without a code (never sent) */
    DRV_WSF_CLOSE_BAD_DATA = 1007,  /* invalid UTF-8 */
    DRV_WSF_CLOSE_TOO_BIG = 1009,
    DRV_WSF_CLOSE_INTERNAL = 1011,
};

/* Largest control frame payload (§5.5). */
#define DRV_WSF_CONTROL_MAX 125
/* max_message when the caller leaves it 0 (docs/stream.md: 64 KiB). */
#define DRV_WSF_DEFAULT_MAX_MESSAGE 65536u
/* Largest client frame the reader can be asked to hold: 14 header bytes
 * (2 + 8-byte length + 4-byte mask) and the payload.  The caller's input
 * buffer needs this much room (m: max_message, 0 meaning the default). */
#define DRV_WSF_FRAME_MAX(m) (14u + (uint64_t)((m) ? (m) : DRV_WSF_DEFAULT_MAX_MESSAGE))

/*
 * Close frame payload into out (room for 125 bytes): the 2-byte `code` in
 * network order, then `reason` (NUL-terminated UTF-8, may be NULL) cut to
 * 123 bytes at a character boundary.  Returns the payload length (2..125).
 * code 0 writes nothing and returns 0 (a close without status).  Send only
 * codes a peer may send (1000-1003, 1007-1014, 3000-4999), never 1005/1006.
 */
size_t drv_wsf_close_payload(uint8_t out[125], uint16_t code, const char *reason);

/*
 * Incremental reader of client→server frames (masked, §5.1).  Start it
 * zeroed with max_message set: `drv_wsf_reader r = {.max_message = 65536};`
 * and end it with drv_wsf_reader_free.
 */
typedef struct drv_wsf_reader {
    uint32_t max_message; /* largest text/binary message payload (after reassembly); 0 = default */
    /* private: */
    uint8_t *msg;       /* fragments of the open message, unmasked; NULL when none */
    uint32_t msg_len;   /* bytes of the open message so far (in msg) */
    uint32_t msg_cap;   /* bytes allocated at msg */
    uint32_t utf8_ok;   /* text: msg[0..utf8_ok) is checked, complete UTF-8 */
    uint16_t fail_code; /* the close code a failed reader repeats */
    uint8_t msg_opcode; /* TEXT or BINARY while a fragmented message is open, else 0 */
    uint8_t state;      /* 0 open, or closed (close frame seen) / failed: see ws_frame.c */
    uint8_t fail_err;   /* the drv_err a failed reader repeats */
    bool msg_returned;  /* msg holds a message the last call returned: free it next call */
} drv_wsf_reader;

/* One thing the client sent. */
typedef struct drv_wsf_event {
    uint8_t opcode;      /* DRV_WSF_TEXT, _BINARY (a whole message), _PING, _PONG, _CLOSE */
    const uint8_t *data; /* payload, unmasked; _CLOSE: the reason (after the code). Points into
                          * the caller's buffer or the reader's message buffer: valid until the
                          * next call or until the caller changes its buffer */
    size_t len;          /* bytes at data */
    uint16_t close_code; /* _CLOSE: the code sent, 1005 when none; 0 for other events */
} drv_wsf_event;

/*
 * Take the next event from buf[0..n).  In every case *used is the number of
 * bytes taken, which the caller drops from the front of its buffer before
 * appending more or calling again; it keeps the rest.
 *
 *   DRV_OK        *ev is the next event.  *used > 0 (the frames up to and
 *                 including it): handle the event *before* dropping them,
 *                 as ev->data may point into them.  Call again: more may
 *                 be in the buffer.
 *   DRV_AGAIN     no complete event yet.  *used is usually 0, but counts the
 *                 bytes of fragments (non-final frames of a message) that
 *                 were taken into the reader's message buffer.
 *   DRV_PROTOCOL  the client broke RFC 6455: *close_code is 1002 (protocol
 *                 error: unmasked frame, reserved bits, reserved opcode,
 *                 fragmented control frame, control payload > 125, 64-bit
 *                 length with the top bit set, continuation without a
 *                 message or data frame inside one, close payload of 1
 *                 byte or with an invalid code), 1007 (invalid UTF-8 in a
 *                 text message — found as soon as a fragment shows it — or
 *                 in a close reason) or 1009 (message over max_message).
 *                 Send a close frame with that code and end the connection.
 *   DRV_NOMEM     the message buffer could not be allocated; *close_code is
 *                 1011.
 *   DRV_CLOSED    a close frame was already returned; nothing more is read
 *                 (the caller should have stopped).
 * After DRV_PROTOCOL or DRV_NOMEM the reader is finished and every later
 * call returns the same error and code.  *close_code is written only with
 * DRV_PROTOCOL / DRV_NOMEM; *ev only with DRV_OK.
 *
 * buf is unmasked in place (only frames that are taken).  Data frames are
 * returned whole: a text/binary message once its last fragment is in;
 * control frames (ping, pong, close) as they come, also between the
 * fragments of a message.  After a _CLOSE event the caller answers with its
 * close frame and stops reading.
 */
drv_err drv_wsf_next(drv_wsf_reader *r, uint8_t *buf, size_t n, drv_wsf_event *ev, size_t *used,
                     uint16_t *close_code);

/* Free the reader's message buffer; the reader may be used again as if new
 * (same max_message) afterwards. */
void drv_wsf_reader_free(drv_wsf_reader *r);

/* p[0..n) is valid UTF-8 (RFC 3629: shortest form, no surrogates, at most
 * U+10FFFF). */
bool drv_wsf_utf8_valid(const uint8_t *p, size_t n);

#endif
