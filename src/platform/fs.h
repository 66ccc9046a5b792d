/*
 * fs.h — the file operations persistence needs, with errors as drv_err.
 */
#ifndef DRV_PLATFORM_FS_H
#define DRV_PLATFORM_FS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

/* Create a directory and its parents (mode 0700). */
drv_err drv_mkdir_p(const char *path);
/* Open for appending, creating it (0600). */
drv_err drv_file_open_append(const char *path, int *fd_out);
/* Open for writing, truncating (0600). */
drv_err drv_file_create(const char *path, int *fd_out);
/* Create the file empty (0600) if it does not exist, and make it 0600 if it
 * does (files that hold secrets: the registry keeps signing keys). */
drv_err drv_file_make_private(const char *path);
/* Write all bytes (retrying short writes). */
drv_err drv_file_write_all(int fd, const void *p, size_t n);
/* fdatasync. */
drv_err drv_file_sync(int fd);
/* Truncate to len bytes. */
drv_err drv_file_truncate(int fd, uint64_t len);
/* Read a whole file into out (capped by out's cap); DRV_NOTFOUND if absent. */
drv_err drv_file_read_all(const char *path, drv_buf *out);
/* Atomic rename, then fsync of the directory holding `to`. */
drv_err drv_file_replace(const char *from, const char *to);
void drv_file_close(int fd);

#endif
