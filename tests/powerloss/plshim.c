/*
 * libplshim.so: preloaded into budgetd (LD_PRELOAD) to record, for a power-loss image
 * (plimage.c), what the daemon wrote to the regular files of its data folder and when those
 * writes were made durable. The journal's format is in pljournal.h.
 *
 * Environment:
 *   BUDGET_PL_DIR      absolute path of the data folder. Only regular files directly in it are
 *                      tracked (data.mdb, wal, ...), not lock.mdb, budgetd.lock nor anything in
 *                      a subfolder. Unset: the shim records nothing.
 *   BUDGET_PL_JOURNAL  the journal file, appended to (outside the data folder).
 *
 * Intercepted: open, openat, creat (and their 64-bit and fortified names) to map a descriptor
 * to a tracked file and remember O_SYNC/O_DSYNC and O_APPEND; dup, dup2, dup3 and close;
 * write, pwrite, writev, pwritev (and pwrite64, pwritev64, pwritev2) on a tracked descriptor,
 * recorded with what the call reports written; fsync and fdatasync (a begin record at entry,
 * an end record when the call returned 0); ftruncate, fallocate and posix_fallocate (size
 * changes). sync_file_range and syncfs are not intercepted: they make nothing durable here.
 *
 * Not seen: writes through a shared mapping (budgetd does not open LMDB with MDB_WRITEMAP, so
 * LMDB writes its pages with pwrite/writev; msync is not modelled), renames and unlinks
 * (a tracked file that is gone from the folder when the image is made is left out of it),
 * and fcntl(F_SETFL) changes of a descriptor's flags.
 *
 * Every journal append is made under one mutex, with the real functions (found with
 * dlsym(RTLD_NEXT) at load), and nothing is allocated after start-up. A write to a tracked
 * file is made under the same mutex as its record, so the journal's order is the order of the
 * writes; a sync is not (it may take long): a write that completes while a sync runs is
 * recorded after that sync's begin, and so is not counted as covered by it.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pljournal.h"

#define PL_EXPORT __attribute__((visibility("default")))
#define PL_FDS_MAX 65536
#define PL_IOV_CHUNK 64

typedef struct {
    int16_t file; /* 0: not tracked; else the file's id + 1 */
    uint8_t sync; /* opened with O_SYNC or O_DSYNC */
    uint8_t append;
} fd_entry;

static fd_entry fds[PL_FDS_MAX];
static char names[PL_FILES_MAX][PL_NAME_MAX + 1];
static int names_count;
static char dir[PATH_MAX];
static size_t dir_len;
static int journal = -1;
static uint64_t sync_seq;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_posix_fallocate)(int, off_t, off_t);

