/*
 * Power-loss images (plimage.h): the data folder as the disk could hold it after the power
 * went, from the folder at the daemon's start, the live folder after it was killed, and the
 * journal libplshim.so wrote meanwhile (pljournal.h).
 *
 * A tracked file starts as it was at the start (or absent) and the journal's writes and size
 * changes are applied to it in journal order: a durable one always (written through an
 * O_SYNC/O_DSYNC descriptor, or followed by a completed fsync/fdatasync of its file that
 * began after it), the others as the mode says. Dropping any subset of the writes after a
 * file's last sync models a disk that wrote them back in any order, or not at all. A file made
 * after the start exists only when a sync of it completed or one of its writes or size
 * changes was kept (its name is taken as durable with its data: what ext4 and XFS do on
 * fsync; a missing sync of the folder is not modelled).
 *
 * Built with PLIMAGE_MAIN it is also a tool:
 *   plimage JOURNAL BASE LIVE OUT none|random|torn SEED
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "plimage.h"
#include "pljournal.h"

#define SECTOR 512u

const char *pl_mode_name(pl_mode mode)
{
    switch (mode) {
    case PL_MODE_NONE:
        return "none";
    case PL_MODE_RANDOM:
        return "random";
    case PL_MODE_TORN:
        return "torn";
    }
    return NULL;
}

int pl_mode_parse(const char *name, pl_mode *mode)
{
    for (int m = PL_MODE_NONE; m <= PL_MODE_TORN; m++)
        if (strcmp(name, pl_mode_name((pl_mode)m)) == 0) {
            *mode = (pl_mode)m;
            return 0;
        }
    return -1;
}

static int fail(char *why, size_t why_size, const char *what, const char *path, int err)
{
    snprintf(why, why_size, "%s %s: %s", what, path, strerror(err));
    return -1;
}

/* ---- files --------------------------------------------------------------------------------- */

static int read_whole(const char *path, uint8_t **out, size_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf != NULL) {
        if (n == cap) {
            uint8_t *more = realloc(buf, cap * 2);
            if (more == NULL)
                break;
            buf = more, cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int err = errno;
            close(fd);
            if (r < 0) {
                free(buf);
                errno = err;
                return -1;
            }
            *out = buf;
            *size = n;
            return 0;
        }
        n += (size_t)r;
    }
    free(buf);
    close(fd);
    errno = ENOMEM;
    return -1;
}

static int write_whole(const char *path, const uint8_t *data, size_t size, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 07777);
    if (fd < 0)
        return -1;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int err = w < 0 ? errno : EIO;
            close(fd);
            errno = err;
            return -1;
        }
        done += (size_t)w;
    }
    fchmod(fd, mode & 07777);
    return close(fd);
}

int pl_copy_tree(const char *from, const char *to, char *why, size_t why_size)
{
    struct stat st;
    if (lstat(from, &st) != 0)
        return fail(why, why_size, "cannot stat", from, errno);
    if (mkdir(to, st.st_mode & 07777) != 0)
        return fail(why, why_size, "cannot make", to, errno);
    DIR *d = opendir(from);
    if (d == NULL)
        return fail(why, why_size, "cannot open", from, errno);
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        char src[PATH_MAX], dst[PATH_MAX];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(src, sizeof(src), "%s/%s", from, e->d_name);
        snprintf(dst, sizeof(dst), "%s/%s", to, e->d_name);
        if (lstat(src, &st) != 0) {
            if (errno == ENOENT)
                continue; /* removed meanwhile */
            rc = fail(why, why_size, "cannot stat", src, errno);
        } else if (S_ISDIR(st.st_mode)) {
            rc = pl_copy_tree(src, dst, why, why_size);
        } else if (S_ISREG(st.st_mode)) {
            uint8_t *data = NULL;
            size_t size = 0;
            if (read_whole(src, &data, &size) != 0)
                rc = errno == ENOENT ? 0 : fail(why, why_size, "cannot read", src, errno);
            else if (write_whole(dst, data, size, st.st_mode) != 0)
                rc = fail(why, why_size, "cannot write", dst, errno);
            free(data);
        } else if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlink(src, target, sizeof(target) - 1);
            if (n >= 0) {
                target[n] = '\0';
                if (symlink(target, dst) != 0)
                    rc = fail(why, why_size, "cannot link", dst, errno);
            }
        }
        /* sockets and the like are not data */
    }
    closedir(d);
    return rc;
}

/* ---- the journal --------------------------------------------------------------------------- */

typedef struct {
    pl_record h; /* a copy: records are not aligned in the journal */
    const uint8_t *data;
} rec;

typedef struct {
    char name[PL_NAME_MAX + 1];
    bool named;        /* in the journal */
    bool in_base;      /* a regular file directly in base */
    bool synced;       /* a sync of it completed */
    size_t last_cover; /* records before this index are covered by a completed sync */
    uint8_t *data;
    size_t size, cap;
    bool exists;
    mode_t mode;
} file;

typedef struct {
    file files[PL_FILES_MAX * 2];
    int count;
} files;

