/*
 * The write-ahead file (wal.h). Every number in the file is little-endian.
 *
 * Header slot (at 0 and at WAL_SLOT_BYTES):
 *   0  magic "budgetw1"          8
 *   8  counter                   8
 *  16  txnid                     8
 *  24  seq                       8
 *  32  lsn                       8
 *  40  area bytes                8
 *  48  LMDB page bytes           4
 *  52  clean (0 or 1)            4
 *  56  meta page bytes           WAL_META_BYTES
 *  56 + WAL_META_BYTES: CRC-32C of everything before it, 4
 *
 * Record (at WAL_AREA_START + lsn % area, 8-byte aligned):
 *   0  magic WAL_RECORD_MAGIC    4
 *   4  bytes (whole record)      4
 *   8  lsn                       8
 *  16  first seq                 8
 *  24  items n                   4
 *  28  CRC-32C of the record with these 4 bytes zero
 *  32  n items: size 4, id length 2, zero 2, the id, the event's bytes
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "budget/errors.h"
#include "budget/limits.h"
#include "budget/protocol.h"
#include "fileio.h"
#include "wal.h"

#define WAL_HEADER_MAGIC "budgetw1"
#define WAL_RECORD_MAGIC 0x31525742u /* "BWR1" */
#define WAL_HEADER_CRC_AT (56u + WAL_META_BYTES)
/* The smallest area a file may have, and the most items one record may hold. */
#define WAL_AREA_BYTES_MIN 4096u
#define WAL_RECORD_ITEMS_MAX (1u << 20)

struct wal {
    int fd;
    uint64_t area;
    uint64_t slot_next; /* the slot the next checkpoint goes to */
    uint64_t counter;   /* the newest checkpoint's */
    bool read_only;
    uint8_t *buf; /* the writer's record buffer */
    size_t buf_cap;
};

/* ---- CRC-32C ---- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_hw;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[i] = c;
    }
#if defined(__x86_64__) && defined(__GNUC__)
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t crc, const uint8_t *p,
                                                            size_t n)
{
    uint64_t c = crc;
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
    }
    uint32_t c32 = (uint32_t)c;
    for (; n > 0; n--, p++)
        c32 = __builtin_ia32_crc32qi(c32, *p);
    return c32;
}
#endif

uint32_t wal_crc32c(uint32_t crc, const void *bytes, size_t size)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = bytes;
    crc = ~crc;
#if defined(__x86_64__) && defined(__GNUC__)
    if (crc_hw)
        return ~crc_sse42(crc, p, size);
#endif
    for (size_t i = 0; i < size; i++)
        crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- little-endian fields ---- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static size_t round8(size_t n)
{
    return (n + 7) & ~(size_t)7;
}

/* ---- plain I/O ---- */

static int sync_fd(int fd)
{
    return fdatasync(fd) == 0 ? 0 : errno;
}

/* ---- header slots ---- */

static void header_encode(uint8_t slot[WAL_SLOT_BYTES], const wal_checkpoint *ck, uint64_t area)
{
    memset(slot, 0, WAL_SLOT_BYTES);
    memcpy(slot, WAL_HEADER_MAGIC, 8);
    put64(slot + 8, ck->counter);
    put64(slot + 16, ck->txnid);
    put64(slot + 24, ck->seq);
    put64(slot + 32, ck->lsn);
    put64(slot + 40, area);
    put32(slot + 48, ck->page_bytes);
    put32(slot + 52, ck->clean ? 1 : 0);
    memcpy(slot + 56, ck->meta, WAL_META_BYTES);
    put32(slot + WAL_HEADER_CRC_AT, wal_crc32c(0, slot, WAL_HEADER_CRC_AT));
}

/* 0 when the slot holds a valid checkpoint (decoded into *ck, its area into *area), else -1. */
static int header_decode(const uint8_t slot[WAL_SLOT_BYTES], wal_checkpoint *ck, uint64_t *area)
{
    if (memcmp(slot, WAL_HEADER_MAGIC, 8) != 0 ||
        get32(slot + WAL_HEADER_CRC_AT) != wal_crc32c(0, slot, WAL_HEADER_CRC_AT))
        return -1;
    uint32_t clean = get32(slot + 52);
    if (clean > 1)
        return -1;
    ck->counter = get64(slot + 8);
    ck->txnid = get64(slot + 16);
    ck->seq = get64(slot + 24);
    ck->lsn = get64(slot + 32);
    *area = get64(slot + 40);
    ck->page_bytes = get32(slot + 48);
    ck->clean = clean == 1;
    memcpy(ck->meta, slot + 56, WAL_META_BYTES);
    return 0;
}