static void *next(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

static void resolve(void)
{
    real_open = next("open");
    real_openat = next("openat");
    real_close = next("close");
    real_dup = next("dup");
    real_dup2 = next("dup2");
    real_dup3 = next("dup3");
    real_write = next("write");
    real_pwrite = next("pwrite");
    real_writev = next("writev");
    real_pwritev = next("pwritev");
    real_pwritev2 = next("pwritev2");
    real_fsync = next("fsync");
    real_fdatasync = next("fdatasync");
    real_ftruncate = next("ftruncate");
    real_fallocate = next("fallocate");
    real_posix_fallocate = next("posix_fallocate");
}

static void child_after_fork(void)
{
    pthread_mutex_init(&lock, NULL);
}

__attribute__((constructor)) static void plshim_init(void)
{
    resolve();
    const char *d = getenv("BUDGET_PL_DIR");
    const char *j = getenv("BUDGET_PL_JOURNAL");
    if (d == NULL || *d == '\0' || j == NULL || *j == '\0')
        return;
    if (realpath(d, dir) == NULL) {
        fprintf(stderr, "plshim: BUDGET_PL_DIR %s: %s\n", d, strerror(errno));
        return;
    }
    dir_len = strlen(dir);
    journal = real_open(j, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (journal < 0) {
        fprintf(stderr, "plshim: BUDGET_PL_JOURNAL %s: %s\n", j, strerror(errno));
        return;
    }
    pthread_atfork(NULL, NULL, child_after_fork);
}

/* ---- the journal (the caller holds the lock) ----------------------------------------------- */

/* Writes all of hdr and data (n pieces) to the journal. */
static void append(pl_record *h, const struct iovec *data, int n)
{
    struct iovec iov[1 + PL_IOV_CHUNK];
    size_t total = sizeof(*h);
    h->magic = PL_MAGIC;
    iov[0].iov_base = h;
    iov[0].iov_len = sizeof(*h);
    for (int i = 0; i < n && i < PL_IOV_CHUNK; i++) {
        iov[1 + i] = data[i];
        total += data[i].iov_len;
    }
    int count = 1 + (n < PL_IOV_CHUNK ? n : PL_IOV_CHUNK);
    struct iovec *at = iov;
    while (total > 0) {
        ssize_t w = real_writev(journal, at, count);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        total -= (size_t)w;
        while (count > 0 && (size_t)w >= at->iov_len) {
            w -= (ssize_t)at->iov_len;
            at++;
            count--;
        }
        if (count > 0) {
            at->iov_base = (char *)at->iov_base + w;
            at->iov_len -= (size_t)w;
        }
    }
}

static void record(uint16_t type, uint16_t flags, int file, uint64_t offset, uint64_t seq,
                   const void *data, size_t len)
{
    pl_record h = {.type = type,
                   .flags = flags,
                   .file = (uint32_t)file,
                   .len = (uint32_t)len,
                   .offset = offset,
                   .seq = seq};
    struct iovec iov = {(void *)data, len};
    append(&h, &iov, len ? 1 : 0);
}

/* Records what a write of `n` bytes from iov at `offset` put in `file`, one record per piece. */
static void record_iov(const fd_entry *e, const struct iovec *iov, int count, off_t offset,
                       ssize_t n)
{
    uint64_t at = (uint64_t)offset;
    for (int i = 0; i < count && n > 0; i++) {
        size_t len = iov[i].iov_len < (size_t)n ? iov[i].iov_len : (size_t)n;
        if (len == 0)
            continue;
        record(PL_WRITE, e->sync ? PL_DURABLE : 0, e->file - 1, at, 0, iov[i].iov_base, len);
        at += len;
        n -= (ssize_t)len;
    }
}

/* ---- descriptors --------------------------------------------------------------------------- */

static bool active(void)
{
    return journal >= 0;
}

static fd_entry *entry(int fd)
{
    if (!active() || fd < 0 || fd >= PL_FDS_MAX || fds[fd].file == 0)
        return NULL;
    return &fds[fd];
}

/* The id of DATA/name, named in the journal when new; -1 when the table is full. */
static int file_id(const char *name)
{
    for (int i = 0; i < names_count; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    if (names_count == PL_FILES_MAX)
        return -1;
    snprintf(names[names_count], sizeof(names[0]), "%s", name);
    record(PL_NAME, 0, names_count, 0, 0, name, strlen(name));
    return names_count++;
}

/* After an open returned `fd`: tracks it when it is a regular file directly in the folder. */
static void opened(int fd, int flags)
{
    char link[64], path[PATH_MAX];
    struct stat st;
    if (!active() || fd < 0 || fd >= PL_FDS_MAX)
        return;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    if (n <= (ssize_t)dir_len + 1)
        return;
    path[n] = '\0';
    const char *name = path + dir_len + 1;
    if (memcmp(path, dir, dir_len) != 0 || path[dir_len] != '/' || strchr(name, '/') != NULL ||
        strcmp(name, "lock.mdb") == 0 || strcmp(name, "budgetd.lock") == 0)
        return;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        return;
    int saved = errno;
    pthread_mutex_lock(&lock);
    int id = file_id(name);
    if (id >= 0) {
        fds[fd].file = (int16_t)(id + 1);
        fds[fd].sync = (flags & (O_SYNC | O_DSYNC)) != 0;
        fds[fd].append = (flags & O_APPEND) != 0;
        if (flags & O_TRUNC)
            record(PL_SIZE, 0, id, 0, 0, NULL, 0);
    }
    pthread_mutex_unlock(&lock);
    errno = saved;
}

static void forget(int fd)
{
    if (fd >= 0 && fd < PL_FDS_MAX)
        fds[fd].file = 0;
}

static void copied(int from, int to)
{
    if (!active() || from < 0 || from >= PL_FDS_MAX || to < 0 || to >= PL_FDS_MAX || from == to)
        return;
    pthread_mutex_lock(&lock);
    fds[to] = fds[from];
    pthread_mutex_unlock(&lock);
}

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

PL_EXPORT int open(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    if (!real_open)
        resolve();
    int fd = real_open(path, flags, mode);
    opened(fd, flags);
    return fd;
}

PL_EXPORT int open64(const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return open(path, flags, mode);
}

PL_EXPORT int __open_2(const char *path, int flags)
{
    return open(path, flags);
}

PL_EXPORT int __open64_2(const char *path, int flags)
{
    return open(path, flags);
}

PL_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    if (!real_openat)
        resolve();
    int fd = real_openat(dirfd, path, flags, mode);
    opened(fd, flags);
    return fd;
}

PL_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    return openat(dirfd, path, flags, mode);
}

PL_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
    return openat(dirfd, path, flags);
}

