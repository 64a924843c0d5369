/*
 * The write-ahead file (DATA/wal): each batch the store appends is written here and synced
 * once before LMDB takes it without a sync of its own; LMDB is synced in the background, and
 * a checkpoint records the last LMDB transaction known to be on disk. store.c drives it; this
 * module only knows the file. docs/performance.md ("One sync per commit") has the design.
 *
 * Layout: two header slots (WAL_SLOT_BYTES each, written in turn, each with a checksum and a
 * counter, so that a torn header write leaves the other one in charge), then a circular area
 * of records. A record's place is its lsn, a byte count that only grows: the record lies at
 * WAL_AREA_START + lsn % area. A record never wraps: when it does not fit before the area's
 * end, the lsn moves to the next lap. Each record carries its lsn, its first seq and a CRC-32C
 * of all its bytes, so a stale record of an earlier lap, a torn one or one never written is
 * never taken for the next.
 *
 * One thread writes records (the store's writer); checkpoints are written by one other thread
 * (the store's syncer). Neither call is reentrant for the same role.
 */
#ifndef BUDGET_WAL_H
#define BUDGET_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WAL_FILE "wal"
#define WAL_SLOT_BYTES 4096u
#define WAL_AREA_START (2u * WAL_SLOT_BYTES)
/* The bytes of an LMDB meta page a checkpoint keeps: its page header and MDB_meta, with room. */
#define WAL_META_BYTES 512u
/* Each record's fixed part, and each item's. */
#define WAL_RECORD_HEADER_BYTES 32u
#define WAL_ITEM_HEADER_BYTES 8u

typedef struct wal wal;

/* One event of a record: its seq, its bytes, and the id it creates. The store's wal_item. */
typedef struct {
    uint64_t seq;
    const uint8_t *bytes;
    size_t size;
    const char *id;
    size_t id_len;
} wal_item;

/* The last LMDB transaction known to be on disk, and where the records after it start. */
typedef struct {
    uint64_t counter; /* which header slot write this is; the higher valid one wins */
    uint64_t txnid;   /* the LMDB transaction */
    uint64_t seq;     /* the log's head as of that transaction */
    uint64_t lsn;     /* the first record after it */
    uint32_t page_bytes;
    bool clean; /* written at a clean close: LMDB is synced up to the last record */
    uint8_t meta[WAL_META_BYTES]; /* the transaction's meta page, as it was on disk */
} wal_checkpoint;

/*
 * Opens DIR/wal, creating it (`area_bytes` of records, preallocated) when missing. *found
 * tells whether it existed; when it did, *ck is its newest valid checkpoint and its area size
 * is the file's. A file that exists but holds no valid checkpoint is refused (BUDGET_EUNAVAILABLE
 * with `why`), never overwritten. A created file is synced with its folder before this
 * returns, but holds no checkpoint until wal_checkpoint_write.
 */
int wal_open(wal **out, const char *dir, uint64_t area_bytes, bool read_only, bool *found,
             wal_checkpoint *ck, char *why, size_t why_size);
void wal_close(wal *w);
uint64_t wal_area_bytes(const wal *w);
/* The bytes a record of these items takes, rounded as written. */
size_t wal_record_bytes(const wal_item *items, size_t n);

/*
 * Writes one record of `n` items at `*lsn` (moved to the next lap when it does not fit before
 * the area's end: *lsn is then where it went) and returns the lsn after it in *next. The
 * caller has checked that the space is free. `sync` says whether to sync the file after.
 * Returns 0 or an errno; *written tells whether the write itself completed (a failed sync
 * follows a completed write).
 */
int wal_append(wal *w, const wal_item *items, size_t n, uint64_t *lsn, uint64_t *next,
               bool *written);
/* Syncs the records written so far: 0 or an errno. */
int wal_sync(wal *w);
/* Spoils the record at `lsn` (its magic) and syncs, so that recovery never takes it: for a
 * batch written here that LMDB then refused. 0 or an errno. */
int wal_retract(wal *w, uint64_t lsn);

/* Writes `ck` (counter set here) into the slot after the last one written, and syncs. */
int wal_checkpoint_write(wal *w, wal_checkpoint *ck);

/*
 * Gives the file `area_bytes` of records (at least the smallest size), when it holds another
 * size: only when `ck`, the checkpoint just written, has every record behind it. `ck` is
 * written again with the new size and lsn 0. 0 or an errno.
 */
int wal_resize(wal *w, uint64_t area_bytes, wal_checkpoint *ck);

/*
 * Reads the records from `ck->lsn` on, expecting seqs from ck->seq + 1 without a gap, and
 * calls `fn` with each whole record's items (valid during the call) until a record is missing,
 * torn or not the next. Returns 0 with *end the lsn after the last record taken and *head the
 * last seq taken, or what `fn` returned when nonzero.
 */
typedef int (*wal_record_fn)(void *ctx, const wal_item *items, size_t n);
int wal_replay(wal *w, const wal_checkpoint *ck, wal_record_fn fn, void *ctx, uint64_t *end,
               uint64_t *head);

/* CRC-32C (Castagnoli) of `size` bytes, continuing from `crc` (0 to start). */
uint32_t wal_crc32c(uint32_t crc, const void *bytes, size_t size);

#endif