/* ---- opening ---- */

static int refuse(char *why, size_t why_size, const char *path, const char *what, int err)
{
    if (why_size > 0) {
        if (err != 0)
            snprintf(why, why_size, "write-ahead file %s: %s: %s", path, what, strerror(err));
        else
            snprintf(why, why_size, "write-ahead file %s: %s", path, what);
    }
    return BUDGET_EUNAVAILABLE;
}

/* Reads both slots; the valid one with the higher counter wins. -1 when neither is valid. */
static int read_newest(wal *w, wal_checkpoint *ck, uint64_t *area)
{
    uint8_t slot[WAL_SLOT_BYTES];
    wal_checkpoint c;
    uint64_t a;
    int best = -1;
    for (int i = 0; i < 2; i++) {
        if (fileio_pread_all(w->fd, slot, sizeof slot, (uint64_t)i * WAL_SLOT_BYTES) != 0)
            continue;
        if (header_decode(slot, &c, &a) != 0)
            continue;
        if (best < 0 || c.counter > ck->counter) {
            *ck = c;
            *area = a;
            best = i;
        }
    }
    if (best < 0)
        return -1;
    w->counter = ck->counter;
    w->slot_next = (uint64_t)(1 - best);
    return 0;
}

int wal_open(wal **out, const char *dir, uint64_t area_bytes, bool read_only, bool *found,
             wal_checkpoint *ck, char *why, size_t why_size)
{
    char path[PATH_MAX];
    *out = NULL;
    *found = false;
    if (snprintf(path, sizeof path, "%s/%s", dir, WAL_FILE) >= (int)sizeof path)
        return refuse(why, why_size, dir, "the path is too long", 0);
    area_bytes = round8(area_bytes);
    if (area_bytes < WAL_AREA_BYTES_MIN)
        area_bytes = WAL_AREA_BYTES_MIN;

    wal *w = calloc(1, sizeof *w);
    if (w == NULL)
        return refuse(why, why_size, path, "cannot allocate", ENOMEM);
    w->read_only = read_only;
    w->fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOFOLLOW);
    if (w->fd < 0 && errno == ENOENT) {
        if (read_only) {
            free(w);
            return 0; /* no file: nothing to bring in */
        }
        w->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
        if (w->fd < 0) {
            int err = errno;
            free(w);
            return refuse(why, why_size, path, "cannot create it", err);
        }
        /* Blocks reserved now, so that no append waits on the file system for space. */
        int err = posix_fallocate(w->fd, 0, (off_t)(WAL_AREA_START + area_bytes));
        if (err == 0)
            err = fsync(w->fd) == 0 ? 0 : errno;
        if (err == 0)
            err = fileio_sync_dir(dir);
        if (err != 0) {
            close(w->fd);
            unlink(path);
            free(w);
            return refuse(why, why_size, path, "cannot reserve its space", err);
        }
        w->area = area_bytes;
        w->slot_next = 0;
        *out = w;
        return 0;
    }
    if (w->fd < 0) {
        int err = errno;
        free(w);
        return refuse(why, why_size, path, "cannot open it", err);
    }

    struct stat st;
    uint64_t area = 0;
    if (fstat(w->fd, &st) != 0 || !S_ISREG(st.st_mode) || read_newest(w, ck, &area) != 0 ||
        area < WAL_AREA_BYTES_MIN || area % 8 != 0 ||
        (uint64_t)st.st_size < WAL_AREA_START + area) {
        close(w->fd);
        free(w);
        return refuse(why, why_size, path,
                      "holds no valid checkpoint (damaged, or not budgetd's); it was left as "
                      "it is",
                      0);
    }
    w->area = area;
    *found = true;
    *out = w;
    return 0;
}

void wal_close(wal *w)
{
    if (w == NULL)
        return;
    close(w->fd);
    free(w->buf);
    free(w);
}

uint64_t wal_area_bytes(const wal *w)
{
    return w->area;
}

/* ---- records ---- */

size_t wal_record_bytes(const wal_item *items, size_t n)
{
    size_t bytes = WAL_RECORD_HEADER_BYTES;
    for (size_t i = 0; i < n; i++)
        bytes += WAL_ITEM_HEADER_BYTES + items[i].id_len + items[i].size;
    return round8(bytes);
}