PL_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
    return openat(dirfd, path, flags);
}

PL_EXPORT int creat(const char *path, mode_t mode)
{
    return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

PL_EXPORT int creat64(const char *path, mode_t mode)
{
    return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

PL_EXPORT int close(int fd)
{
    if (!real_close)
        resolve();
    if (entry(fd) == NULL)
        return real_close(fd);
    pthread_mutex_lock(&lock);
    forget(fd);
    int rc = real_close(fd);
    int saved = errno;
    pthread_mutex_unlock(&lock);
    errno = saved;
    return rc;
}

PL_EXPORT int dup(int fd)
{
    if (!real_dup)
        resolve();
    int to = real_dup(fd);
    if (to >= 0 && entry(fd) != NULL)
        copied(fd, to);
    return to;
}

PL_EXPORT int dup2(int fd, int to)
{
    if (!real_dup2)
        resolve();
    int rc = real_dup2(fd, to);
    if (rc >= 0 && active() && fd != to) {
        if (entry(fd) != NULL)
            copied(fd, rc);
        else
            forget(rc);
    }
    return rc;
}

PL_EXPORT int dup3(int fd, int to, int flags)
{
    if (!real_dup3)
        resolve();
    int rc = real_dup3(fd, to, flags);
    if (rc >= 0 && active()) {
        if (entry(fd) != NULL)
            copied(fd, rc);
        else
            forget(rc);
    }
    return rc;
}

/* ---- writes -------------------------------------------------------------------------------- */

/* A write on a tracked descriptor: `call` makes it (under the lock), at `offset` or, when
 * offset is -1, at the descriptor's position (its end for O_APPEND). */
#define TRACKED_WRITE(fd, e, offset, iov, count, call)                                             \
    do {                                                                                           \
        pthread_mutex_lock(&lock);                                                                 \
        off_t at_ = (offset) >= 0 ? (offset) : (e)->append ? -1 : lseek((fd), 0, SEEK_CUR);        \
        ssize_t n_ = (call);                                                                       \
        int saved_ = errno;                                                                        \
        if (n_ > 0 && at_ < 0)                                                                     \
            at_ = lseek((fd), 0, SEEK_CUR) - n_;                                                   \
        if (n_ > 0 && at_ >= 0)                                                                    \
            record_iov((e), (iov), (count), at_, n_);                                              \
        pthread_mutex_unlock(&lock);                                                               \
        errno = saved_;                                                                            \
        return n_;                                                                                 \
    } while (0)

PL_EXPORT ssize_t write(int fd, const void *buf, size_t count)
{
    if (!real_write)
        resolve();
    fd_entry *e = entry(fd);
    if (e == NULL)
        return real_write(fd, buf, count);
    struct iovec iov = {(void *)buf, count};
    TRACKED_WRITE(fd, e, (off_t)-1, &iov, 1, real_write(fd, buf, count));
}

PL_EXPORT ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    if (!real_pwrite)
        resolve();
    fd_entry *e = entry(fd);
    if (e == NULL || offset < 0)
        return real_pwrite(fd, buf, count, offset);
    struct iovec iov = {(void *)buf, count};
    TRACKED_WRITE(fd, e, offset, &iov, 1, real_pwrite(fd, buf, count, offset));
}

PL_EXPORT ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset)
{
    return pwrite(fd, buf, count, offset);
}

