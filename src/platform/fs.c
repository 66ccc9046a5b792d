/* fs.c — file helpers; see fs.h. */
#include "platform/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "platform/net.h"

drv_err drv_mkdir_p(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return DRV_TOOBIG;
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
                return drv_err_from_errno(errno);
            *p = '/';
        }
    }
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return drv_err_from_errno(errno);
    return DRV_OK;
}

static drv_err open_flags(const char *path, int flags, int *fd_out)
{
    int fd = open(path, flags | O_CLOEXEC, 0600);
    if (fd < 0)
        return drv_err_from_errno(errno);
    *fd_out = fd;
    return DRV_OK;
}

drv_err drv_file_open_append(const char *path, int *fd_out)
{
    return open_flags(path, O_WRONLY | O_CREAT | O_APPEND, fd_out);
}

drv_err drv_file_create(const char *path, int *fd_out)
{
    return open_flags(path, O_WRONLY | O_CREAT | O_TRUNC, fd_out);
}

drv_err drv_file_make_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return drv_err_from_errno(errno);
    drv_err e = fchmod(fd, 0600) < 0 ? drv_err_from_errno(errno) : DRV_OK;
    close(fd);
    return e;
}

drv_err drv_file_write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return drv_err_from_errno(errno);
        }
        b += w;
        n -= (size_t)w;
    }
    return DRV_OK;
}

drv_err drv_file_sync(int fd)
{
    return fdatasync(fd) < 0 ? drv_err_from_errno(errno) : DRV_OK;
}

drv_err drv_file_truncate(int fd, uint64_t len)
{
    return ftruncate(fd, (off_t)len) < 0 ? drv_err_from_errno(errno) : DRV_OK;
}

drv_err drv_file_read_all(const char *path, drv_buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return drv_err_from_errno(errno);
    drv_err err = DRV_OK;
    for (;;) {
        uint8_t *p = drv_buf_reserve(out, 65536, &err);
        if (!p)
            break;
        ssize_t r = read(fd, p, 65536);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            err = drv_err_from_errno(errno);
            break;
        }
        if (r == 0)
            break;
        out->len += (size_t)r;
    }
    close(fd);
    return err;
}

drv_err drv_file_replace(const char *from, const char *to)
{
    if (rename(from, to) < 0)
        return drv_err_from_errno(errno);
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", to);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return DRV_OK;
}

void drv_file_close(int fd)
{
    if (fd >= 0)
        close(fd);
}

drv_err drv_dir_sync(const char *path)
{
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return drv_err_from_errno(errno);
    drv_err e = fsync(dfd) < 0 ? drv_err_from_errno(errno) : DRV_OK;
    close(dfd);
    return e;
}

drv_err drv_file_remove(const char *path)
{
    return unlink(path) < 0 ? drv_err_from_errno(errno) : DRV_OK;
}

drv_err drv_dir_remove(const char *path)
{
    return rmdir(path) < 0 ? drv_err_from_errno(errno) : DRV_OK;
}

drv_err drv_dir_each(const char *path, bool (*fn)(void *ud, const char *name, bool is_dir),
                     void *ud)
{
    DIR *d = opendir(path);
    if (!d)
        return drv_err_from_errno(errno);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        bool is_dir = de->d_type == DT_DIR;
        if (de->d_type == DT_UNKNOWN) {
            struct stat st;
            is_dir = fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISDIR(st.st_mode);
        }
        if (!fn(ud, de->d_name, is_dir))
            break;
    }
    closedir(d);
    return DRV_OK;
}

drv_err drv_file_map_open(const char *path, drv_file_map *m)
{
    m->data = NULL;
    m->len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return drv_err_from_errno(errno);
    struct stat st;
    drv_err e = DRV_OK;
    if (fstat(fd, &st) < 0) {
        e = drv_err_from_errno(errno);
    } else if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            e = drv_err_from_errno(errno);
        } else {
            m->data = p;
            m->len = (size_t)st.st_size;
        }
    }
    close(fd);
    return e;
}

void drv_file_map_close(drv_file_map *m)
{
    if (m->data)
        munmap((void *)m->data, m->len);
    m->data = NULL;
    m->len = 0;
}
