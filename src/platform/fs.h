/*
 * fs.h — the file operations persistence needs, with errors as drv_err.
 */
#ifndef DRV_PLATFORM_FS_H
#define DRV_PLATFORM_FS_H

#include <stdbool.h>
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

/* fsync a directory (after creating, renaming or removing entries in it). */
drv_err drv_dir_sync(const char *path);
/* Remove a file (DRV_NOTFOUND if absent) / an empty directory. */
drv_err drv_file_remove(const char *path);
drv_err drv_dir_remove(const char *path);
/* Call fn for each entry of a directory except "." and "..", in no particular
 * order; fn returning false stops the walk.  DRV_NOTFOUND if it does not exist. */
drv_err drv_dir_each(const char *path, bool (*fn)(void *ud, const char *name, bool is_dir),
                     void *ud);

/* A read-only mapping of a whole file (immutable files: the engine's blocks). */
typedef struct drv_file_map {
    const uint8_t *data; /* NULL for an empty file */
    size_t len;
} drv_file_map;
/* Map `path` read-only; DRV_NOTFOUND if absent. */
drv_err drv_file_map_open(const char *path, drv_file_map *m);
void drv_file_map_close(drv_file_map *m);

#endif