PL_EXPORT ssize_t writev(int fd, const struct iovec *iov, int count)
{
    if (!real_writev)
        resolve();
    fd_entry *e = entry(fd);
    if (e == NULL)
        return real_writev(fd, iov, count);
    TRACKED_WRITE(fd, e, (off_t)-1, iov, count, real_writev(fd, iov, count));
}

PL_EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int count, off_t offset)
{
    if (!real_pwritev)
        resolve();
    fd_entry *e = entry(fd);
    if (e == NULL || offset < 0)
        return real_pwritev(fd, iov, count, offset);
    TRACKED_WRITE(fd, e, offset, iov, count, real_pwritev(fd, iov, count, offset));
}

PL_EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int count, off_t offset)
{
    return pwritev(fd, iov, count, offset);
}

PL_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int count, off_t offset, int flags)
{
    if (!real_pwritev2)
        resolve();
    fd_entry *e = entry(fd);
    if (e == NULL)
        return real_pwritev2(fd, iov, count, offset, flags);
    /* RWF_DSYNC / RWF_SYNC make this one write durable on return. */
    fd_entry one = *e;
#ifdef RWF_DSYNC
    if (flags & (RWF_DSYNC | RWF_SYNC))
        one.sync = 1;
#endif
#ifdef RWF_APPEND
    if (flags & RWF_APPEND)
        one.append = 1, offset = -1;
#endif
    TRACKED_WRITE(fd, &one, offset, iov, count, real_pwritev2(fd, iov, count, offset, flags));
}

/* ---- syncs and sizes ----------------------------------------------------------------------- */

static int tracked_sync(int fd, int (*call)(int))
{
    fd_entry *e = entry(fd);
    if (e == NULL)
        return call(fd);
    int file = e->file - 1;
    pthread_mutex_lock(&lock);
    uint64_t seq = ++sync_seq;
    record(PL_SYNC_BEGIN, 0, file, 0, seq, NULL, 0);
    pthread_mutex_unlock(&lock);
    int rc = call(fd);
    int saved = errno;
    if (rc == 0) {
        pthread_mutex_lock(&lock);
        record(PL_SYNC_END, 0, file, 0, seq, NULL, 0);
        pthread_mutex_unlock(&lock);
    }
    errno = saved;
    return rc;
}

PL_EXPORT int fsync(int fd)
{
    if (!real_fsync)
        resolve();
    return tracked_sync(fd, real_fsync);
}

PL_EXPORT int fdatasync(int fd)
{
    if (!real_fdatasync)
        resolve();
    return tracked_sync(fd, real_fdatasync);
}

static void sized(int fd, uint16_t type, uint64_t size)
{
    fd_entry *e = entry(fd);
    if (e == NULL)
        return;
    pthread_mutex_lock(&lock);
    record(type, e->sync ? PL_DURABLE : 0, e->file - 1, size, 0, NULL, 0);
    pthread_mutex_unlock(&lock);
}

PL_EXPORT int ftruncate(int fd, off_t length)
{
    if (!real_ftruncate)
        resolve();
    int rc = real_ftruncate(fd, length);
    int saved = errno;
    if (rc == 0)
        sized(fd, PL_SIZE, (uint64_t)length);
    errno = saved;
    return rc;
}

PL_EXPORT int ftruncate64(int fd, off_t length)
{
    return ftruncate(fd, length);
}

PL_EXPORT int fallocate(int fd, int mode, off_t offset, off_t len)
{
    if (!real_fallocate)
        resolve();
    int rc = real_fallocate(fd, mode, offset, len);
    int saved = errno;
    /* Only a plain allocation changes the size; punching holes and the like are not seen. */
    if (rc == 0 && mode == 0)
        sized(fd, PL_EXTEND, (uint64_t)(offset + len));
    errno = saved;
    return rc;
}

PL_EXPORT int fallocate64(int fd, int mode, off_t offset, off_t len)
{
    return fallocate(fd, mode, offset, len);
}

PL_EXPORT int posix_fallocate(int fd, off_t offset, off_t len)
{
    if (!real_posix_fallocate)
        resolve();
    int rc = real_posix_fallocate(fd, offset, len);
    if (rc == 0)
        sized(fd, PL_EXTEND, (uint64_t)(offset + len));
    return rc;
}

PL_EXPORT int posix_fallocate64(int fd, off_t offset, off_t len)
{
    return posix_fallocate(fd, offset, len);
}