/* Where `lsn` lies in the area, and the lsn a record of `bytes` really goes to from there. */
static uint64_t place(const wal *w, uint64_t lsn, size_t bytes)
{
    uint64_t at = lsn % w->area;
    return at + bytes > w->area ? lsn + (w->area - at) : lsn;
}

int wal_append(wal *w, const wal_item *items, size_t n, uint64_t *lsn, uint64_t *next,
               bool *written)
{
    *written = false;
    size_t bytes = wal_record_bytes(items, n);
    if (bytes > w->area || bytes > UINT32_MAX || n > WAL_RECORD_ITEMS_MAX)
        return EFBIG;
    if (bytes > w->buf_cap) {
        size_t cap = w->buf_cap ? w->buf_cap : 64 * 1024;
        while (cap < bytes)
            cap *= 2;
        uint8_t *buf = realloc(w->buf, cap);
        if (buf == NULL)
            return ENOMEM;
        w->buf = buf;
        w->buf_cap = cap;
    }
    uint64_t at_lsn = place(w, *lsn, bytes);
    uint8_t *p = w->buf;
    memset(p, 0, WAL_RECORD_HEADER_BYTES);
    put32(p, WAL_RECORD_MAGIC);
    put32(p + 4, (uint32_t)bytes);
    put64(p + 8, at_lsn);
    put64(p + 16, n > 0 ? items[0].seq : 0);
    put32(p + 24, (uint32_t)n);
    size_t off = WAL_RECORD_HEADER_BYTES;
    for (size_t i = 0; i < n; i++) {
        put32(p + off, (uint32_t)items[i].size);
        p[off + 4] = (uint8_t)items[i].id_len;
        p[off + 5] = (uint8_t)(items[i].id_len >> 8);
        p[off + 6] = p[off + 7] = 0;
        off += WAL_ITEM_HEADER_BYTES;
        memcpy(p + off, items[i].id, items[i].id_len);
        off += items[i].id_len;
        memcpy(p + off, items[i].bytes, items[i].size);
        off += items[i].size;
    }
    memset(p + off, 0, bytes - off);
    put32(p + 28, wal_crc32c(0, p, bytes));

    int err = fileio_pwrite_all(w->fd, p, bytes, WAL_AREA_START + at_lsn % w->area);
    if (err != 0)
        return err;
    *written = true;
    *lsn = at_lsn;
    *next = at_lsn + bytes;
    return 0;
}

int wal_sync(wal *w)
{
    return sync_fd(w->fd);
}

int wal_retract(wal *w, uint64_t lsn)
{
    uint8_t zero[4] = {0};
    int err = fileio_pwrite_all(w->fd, zero, sizeof zero, WAL_AREA_START + lsn % w->area);
    return err != 0 ? err : sync_fd(w->fd);
}

int wal_checkpoint_write(wal *w, wal_checkpoint *ck)
{
    uint8_t slot[WAL_SLOT_BYTES];
    ck->counter = w->counter + 1;
    header_encode(slot, ck, w->area);
    int err = fileio_pwrite_all(w->fd, slot, sizeof slot, w->slot_next * WAL_SLOT_BYTES);
    if (err == 0)
        err = sync_fd(w->fd);
    if (err != 0)
        return err;
    w->counter = ck->counter;
    w->slot_next = 1 - w->slot_next;
    return 0;
}

int wal_resize(wal *w, uint64_t area_bytes, wal_checkpoint *ck)
{
    area_bytes = round8(area_bytes);
    if (area_bytes < WAL_AREA_BYTES_MIN)
        area_bytes = WAL_AREA_BYTES_MIN;
    uint64_t old = w->area;
    if (area_bytes == old)
        return 0;
    /* The file is never shorter than the valid checkpoint with the larger counter says: it
     * grows before the new size is written, and shrinks after. */
    int err = 0;
    if (area_bytes > old) {
        err = posix_fallocate(w->fd, 0, (off_t)(WAL_AREA_START + area_bytes));
        if (err == 0)
            err = sync_fd(w->fd);
        if (err != 0)
            return err;
    }
    w->area = area_bytes;
    ck->lsn = 0;
    err = wal_checkpoint_write(w, ck);
    if (err != 0) {
        w->area = old;
        return err;
    }
    if (area_bytes < old) {
        err = ftruncate(w->fd, (off_t)(WAL_AREA_START + area_bytes)) == 0 ? 0 : errno;
        if (err == 0)
            err = sync_fd(w->fd);
    }
    return err;
}