static bool tracked_name(const char *name)
{
    return strcmp(name, "lock.mdb") != 0 && strcmp(name, "budgetd.lock") != 0;
}

static file *find_file(files *fs, const char *name, bool add)
{
    for (int i = 0; i < fs->count; i++)
        if (strcmp(fs->files[i].name, name) == 0)
            return &fs->files[i];
    if (!add || fs->count == (int)(sizeof(fs->files) / sizeof(fs->files[0])))
        return NULL;
    file *f = &fs->files[fs->count++];
    memset(f, 0, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%s", name);
    return f;
}

static size_t parse(const uint8_t *j, size_t size, rec **out)
{
    size_t n = 0, cap = 0, at = 0;
    rec *recs = NULL;
    while (size - at >= sizeof(pl_record)) {
        pl_record copy;
        const pl_record *h = &copy;
        memcpy(&copy, j + at, sizeof(copy));
        if (h->magic != PL_MAGIC || size - at - sizeof(*h) < h->len)
            break; /* the end, cut short by the kill */
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            rec *more = realloc(recs, cap * sizeof(*recs));
            if (more == NULL)
                break;
            recs = more;
        }
        recs[n].h = copy;
        recs[n].data = j + at + sizeof(*h);
        n++;
        at += sizeof(*h) + h->len;
    }
    *out = recs;
    return n;
}

/* A seed spread over all 64 bits (and never 0), so that small seeds differ from the start. */
static uint64_t splitmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return x ? x : 1;
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static bool grow(file *f, size_t size)
{
    if (size > f->cap) {
        size_t cap = f->cap ? f->cap : 4096;
        while (cap < size)
            cap *= 2;
        uint8_t *more = realloc(f->data, cap);
        if (more == NULL)
            return false;
        f->data = more, f->cap = cap;
    }
    if (size > f->size)
        memset(f->data + f->size, 0, size - f->size);
    return true;
}

/* ---- the image ----------------------------------------------------------------------------- */

