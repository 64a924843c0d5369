/* Snapshots (snapshot.h): a ledger's state saved beside the events, authenticated, bounded. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "budget/errors.h"
#include "event.h"
#include "fileio.h"
#include "replay.h"
#include "snapmac.h"
#include "snapshot.h"

/* Version 2: a Poly1305 tag under a key of the file's own (below); version 1's keyed BLAKE2b
 * over the whole file took two thirds of a restore, and such a file is now ignored. */
static const uint8_t snapshot_magic[8] = {'B', 'U', 'D', 'S', 'N', 'A', 'P', 2};

/* Bytes written at once through a snapshot's buffer. */
#define WRITE_BUFFER_BYTES (1u << 20)

_Static_assert(crypto_generichash_KEYBYTES == SNAPSHOT_KEY_BYTES, "BLAKE2b key");
_Static_assert(crypto_generichash_BYTES_MIN <= SNAPMAC_KEY_BYTES &&
                   SNAPMAC_KEY_BYTES <= crypto_generichash_BYTES_MAX,
               "a Poly1305 key is a BLAKE2b output");
_Static_assert(SNAPSHOT_MAC_BYTES == SNAPMAC_BYTES, "Poly1305 tag");

/*
 * A file's tag. Poly1305 runs at about four times BLAKE2b's speed, but a Poly1305 key must
 * authenticate one message only. So each file's key is the keyed BLAKE2b of its header, which
 * holds SNAPSHOT_NONCE_BYTES random bytes drawn for that write: two files never share a key, and
 * a header changed in any byte gives another key, under which the tag does not verify. The tag
 * covers header and body.
 */
static void mac_begin(snapmac *mac, const uint8_t key[SNAPSHOT_KEY_BYTES],
                      const uint8_t header[SNAPSHOT_HEADER_BYTES])
{
    uint8_t one[SNAPMAC_KEY_BYTES];
    crypto_generichash(one, sizeof(one), header, SNAPSHOT_HEADER_BYTES, key, SNAPSHOT_KEY_BYTES);
    snapmac_init(mac, one);
    sodium_memzero(one, sizeof(one));
}

static int failed(char *why, size_t why_size, const char *what, const char *path, int err)
{
    if (err != 0)
        snprintf(why, why_size, "%s %s: %s", what, path, strerror(err));
    else
        snprintf(why, why_size, "%s %s", what, path);
    return BUDGET_EUNAVAILABLE;
}

/* ---- the key ---------------------------------------------------------------------------- */

/* Reads the key: 0, 1 when there is none yet, or an errno (-1 for a file of another size). */
static int key_read(const char *path, uint8_t key[SNAPSHOT_KEY_BYTES])
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 1 : errno;
    struct stat st;
    int err = 0;
    if (fstat(fd, &st) != 0)
        err = errno;
    else if (!S_ISREG(st.st_mode) || st.st_size != SNAPSHOT_KEY_BYTES ||
             read(fd, key, SNAPSHOT_KEY_BYTES) != SNAPSHOT_KEY_BYTES)
        err = -1;
    close(fd);
    return err;
}

/* A new random key in `path`, synced with its folder: 0, 1 when another made it first, or an
 * errno. */
static int key_create(const char *dir, const char *path, uint8_t key[SNAPSHOT_KEY_BYTES])
{
    randombytes_buf(key, SNAPSHOT_KEY_BYTES);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == EEXIST ? 1 : errno;
    int err = fileio_write_all(fd, key, SNAPSHOT_KEY_BYTES);
    if (err == 0 && fsync(fd) != 0)
        err = errno;
    close(fd);
    if (err == 0)
        err = fileio_sync_dir(dir);
    if (err != 0)
        unlink(path);
    return err;
}

/* True when `name` is <digits>.snap (a seq of at most 20 digits, no leading zero), into *seq. */
static bool snapshot_name(const char *name, uint64_t *seq)
{
    size_t digits = strspn(name, "0123456789");
    if (digits == 0 || digits > 20 || (name[0] == '0' && digits > 1) ||
        strcmp(name + digits, ".snap") != 0)
        return false;
    errno = 0;
    unsigned long long n = strtoull(name, NULL, 10);
    if (errno != 0)
        return false;
    *seq = n;
    return true;
}