/* ---- recovery ---- */

/*
 * Reads the record that should start at `lsn` with first seq `seq` into *buf: 0 with its size,
 * or -1 when what is there is not that record (never written, torn, of an earlier lap).
 */
static int read_record(wal *w, uint64_t lsn, uint64_t seq, uint8_t **buf, size_t *cap, size_t *size)
{
    uint64_t at = lsn % w->area;
    uint8_t head[WAL_RECORD_HEADER_BYTES];
    if (at + WAL_RECORD_HEADER_BYTES > w->area ||
        fileio_pread_all(w->fd, head, sizeof head, WAL_AREA_START + at) != 0)
        return -1;
    uint32_t bytes = get32(head + 4);
    if (get32(head) != WAL_RECORD_MAGIC || get64(head + 8) != lsn || get64(head + 16) != seq ||
        bytes < WAL_RECORD_HEADER_BYTES || bytes % 8 != 0 || at + bytes > w->area)
        return -1;
    if (bytes > *cap) {
        uint8_t *grown = realloc(*buf, bytes);
        if (grown == NULL)
            return -1;
        *buf = grown;
        *cap = bytes;
    }
    if (fileio_pread_all(w->fd, *buf, bytes, WAL_AREA_START + at) != 0)
        return -1;
    uint32_t crc = get32(*buf + 28);
    put32(*buf + 28, 0);
    if (wal_crc32c(0, *buf, bytes) != crc)
        return -1;
    *size = bytes;
    return 0;
}

/* Splits a checked record into items (pointing into it). -1 when its insides do not hold. */
static int parse_record(const uint8_t *rec, size_t size, wal_item **items, size_t *items_cap,
                        size_t *n_out)
{
    uint64_t first = get64(rec + 16);
    uint32_t n = get32(rec + 24);
    if (n == 0 || n > WAL_RECORD_ITEMS_MAX || n > (size - WAL_RECORD_HEADER_BYTES) / 8)
        return -1;
    if (n > *items_cap) {
        wal_item *grown = realloc(*items, n * sizeof **items);
        if (grown == NULL)
            return -1;
        *items = grown;
        *items_cap = n;
    }
    size_t off = WAL_RECORD_HEADER_BYTES;
    for (uint32_t i = 0; i < n; i++) {
        if (size - off < WAL_ITEM_HEADER_BYTES)
            return -1;
        uint32_t bytes = get32(rec + off);
        uint32_t id_len = (uint32_t)rec[off + 4] | (uint32_t)rec[off + 5] << 8;
        off += WAL_ITEM_HEADER_BYTES;
        if (id_len == 0 || id_len > BUDGET_ID_BYTES_MAX || bytes < BUDGET_HASH_BYTES ||
            size - off < (size_t)id_len + bytes)
            return -1;
        (*items)[i] = (wal_item){.seq = first + i,
                                 .id = (const char *)rec + off,
                                 .id_len = id_len,
                                 .bytes = rec + off + id_len,
                                 .size = bytes};
        off += (size_t)id_len + bytes;
    }
    if (round8(off) != size)
        return -1;
    *n_out = n;
    return 0;
}

int wal_replay(wal *w, const wal_checkpoint *ck, wal_record_fn fn, void *ctx, uint64_t *end,
               uint64_t *head)
{
    uint8_t *buf = NULL;
    size_t cap = 0, size = 0, items_cap = 0, n = 0;
    wal_item *items = NULL;
    uint64_t lsn = ck->lsn, seq = ck->seq;
    int rc = 0;
    for (;;) {
        uint64_t at = lsn;
        if (read_record(w, at, seq + 1, &buf, &cap, &size) != 0) {
            /* The next record may have gone to the next lap, if this one's end was near. */
            if (at % w->area == 0)
                break;
            at = lsn + (w->area - lsn % w->area);
            if (read_record(w, at, seq + 1, &buf, &cap, &size) != 0)
                break;
        }
        if (parse_record(buf, size, &items, &items_cap, &n) != 0)
            break;
        rc = fn(ctx, items, n);
        if (rc != 0)
            break;
        seq += n;
        lsn = at + size;
    }
    free(buf);
    free(items);
    *end = lsn;
    *head = seq;
    return rc;
}
