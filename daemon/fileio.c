/* File helpers (fileio.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#include "fileio.h"

int fileio_write_all(int fd, const void *bytes, size_t size)
{
    const uint8_t *p = bytes;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

int fileio_pwrite_all(int fd, const void *bytes, size_t size, uint64_t at)
{
    const uint8_t *p = bytes;
    while (size > 0) {
        ssize_t n = pwrite(fd, p, size, (off_t)at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO;
        p += n;
        size -= (size_t)n;
        at += (uint64_t)n;
    }
    return 0;
}

int fileio_pread_all(int fd, void *bytes, size_t size, uint64_t at)
{
    uint8_t *p = bytes;
    while (size > 0) {
        ssize_t n = pread(fd, p, size, (off_t)at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : EIO; /* EIO: the file ends before `size` bytes */
        p += n;
        size -= (size_t)n;
        at += (uint64_t)n;
    }
    return 0;
}

int fileio_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    int err = fsync(fd) != 0 ? errno : 0;
    close(fd);
    return err;
}
