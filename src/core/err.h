/*
 * err.h — the project's one error enum.
 *
 * Every action in Drover returns a drv_err; predicates return bool.  The
 * X-macro below is the single table of codes and their messages, so the enum
 * and drv_strerror() can never drift apart.  errno is translated into this
 * enum in one place only: src/platform (drv_err_from_errno).
 *
 * DRV_AGAIN means "not yet" (non-blocking I/O would block, a packet is not
 * complete); DRV_DECLINED means "not mine" (an auth backend or a handler in a
 * chain passes the decision on).  Neither is a failure.
 */
#ifndef DRV_CORE_ERR_H
#define DRV_CORE_ERR_H

#define DRV_ERRORS(X)                      \
    X(OK, "success")                       \
    X(AGAIN, "not yet; try again later")   \
    X(DECLINED, "not handled here")        \
    X(NOMEM, "out of memory")              \
    X(INVAL, "invalid argument")           \
    X(MALFORMED, "malformed packet")       \
    X(PROTOCOL, "protocol error")          \
    X(TOOBIG, "too large")                 \
    X(LIMIT, "limit exceeded")             \
    X(NOTFOUND, "not found")               \
    X(EXISTS, "already exists")            \
    X(CONFLICT, "version conflict")        \
    X(DENIED, "not authorised")            \
    X(AUTH, "bad user name or password")   \
    X(IO, "input/output error")            \
    X(CLOSED, "connection closed")         \
    X(ADDRINUSE, "address already in use") \
    X(CORRUPT, "corrupt data")             \
    X(CONFIG, "configuration error")       \
    X(UNSUPPORTED, "not supported")

typedef enum {
#define DRV_ERR_ENUM(name, msg) DRV_##name,
    DRV_ERRORS(DRV_ERR_ENUM)
#undef DRV_ERR_ENUM
    DRV_ERR_COUNT
} drv_err;

/* Human-readable message for an error code; never NULL. */
const char *drv_strerror(drv_err err);

/* Symbolic name ("AGAIN", "NOMEM") of an error code; never NULL. */
const char *drv_errname(drv_err err);

#endif