int snapshots_open(snapshots *s, const char *data, uint32_t keep, char *why, size_t why_size)
{
    char path[PATH_MAX + 32];
    memset(s, 0, sizeof(*s));
    s->keep = keep == 0 ? 1 : keep;
    if (sodium_init() < 0)
        return failed(why, why_size, "cannot start libsodium for", data, 0);
    int n = snprintf(s->dir, sizeof(s->dir), "%s/snapshots", data);
    if (n < 0 || (size_t)n >= sizeof(s->dir) - 32)
        return failed(why, why_size, "the path is too long:", data, 0);
    if (mkdir(s->dir, 0700) != 0 && errno != EEXIST)
        return failed(why, why_size, "cannot make", s->dir, errno);
    struct stat st;
    if (lstat(s->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return failed(why, why_size, "not a folder:", s->dir, 0);
    snprintf(path, sizeof(path), "%s/key", s->dir);
    int err = key_read(path, s->key);
    if (err == 1) {
        err = key_create(s->dir, path, s->key);
        if (err == 1)
            err = key_read(path, s->key);
    }
    if (err != 0) {
        sodium_memzero(s->key, sizeof(s->key));
        return failed(why, why_size, "cannot use the snapshot key", path, err > 0 ? err : 0);
    }
    /* What a write cut short left behind: <seq>.snap.tmp. */
    DIR *d = opendir(s->dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            size_t len = strlen(e->d_name);
            if (len > 9 && strcmp(e->d_name + len - 9, ".snap.tmp") == 0)
                unlinkat(dirfd(d), e->d_name, 0);
        }
        closedir(d);
    }
    return 0;
}

/* ---- writing ---------------------------------------------------------------------------- */

typedef struct {
    int fd;
    int err;
    snapmac mac;
    uint8_t *buffer;
    size_t used;
    uint64_t bytes;
} file_sink;

static int sink_flush(file_sink *f)
{
    if (f->err == 0 && f->used > 0)
        f->err = fileio_write_all(f->fd, f->buffer, f->used);
    f->used = 0;
    return f->err == 0 ? 0 : -1;
}

static int sink_write(void *ctx, const void *bytes, size_t n)
{
    file_sink *f = ctx;
    snapmac_update(&f->mac, bytes, n);
    f->bytes += n;
    const uint8_t *p = bytes;
    while (n > 0 && f->err == 0) {
        size_t room = WRITE_BUFFER_BYTES - f->used, take = n < room ? n : room;
        memcpy(f->buffer + f->used, p, take);
        f->used += take;
        p += take;
        n -= take;
        if (f->used == WRITE_BUFFER_BYTES)
            sink_flush(f);
    }
    return f->err == 0 ? 0 : -1;
}

static int count_write(void *ctx, const void *bytes, size_t n)
{
    (void)bytes;
    *(uint64_t *)ctx += n;
    return 0;
}

/* The path of the snapshot at `seq`. */
#define SNAP_PATH_BYTES (PATH_MAX + 32)
static void snap_path(const snapshots *s, uint64_t seq, char path[SNAP_PATH_BYTES])
{
    snprintf(path, SNAP_PATH_BYTES, "%s/%" PRIu64 ".snap", s->dir, seq);
}

/* Keeps the newest s->keep snapshots. */
static void prune(const snapshots *s)
{
    uint64_t *seqs = malloc(SNAPSHOT_LIST_MAX * sizeof(*seqs));
    if (seqs == NULL)
        return;
    size_t n = snapshot_list(s, seqs, SNAPSHOT_LIST_MAX);
    for (size_t i = s->keep; i < n; i++) {
        char path[SNAP_PATH_BYTES];
        snap_path(s, seqs[i], path);
        unlink(path);
    }
    free(seqs);
}

/* Writes header, body and keyed hash to `fd`: 0 or an errno. */
static int write_file(int fd, const snapshots *s, const ledger *l,
                      const uint8_t hash[BUDGET_HASH_BYTES])
{
    uint64_t body = 0, seq = ledger_last_seq(l);
    snap_sink counter = {count_write, &body};
    if (ledger_save(l, &counter) != 0)
        return EIO;
    file_sink f = {.fd = fd, .buffer = malloc(WRITE_BUFFER_BYTES)};
    if (f.buffer == NULL)
        return ENOMEM;
    uint8_t header[SNAPSHOT_HEADER_BYTES];
    memcpy(header, snapshot_magic, 8);
    memcpy(header + 8, &seq, 8);
    memcpy(header + 16, hash, BUDGET_HASH_BYTES);
    memcpy(header + 48, &body, 8);
    randombytes_buf(header + 56, SNAPSHOT_NONCE_BYTES);
    mac_begin(&f.mac, s->key, header);
    snap_sink sink = {sink_write, &f};
    uint8_t mac[SNAPSHOT_MAC_BYTES];
    if (snap_put(&sink, header, sizeof(header)) == 0 && ledger_save(l, &sink) == 0 &&
        f.bytes == SNAPSHOT_HEADER_BYTES + body && sink_flush(&f) == 0) {
        f.err = snapmac_final(&f.mac, mac) == 0 ? fileio_write_all(fd, mac, sizeof(mac)) : EIO;
    } else {
        snapmac_abandon(&f.mac);
        if (f.err == 0)
            f.err = EIO; /* the state changed under the write: a caller's bug */
    }
    free(f.buffer);
    return f.err;
}

int snapshot_write(const snapshots *s, const ledger *l, const uint8_t hash[BUDGET_HASH_BYTES],
                   char *why, size_t why_size)
{
    char path[SNAP_PATH_BYTES], tmp[SNAP_PATH_BYTES + 8];
    uint64_t seq = ledger_last_seq(l);
    snap_path(s, seq, path);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return failed(why, why_size, "cannot create", tmp, errno);
    int err = write_file(fd, s, l, hash);
    if (err == 0 && fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && err == 0)
        err = errno;
    if (err == 0 && rename(tmp, path) != 0)
        err = errno;
    if (err != 0) {
        unlink(tmp);
        return failed(why, why_size, "cannot write", path, err);
    }
    err = fileio_sync_dir(s->dir);
    if (err != 0)
        return failed(why, why_size, "cannot sync", s->dir, err);
    prune(s);
    return 0;
}

/* ---- reading ---------------------------------------------------------------------------- */

typedef struct {
    FILE *f;
    snapmac mac;
} file_source;

static int source_read(void *ctx, void *bytes, size_t n)
{
    file_source *r = ctx;
    if (fread(bytes, 1, n, r->f) != n)
        return -1;
    snapmac_update(&r->mac, bytes, n);
    return 0;
}

static ledger *not_snapshot(char *why, size_t why_size, const char *what)
{
    snprintf(why, why_size, "%s", what);
    return NULL;
}

ledger *snapshot_read_stream(FILE *f, uint64_t size, const uint8_t key[SNAPSHOT_KEY_BYTES],
                             uint64_t *seq, uint8_t hash[BUDGET_HASH_BYTES], char *why,
                             size_t why_size)
{
    uint8_t header[SNAPSHOT_HEADER_BYTES], mac[SNAPSHOT_MAC_BYTES], want[SNAPSHOT_MAC_BYTES];
    uint64_t body;
    file_source r = {.f = f};

    if (size < SNAPSHOT_HEADER_BYTES + SNAPSHOT_MAC_BYTES)
        return not_snapshot(why, why_size, "too short");
    if (fread(header, 1, sizeof(header), f) != sizeof(header))
        return not_snapshot(why, why_size, "cannot be read");
    memcpy(seq, header + 8, 8);
    memcpy(hash, header + 16, BUDGET_HASH_BYTES);
    memcpy(&body, header + 48, 8);
    if (memcmp(header, snapshot_magic, 8) != 0)
        return not_snapshot(why, why_size, "not a snapshot of this version");
    if (body != size - SNAPSHOT_HEADER_BYTES - SNAPSHOT_MAC_BYTES)
        return not_snapshot(why, why_size, "its length is not the file's");
    mac_begin(&r.mac, key, header);
    snapmac_update(&r.mac, header, sizeof(header));
    snap_source source = {source_read, &r, body};
    ledger *l = ledger_load(&source);
    if (l == NULL) {
        snapmac_abandon(&r.mac);
        return not_snapshot(why, why_size, "its state cannot be read (damaged, or another build)");
    }
    if (snapmac_final(&r.mac, want) != 0) {
        ledger_free(l);
        return not_snapshot(why, why_size, "its keyed hash cannot be computed now");
    }
    if (fread(mac, 1, sizeof(mac), f) != sizeof(mac) ||
        sodium_memcmp(mac, want, sizeof(mac)) != 0) {
        ledger_free(l);
        return not_snapshot(why, why_size, "its keyed hash does not match: damaged or not ours");
    }
    if (ledger_last_seq(l) != *seq || ledger_load_finish(l) != 0) {
        ledger_free(l);
        return not_snapshot(why, why_size, "its state is not at its seq, or out of memory");
    }
    return l;
}

/* Reads the snapshot at `seq` in the folder. */
static ledger *read_one(const snapshots *s, uint64_t seq, uint8_t hash[BUDGET_HASH_BYTES],
                        char *why, size_t why_size)
{
    char path[SNAP_PATH_BYTES];
    snap_path(s, seq, path);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return not_snapshot(why, why_size, "cannot be opened");
    struct stat st;
    FILE *f = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (f = fdopen(fd, "rb")) == NULL) {
        close(fd);
        return not_snapshot(why, why_size, "not a file that can be read");
    }
    uint64_t at;
    ledger *l = snapshot_read_stream(f, (uint64_t)st.st_size, s->key, &at, hash, why, why_size);
    fclose(f);
    if (l != NULL && at != seq) {
        ledger_free(l);
        return not_snapshot(why, why_size, "its name is not its seq");
    }
    return l;
}