int pl_image_make(const char *journal, const char *base, const char *live, const char *out,
                  pl_mode mode, uint64_t seed, pl_image_stats *stats, char *why, size_t why_size)
{
    uint8_t *j = NULL;
    size_t jsize = 0;
    rec *recs = NULL;
    files *fs = calloc(1, sizeof(*fs));
    file *by_id[PL_FILES_MAX] = {0};
    file **of = NULL;
    uint64_t rng = splitmix(seed);
    int rc = -1;
    pl_image_stats st = {0};

    if (fs == NULL) {
        snprintf(why, why_size, "out of memory");
        return -1;
    }
    if (read_whole(journal, &j, &jsize) != 0) {
        if (errno != ENOENT) {
            fail(why, why_size, "cannot read", journal, errno);
            goto done;
        }
        j = NULL, jsize = 0; /* nothing was written */
    }
    size_t n = parse(j, jsize, &recs);
    st.records = n;

    /* The tracked files: those of base, and those the journal names. */
    DIR *d = opendir(base);
    if (d == NULL) {
        fail(why, why_size, "cannot open", base, errno);
        goto done;
    }
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char path[PATH_MAX];
        struct stat sb;
        snprintf(path, sizeof(path), "%s/%s", base, e->d_name);
        if (!tracked_name(e->d_name) || lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        file *f = find_file(fs, e->d_name, true);
        if (f == NULL || read_whole(path, &f->data, &f->size) != 0) {
            closedir(d);
            fail(why, why_size, "cannot read", path, f ? errno : ENOMEM);
            goto done;
        }
        f->cap = f->size;
        f->in_base = f->exists = true;
        f->mode = sb.st_mode;
    }
    closedir(d);

    /* Which file each record is of: a name binds its id for the records after it (a journal
     * may hold the runs of several processes, one after another). A sync has completed when
     * an end record follows its begin record (the latest begin of that file and seq). */
    of = calloc(n ? n : 1, sizeof(*of));
    bool *completed = calloc(n ? n : 1, sizeof(bool));
    if (of == NULL || completed == NULL) {
        free(completed);
        snprintf(why, why_size, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const pl_record *h = &recs[i].h;
        if (h->file >= PL_FILES_MAX)
            continue;
        if (h->type == PL_NAME) {
            char name[PL_NAME_MAX + 1];
            size_t len = h->len < PL_NAME_MAX ? h->len : PL_NAME_MAX;
            memcpy(name, recs[i].data, len);
            name[len] = '\0';
            by_id[h->file] = find_file(fs, name, true);
            if (by_id[h->file] != NULL)
                by_id[h->file]->named = true;
            continue;
        }
        of[i] = by_id[h->file];
        if (of[i] == NULL)
            continue;
        if (h->type == PL_SYNC_END) {
            /* its begin: the latest one before it of the same file and seq */
            for (size_t b = i; b-- > 0;)
                if (recs[b].h.type == PL_SYNC_BEGIN && recs[b].h.seq == h->seq && of[b] == of[i]) {
                    completed[b] = true;
                    break;
                }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (completed[i]) {
            of[i]->last_cover = i;
            of[i]->synced = true;
            st.syncs++;
        }
    }
    free(completed);

    /* The writes, in journal order. */
    for (size_t i = 0; i < n; i++) {
        const pl_record *h = &recs[i].h;
        file *f = of[i];
        if ((h->type != PL_WRITE && h->type != PL_SIZE && h->type != PL_EXTEND) || f == NULL)
            continue;
        uint64_t len = h->type == PL_WRITE ? h->len : 0;
        st.writes++;
        bool durable = (h->flags & PL_DURABLE) || (f->synced && i < f->last_cover);
        if (durable) {
            st.durable++;
        } else if (mode == PL_MODE_NONE || (next_rand(&rng) >> 63) == 0) {
            st.dropped++;
            st.bytes_dropped += len;
            continue;
        } else {
            st.kept++;
            uint64_t first = (h->offset / SECTOR + 1) * SECTOR, end = h->offset + len;
            if (mode == PL_MODE_TORN && h->type == PL_WRITE && first < end &&
                (next_rand(&rng) >> 63) == 0) {
                uint64_t cuts = (end - 1 - first) / SECTOR + 1; /* boundaries inside */
                uint64_t cut = first + (next_rand(&rng) % cuts) * SECTOR;
                st.torn++;
                st.bytes_dropped += end - cut;
                len = cut - h->offset;
            }
        }
        f->exists = true;
        if (h->type == PL_SIZE) {
            if (!grow(f, h->offset))
                goto oom;
            f->size = h->offset;
        } else if (h->type == PL_EXTEND) {
            if (h->offset > f->size) {
                if (!grow(f, h->offset))
                    goto oom;
                f->size = h->offset;
            }
        } else {
            if (!grow(f, h->offset + len))
                goto oom;
            memcpy(f->data + h->offset, recs[i].data, len);
            if (h->offset + len > f->size)
                f->size = h->offset + len;
        }
    }

    /* Everything but the tracked files from the live folder, then the tracked files. */
    if (mkdir(out, 0700) != 0) {
        fail(why, why_size, "cannot make", out, errno);
        goto done;
    }
    d = opendir(live);
    if (d == NULL) {
        fail(why, why_size, "cannot open", live, errno);
        goto done;
    }
    struct stat ls;
    if (stat(live, &ls) == 0)
        chmod(out, ls.st_mode & 07777);
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char src[PATH_MAX], dst[PATH_MAX];
        struct stat sb;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(src, sizeof(src), "%s/%s", live, e->d_name);
        snprintf(dst, sizeof(dst), "%s/%s", out, e->d_name);
        if (lstat(src, &sb) != 0)
            continue;
        file *f =
            S_ISREG(sb.st_mode) && tracked_name(e->d_name) ? find_file(fs, e->d_name, false) : NULL;
        if (f != NULL) {
            if (!f->exists && !f->synced)
                continue; /* made after the start, nothing of it durable or kept */
            if (write_whole(dst, f->data, f->size, f->in_base ? f->mode : sb.st_mode) != 0) {
                closedir(d);
                fail(why, why_size, "cannot write", dst, errno);
                goto done;
            }
            st.files++;
        } else if (S_ISDIR(sb.st_mode)) {
            if (pl_copy_tree(src, dst, why, why_size) != 0) {
                closedir(d);
                goto done;
            }
        } else if (S_ISREG(sb.st_mode)) {
            uint8_t *data = NULL;
            size_t size = 0;
            int bad =
                read_whole(src, &data, &size) != 0 || write_whole(dst, data, size, sb.st_mode);
            free(data);
            if (bad) {
                closedir(d);
                fail(why, why_size, "cannot copy", src, errno);
                goto done;
            }
        }
    }
    closedir(d);
    rc = 0;
    goto done;
oom:
    snprintf(why, why_size, "out of memory");
done:
    free(of);
    for (int i = 0; i < fs->count; i++)
        free(fs->files[i].data);
    free(fs);
    free(recs);
    free(j);
    if (stats != NULL)
        *stats = st;
    return rc;
}

#ifdef PLIMAGE_MAIN
int main(int argc, char **argv)
{
    pl_mode mode;
    pl_image_stats st;
    char why[512];
    if (argc != 7 || pl_mode_parse(argv[5], &mode) != 0) {
        fprintf(stderr, "usage: plimage JOURNAL BASE LIVE OUT none|random|torn SEED\n");
        return 2;
    }
    uint64_t seed = strtoull(argv[6], NULL, 10);
    if (pl_image_make(argv[1], argv[2], argv[3], argv[4], mode, seed, &st, why, sizeof(why)) != 0) {
        fprintf(stderr, "plimage: %s\n", why);
        return 1;
    }
    printf("plimage: %" PRIu64 " records, %" PRIu64 " writes (%" PRIu64 " durable, %" PRIu64
           " kept, %" PRIu64 " dropped, %" PRIu64 " torn), %" PRIu64 " syncs, %" PRIu64 " files\n",
           st.records, st.writes, st.durable, st.kept, st.dropped, st.torn, st.syncs, st.files);
    return 0;
}
#endif