static int by_seq_down(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

size_t snapshot_list(const snapshots *s, uint64_t *seqs, size_t max)
{
    DIR *d = opendir(s->dir);
    if (d == NULL)
        return 0;
    size_t n = 0;
    struct dirent *e;
    uint64_t seq;
    while ((e = readdir(d)) != NULL) {
        if (!snapshot_name(e->d_name, &seq))
            continue;
        if (n < max) {
            seqs[n++] = seq;
        } else if (max > 0) {
            /* Full: keep the newest, replacing the oldest so far. */
            size_t oldest = 0;
            for (size_t i = 1; i < n; i++)
                if (seqs[i] < seqs[oldest])
                    oldest = i;
            if (seq > seqs[oldest])
                seqs[oldest] = seq;
        }
    }
    closedir(d);
    qsort(seqs, n, sizeof(*seqs), by_seq_down);
    return n;
}

/* True when event `seq` of the log has stored hash `hash`. */
static bool log_has(store *st, uint64_t seq, const uint8_t hash[BUDGET_HASH_BYTES])
{
    uint8_t stored[BUDGET_HASH_BYTES];
    return replay_stored_hash(st, seq, stored) == 0 && memcmp(stored, hash, BUDGET_HASH_BYTES) == 0;
}

/* True when the snapshot at `seq` begins with a state that a view of what was decided by
 * `decided_by` may start from (ledger_peek_decided_base): a hint from its first bytes, unchecked,
 * so that the snapshots it passes over are not read whole. */
static bool may_start_decided(const snapshots *s, uint64_t seq, int32_t decided_by)
{
    uint8_t head[SNAPSHOT_HEADER_BYTES + 512];
    size_t n = SNAPSHOT_HEADER_BYTES + ledger_peek_bytes();
    char path[SNAP_PATH_BYTES];
    snap_path(s, seq, path);
    if (n > sizeof(head))
        return true; /* cannot tell from here: read it whole */
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t got = pread(fd, head, n, 0);
    close(fd);
    return got == (ssize_t)n && ledger_peek_decided_base(head + SNAPSHOT_HEADER_BYTES,
                                                         n - SNAPSHOT_HEADER_BYTES, decided_by);
}

/* snapshot_restore; with `decided_by` not 0, only a state such a view may start from. */
static ledger *restore_newest(const snapshots *s, store *st, uint64_t upto, int32_t decided_by,
                              uint64_t *seq, uint8_t hash[BUDGET_HASH_BYTES], char *why,
                              size_t why_size)
{
    uint64_t *seqs = malloc(SNAPSHOT_LIST_MAX * sizeof(*seqs));
    ledger *l = NULL;
    char one[160];
    why[0] = '\0';
    if (seqs == NULL)
        return NULL;
    size_t n = snapshot_list(s, seqs, SNAPSHOT_LIST_MAX);
    for (size_t i = 0; i < n && l == NULL; i++) {
        if (seqs[i] > upto || seqs[i] == 0 ||
            (decided_by != 0 && !may_start_decided(s, seqs[i], decided_by)))
            continue;
        l = read_one(s, seqs[i], hash, one, sizeof(one));
        if (l != NULL && !log_has(st, seqs[i], hash)) {
            ledger_free(l);
            l = NULL;
            snprintf(one, sizeof(one), "its seq and hash are not the log's");
        } else if (l != NULL && decided_by != 0 && !ledger_decided_base(l, decided_by)) {
            ledger_free(l);
            l = NULL;
            snprintf(one, sizeof(one), "its state is not what was decided by that day");
        }
        if (l == NULL)
            snprintf(why, why_size, "snapshot %" PRIu64 " ignored: %s", seqs[i], one);
        else
            *seq = seqs[i];
    }
    free(seqs);
    return l;
}

ledger *snapshot_restore(const snapshots *s, store *st, uint64_t upto, uint64_t *seq,
                         uint8_t hash[BUDGET_HASH_BYTES], char *why, size_t why_size)
{
    return restore_newest(s, st, upto, 0, seq, hash, why, why_size);
}

ledger *snapshot_restore_decided(const snapshots *s, store *st, uint64_t upto, int32_t decided_by,
                                 uint64_t *seq, uint8_t hash[BUDGET_HASH_BYTES], char *why,
                                 size_t why_size)
{
    if (decided_by == 0) {
        snprintf(why, why_size, "no day to decide by");
        return NULL;
    }
    return restore_newest(s, st, upto, decided_by, seq, hash, why, why_size);
}

int snapshot_state(const snapshots *s, store *st, uint64_t upto, int32_t decided_by, ledger **out,
                   uint64_t *from, replay_result *res)
{
    uint8_t at_hash[BUDGET_HASH_BYTES];
    char ignored[160];
    ledger *l = NULL;
    replay_links links = {0};
    *from = 0;
    /* The links after the snapshot most likely to be used are hashed while it is read. */
    uint64_t likely = snapshot_newest(s, upto, decided_by);
    if (likely != 0 && likely < upto && replay_links_start(&links, st, likely, upto) != 0)
        memset(&links, 0, sizeof(links));
    if (s != NULL)
        l = decided_by != 0
                ? snapshot_restore_decided(s, st, upto, decided_by, from, at_hash, ignored,
                                           sizeof(ignored))
                : snapshot_restore(s, st, upto, from, at_hash, ignored, sizeof(ignored));
    if (l == NULL || *from != likely)
        replay_links_cancel(&links);
    if (l != NULL) {
        int rc;
        if (links.job != NULL)
            rc = replay_log_beside(st, l, *from, upto, decided_by, &links, res);
        else
            rc = decided_by != 0 ? replay_decided_from(st, l, *from, at_hash, upto, decided_by, res)
                                 : replay_log_from(st, l, *from, at_hash, upto, false, res);
        if (rc == 0) {
            *out = l;
            return 0;
        }
        ledger_free(l);
    }
    *from = 0;
    l = ledger_new();
    if (l == NULL) {
        snprintf(res->why, sizeof(res->why), "out of memory");
        return BUDGET_EUNAVAILABLE;
    }
    int rc = decided_by != 0 ? replay_decided(st, l, upto, decided_by, res)
                             : replay_log(st, l, upto, res);
    if (rc != 0) {
        ledger_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

ledger *snapshot_rebuild(const snapshots *s, store *st, uint64_t upto, uint64_t *from,
                         uint8_t hash[BUDGET_HASH_BYTES], char *why, size_t why_size)
{
    replay_result res;
    ledger *l = NULL;
    memset(&res, 0, sizeof(res));
    if (snapshot_state(s, st, upto, 0, &l, from, &res) != 0) {
        snprintf(why, why_size, "the log cannot be replayed to event %" PRIu64 ": %s", upto,
                 res.why);
        return NULL;
    }
    if (res.head != upto) {
        snprintf(why, why_size, "the log ends at event %" PRIu64 ", before %" PRIu64, res.head,
                 upto);
        ledger_free(l);
        return NULL;
    }
    memcpy(hash, res.hash, BUDGET_HASH_BYTES);
    return l;
}

uint64_t snapshot_newest(const snapshots *s, uint64_t upto, int32_t decided_by)
{
    if (s == NULL)
        return 0;
    uint64_t *seqs = malloc(SNAPSHOT_LIST_MAX * sizeof(*seqs)), found = 0;
    if (seqs == NULL)
        return 0;
    size_t n = snapshot_list(s, seqs, SNAPSHOT_LIST_MAX);
    for (size_t i = 0; i < n && found == 0; i++) /* newest first */
        if (seqs[i] <= upto && (decided_by == 0 || may_start_decided(s, seqs[i], decided_by)))
            found = seqs[i];
    free(seqs);
    return found;
}
